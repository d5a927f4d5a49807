"""Peak memory of the data stage as the corpus grows: streaming mode (``data.streaming: true``) against map-style.

Writes a deterministic text corpus in a temporary directory, built from the built-in Python documentation corpus
(every pass over its documents in a new seeded order, each document tagged with the pass number so that no two are
equal), in files of 25 MB: the 100 MB corpus is the first 4 files of the 400 MB one. For each (mode, size), a fresh
Python process builds the ``text`` data source, trains a SentencePiece BPE tokenizer (2048 pieces) on the first 2M
characters of ``texts()``, prepares the splits and draws N training batches of 16 x 128 tokens; it reports its peak
RSS (``resource.getrusage``) and, separately, the peak after the imports, before any data is touched. The streaming
runs also report the size of the data position a checkpoint stores.

Map-style tokenizes and packs the whole corpus before the first batch (and keeps the packed blocks in memory), so it
runs at 100 MB only unless asked (``--map-sizes 100 400``).

    python benchmarks/streaming_memory.py                       # streaming at 100 and 400 MB, map-style at 100 MB
    python benchmarks/streaming_memory.py --batches 500 --map-sizes
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE_BYTES = 25_000_000
BATCH, BLOCK = 16, 128


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_corpus(directory: Path, megabytes: int) -> list[Path]:
    """Files of ~25 MB holding passes over the Python documentation corpus, until ``megabytes`` are written."""
    from hookformer.plugins.data.python_docs import extract

    texts = [record["text"] for record in extract(["topics", "docstrings"])]
    directory.mkdir(parents=True, exist_ok=True)
    files, written, rounds = [], 0, 0
    handle = None
    while written < megabytes * 1_000_000:
        order = list(range(len(texts)))
        random.Random(rounds).shuffle(order)
        for index in order:
            if handle is None or handle.tell() >= FILE_BYTES:
                if handle is not None:
                    handle.close()
                files.append(directory / f"part-{len(files):03d}.txt")
                handle = open(files[-1], "w", encoding="utf-8")
            written += handle.write(f"[pass {rounds}] {texts[index]}\n\n")
        rounds += 1
    handle.close()
    return files


def measure(mode: str, paths: list[str], batches: int, work: Path) -> dict:
    """Runs in the child process: build the source and tokenizer, prepare, draw ``batches`` batches."""
    import torch

    from hookformer.core.parts import BuildContext
    from hookformer.core.sampler import TableStream, as_table
    from hookformer.registry.catalog import Catalog

    baseline = peak_rss_mb()
    catalog = Catalog.load()
    ctx = BuildContext(run_dir=work / "run", seed=0)
    ctx.run_dir.mkdir(parents=True)
    start = time.perf_counter()
    data_entry = catalog.get("data", "text")
    ctx.data = data_entry.build(data_entry.options_model()(
        paths=paths, block_size=BLOCK, streaming=mode == "streaming", cache_dir=str(work / "cache")), ctx)
    tok_entry = catalog.get("tokenizer", "sentencepiece")
    tokenizer = tok_entry.build(tok_entry.options_model()(vocab_size=2048, max_training_chars=2_000_000), ctx)
    built = time.perf_counter()
    splits = ctx.data.prepare(tokenizer)
    train = splits["train"]
    stream = TableStream(as_table(train), 0) if isinstance(train, (dict, torch.Tensor)) else train
    prepared = time.perf_counter()
    for _ in range(batches):
        stream.next_batch(BATCH)
    result = {"mode": mode, "baseline_mb": baseline, "peak_mb": peak_rss_mb(), "build_s": built - start,
              "prepare_s": prepared - built, "seconds": time.perf_counter() - start, "batches": batches}
    if mode == "streaming":
        buffer = io.BytesIO()
        torch.save(stream.state_dict(), buffer)
        result["position_kb"] = len(buffer.getvalue()) / 1024
        result["epoch"] = stream.epoch
    return result


def run_child(mode: str, files: list[Path], batches: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--batches", str(batches), "--work", work,
                               *map(str, files)], capture_output=True, text=True, env={**os.environ})
    if done.returncode:
        raise SystemExit(f"the {mode} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400], help="corpus sizes in MB (streaming)")
    parser.add_argument("--map-sizes", type=int, nargs="*", default=[100], help="sizes to measure map-style at")
    parser.add_argument("--batches", type=int, default=5000, help="training batches of 16 x 128 tokens to draw")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.files, args.batches, Path(args.work))))
        return

    rows = []
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        files = write_corpus(Path(directory), max(args.sizes + args.map_sizes))
        print(f"wrote {sum(f.stat().st_size for f in files) / 1e6:.0f} MB in {len(files)} files "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        for mode, sizes in (("streaming", args.sizes), ("map-style", args.map_sizes)):
            for size in sizes:
                subset = files[: max(1, size * 1_000_000 // FILE_BYTES)]
                result = run_child(mode, subset, args.batches)
                result["corpus_mb"] = sum(f.stat().st_size for f in subset) / 1e6
                rows.append(result)
                print(f"{mode} {result['corpus_mb']:.0f} MB: peak {result['peak_mb']:.0f} MB "
                      f"({result['seconds']:.0f} s)", file=sys.stderr)

    print(f"\n{args.batches} training batches of {BATCH} x {BLOCK} tokens; SentencePiece BPE 2048 trained on the first "
          f"2M characters; RSS in MB\n")
    print("| mode | corpus | RSS after imports | peak RSS | peak - imports | source + tokenizer s | prepare s "
          "| total s | data position in a checkpoint |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        position = f"{r['position_kb']:.0f} KB" if "position_kb" in r else "(sampler position only)"
        print(f"| {r['mode']} | {r['corpus_mb']:.0f} MB | {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | "
              f"{r['peak_mb'] - r['baseline_mb']:.0f} | {r['build_s']:.1f} | {r['prepare_s']:.1f} | "
              f"{r['seconds']:.1f} | {position} |")
    streamed = {round(r["corpus_mb"]): r for r in rows if r["mode"] == "streaming"}
    small, large = min(streamed), max(streamed)
    if small != large:
        ratio = streamed[large]["peak_mb"] / streamed[small]["peak_mb"]
        grown = ((streamed[large]["peak_mb"] - streamed[large]["baseline_mb"])
                 / max(1.0, streamed[small]["peak_mb"] - streamed[small]["baseline_mb"]))
        print(f"\nstreaming, {large} MB / {small} MB: peak RSS x{ratio:.2f}, peak above imports x{grown:.2f} "
              f"(corpus x{large / small:.0f})")
    mapped = {round(r["corpus_mb"]): r for r in rows if r["mode"] == "map-style"}
    for size in sorted(set(mapped) & set(streamed)):
        ratio = mapped[size]["peak_mb"] / streamed[size]["peak_mb"]
        print(f"map-style / streaming at {size} MB: peak RSS x{ratio:.2f}")


if __name__ == "__main__":
    main()
