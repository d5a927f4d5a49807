"""Data stages throughput: reading, cleaning, deduplication, tokenization and packing of a generated corpus, with 1
and 2 processes; and tokenization through the tokenizer plugin and the data pipeline against raw SentencePiece.

The corpus (``--mb`` MB of JSON Lines, deterministic for a ``--seed``) is made from the built-in Python documentation
corpus: documents mixed from random lines of it (60 %), its documents as they are (10 %), copies of earlier documents
with other case and spacing (10 %), near-duplicates with 3 % of the words replaced (10 %), and documents wrapped in
HTML with entities, a script element, control characters and stray whitespace (10 %).

    python benchmarks/data_pipeline.py              # 100 MB, about 8 minutes on 2 cores
    python benchmarks/data_pipeline.py --mb 10      # a quick look

Every stage runs through the code a run uses (``read_jsonl``, ``CleaningChain.apply``, ``PackedSource.prepare``,
the ``sentencepiece`` tokenizer part), each with a fresh cache, so nothing is read from a previous run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm

from hookformer.core.cleaning import CleaningChain
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.common import DataOptions
from hookformer.plugins.data.pipeline import PackedSource
from hookformer.plugins.data.python_docs import corpus_file
from hookformer.plugins.data.tabular import read_jsonl
from hookformer.registry.catalog import Catalog

SHARD_BYTES = 20_000_000
CLEAN = [("nfkc", {}), ("strip_markup", {}), ("strip_control", {}), ("whitespace", {}),
         ("length_filter", {"min_words": 5}), ("repetition_filter", {})]
DEDUP = [("exact_dedup", {}), ("minhash_dedup", {})]


def generate(target_bytes: int, out: Path, seed: int, scratch: Path) -> list[Path]:
    """Write about ``target_bytes`` of JSONL documents into shards under ``out``; returns the shard paths."""
    source, _ = corpus_file(scratch, ["topics", "docstrings"])
    pool = [json.loads(line)["text"] for line in source.read_text(encoding="utf-8").splitlines()]
    lines = [line for doc in pool for line in doc.split("\n") if line.strip()]
    rng = random.Random(seed)
    made: list[str] = []
    shards, handle, written, total = [], None, 0, 0
    while total < target_bytes:
        kind = rng.random()
        if kind < 0.6 or not made:
            doc = "\n".join(rng.sample(lines, rng.randint(5, 40)))
        elif kind < 0.7:
            doc = rng.choice(pool)
        elif kind < 0.8:
            doc = rng.choice(made)
            doc = doc.upper() if rng.random() < 0.5 else doc.replace(" ", "  ").replace("\n", "\n\n")
        elif kind < 0.9:
            words = rng.choice(made).split(" ")
            for i in rng.sample(range(len(words)), max(1, len(words) * 3 // 100)):
                words[i] = rng.choice(lines).split(" ")[0]
            doc = " ".join(words)
        else:
            paragraphs = "\n".join(rng.sample(lines, rng.randint(5, 30))).split("\n")
            body = "".join(f"<p class=\"c{rng.randint(1, 9)}\">{p} &amp; more&nbsp;</p>\n  \t\n" for p in paragraphs)
            doc = (f"<html><head><script>var n = {rng.randint(0, 99)};</script></head><body><div>\x00{body}"
                   f"</div><br/>\x1b[0m   </body></html>")
        made.append(doc)
        if handle is None or written >= SHARD_BYTES:
            if handle is not None:
                handle.close()
            shards.append(out / f"shard-{len(shards):03d}.jsonl")
            handle, written = open(shards[-1], "w", encoding="utf-8"), 0
        line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
        handle.write(line)
        written += len(line.encode())
        total += len(line.encode())
    handle.close()
    return shards


def built(catalog: Catalog, stage: str, name: str, ctx=None, **options):
    entry = catalog.get(stage, name)
    return entry.build(entry.options_model()(**options), ctx)


def text_bytes(dataset) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.binary_length(dataset.data.column("text"))).as_py() or 0) if len(dataset) else 0


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def cpu_timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all its threads) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def pipeline(catalog, shards, work: Path, num_proc: int, tokenizer_options: dict) -> tuple[dict, object, list]:
    """Time each stage with ``num_proc`` processes; returns {stage: (MB in, seconds)}, the tokenizer, the texts."""
    work.mkdir(parents=True)
    rows = {}
    warm_up = work / "warm-up.jsonl"  # the first load pays for imports and builder setup: not a stage's cost
    warm_up.write_text('{"text": "warm up"}\n')
    read_jsonl([warm_up], "text", work / "warm-up")
    docs, seconds = timed(lambda: read_jsonl(shards, "text", work))
    rows["read JSONL"] = (sum(path.stat().st_size for path in shards), seconds)
    clean = CleaningChain([built(catalog, "cleaner", name, **options) for name, options in CLEAN])
    size = text_bytes(docs)
    cleaned, seconds = timed(lambda: clean.apply(docs, source_fingerprint="bench", cache_dir=work / "clean",
                                                 num_proc=num_proc))
    rows["clean (6 steps)"] = (size, seconds)
    dedup = CleaningChain([built(catalog, "cleaner", name, **options) for name, options in DEDUP])
    size = text_bytes(cleaned)
    deduped, seconds = timed(lambda: dedup.apply(cleaned, source_fingerprint="bench", cache_dir=work / "dedup",
                                                 num_proc=num_proc))
    rows["dedup (exact + minhash)"] = (size, seconds)
    options = DataOptions(block_size=128, num_proc=num_proc, cache_dir=str(work / "cache"))
    source = PackedSource(deduped, files=shards, fingerprint="bench", options=options, seed=0, report={})
    ctx = BuildContext(run_dir=work / "run", data=source)
    tokenizer, seconds = timed(lambda: built(catalog, "tokenizer", "sentencepiece", ctx, **tokenizer_options))
    rows["train tokenizer (not in total)"] = (tokenizer_options["max_training_chars"], seconds)
    size = text_bytes(deduped)
    _, seconds = timed(lambda: source.prepare(tokenizer))
    rows["tokenize + pack"] = (size, seconds)
    for stage, report in (("clean", clean), ("dedup", dedup)):
        kept = [(entry["step"], entry["documents"]["removed"]) for entry in report.report()]
        print(f"  [{num_proc} proc] {stage}: removed " + ", ".join(f"{name} {n:,}" for name, n in kept),
              file=sys.stderr)
    texts = list(source.documents("train")) + list(source.documents("validation"))
    return rows, tokenizer, texts


def tokenization(catalog, texts: list[str], work: Path, model_type: str, max_chars: int, rounds: int) -> dict:
    """Best (wall, CPU) seconds over ``rounds`` interleaved rounds to tokenize ``texts``: raw SentencePiece, the
    plugin's encode_batch, and the data pipeline (a fresh cache each round). CPU time counts every thread of this
    process, so it is less disturbed than wall time by other processes on a shared machine."""
    import datasets

    documents = datasets.Dataset.from_dict({"text": texts})

    def source(name: str) -> PackedSource:
        options = DataOptions(block_size=128, val_fraction=0.01, cache_dir=str(work / name))
        return PackedSource(documents, files=[], fingerprint=name, options=options, seed=0, report={})

    options = dict(model_type=model_type, vocab_size=2000, max_training_chars=max_chars, num_threads=2)
    tokenizer = built(catalog, "tokenizer", "sentencepiece", BuildContext(run_dir=work / model_type,
                                                                         data=source("train")), **options)
    raw = spm.SentencePieceProcessor(model_proto=tokenizer.model_proto)
    paths = {
        "raw sp.encode(all texts, num_threads=2)": lambda: raw.encode(texts, num_threads=2),
        "raw sp.encode, batches of 1000": lambda: [raw.encode(texts[i:i + 1000], num_threads=2)
                                                   for i in range(0, len(texts), 1000)],
        "plugin encode_batch(all texts)": lambda: tokenizer.encode_batch(texts),
        "plugin encode_batch, batches of 1000": lambda: [tokenizer.encode_batch(texts[i:i + 1000])
                                                         for i in range(0, len(texts), 1000)],
    }
    pipeline_path = "pipeline prepare (map, eos, Arrow cache, pack)"
    best = {path: (float("inf"), float("inf")) for path in [*paths, pipeline_path]}
    for round_ in range(rounds):
        fresh = source(f"{model_type}-{round_}")
        for path, run in [*paths.items(), (pipeline_path, lambda fresh=fresh: fresh.prepare(tokenizer))]:
            wall, cpu = cpu_timed(run)
            best[path] = (min(best[path][0], wall), min(best[path][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--tokenizer-chars", type=int, default=5_000_000,
                        help="characters the tokenizers are trained on (default 5M)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the tokenization comparison "
                        "(the best of each path is shown)")
    parser.add_argument("--tokenize-mb", type=float, default=10.0,
                        help="MB of cleaned text for the tokenization comparison (default 10)")
    args = parser.parse_args()
    catalog = Catalog.load()
    with tempfile.TemporaryDirectory(prefix="hookformer-bench-data-") as tmp:
        tmp = Path(tmp)
        (tmp / "corpus").mkdir()
        shards, seconds = timed(lambda: generate(int(args.mb * 1e6), tmp / "corpus", args.seed, tmp / "docs"))
        corpus_mb = sum(path.stat().st_size for path in shards) / 1e6
        print(f"corpus: {corpus_mb:.1f} MB of JSONL in {len(shards)} shards, generated in {seconds:.1f} s",
              file=sys.stderr)
        tokenizer_options = dict(model_type="bpe", vocab_size=2000, max_training_chars=args.tokenizer_chars)
        results, texts = {}, []
        for num_proc in args.procs:
            results[num_proc], _, texts = pipeline(catalog, shards, tmp / f"p{num_proc}", num_proc, tokenizer_options)
        print(f"\n## Stages ({corpus_mb:.0f} MB corpus; MB/s of the text entering each stage; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)\n")
        header = "| stage | " + " | ".join(f"{p} proc: MB in, s, MB/s" for p in args.procs)
        ratio = len(args.procs) > 1
        print(header + (f" | {args.procs[-1]} vs {args.procs[0]} |" if ratio else " |"))
        print("|---" * (len(args.procs) + 1 + ratio) + "|")
        totals = {p: 0.0 for p in args.procs}
        for stage in results[args.procs[0]]:
            cells = []
            for p in args.procs:
                size, seconds = results[p][stage]
                if not stage.endswith("(not in total)"):
                    totals[p] += seconds
                unit = f"{size / 1e6:.1f} M chars" if stage.startswith("train") else f"{size / 1e6:.1f}"
                cells.append(f"{unit}, {seconds:.1f} s, {size / 1e6 / seconds:.1f}")
            speedup = results[args.procs[0]][stage][1] / results[args.procs[-1]][stage][1]
            print(f"| {stage} | " + " | ".join(cells) + (f" | {speedup:.2f}x |" if ratio else " |"))
        cells = [f"{corpus_mb:.1f}, {totals[p]:.1f} s, {corpus_mb / totals[p]:.1f}" for p in args.procs]
        speedup = totals[args.procs[0]] / totals[args.procs[-1]]
        print("| **total** (corpus MB / time) | " + " | ".join(cells) + (f" | {speedup:.2f}x |" if ratio else " |"))

        sample, mb = [], 0.0
        for text in texts:
            if mb >= args.tokenize_mb:
                break
            sample.append(text)
            mb += len(text.encode()) / 1e6
        print(f"\n## Tokenization of the cleaned corpus ({mb:.1f} MB, {len(sample):,} documents; 1 process, 2 "
              f"encoding threads; best of {args.rounds} interleaved rounds)\n")
        print("| tokenizer | path | wall s | MB/s | vs raw | CPU s | vs raw (CPU) |")
        print("|---|---|---|---|---|---|---|")
        for model_type in ("bpe", "unigram"):
            times = tokenization(catalog, sample, tmp / "tok", model_type, args.tokenizer_chars, args.rounds)
            raw_wall, raw_cpu = times["raw sp.encode(all texts, num_threads=2)"]
            for path, (wall, cpu) in times.items():
                print(f"| {model_type} 2k | {path} | {wall:.2f} | {mb / wall:.1f} | {raw_wall / wall:.2f}x | "
                      f"{cpu:.2f} | {raw_cpu / cpu:.2f}x |")


if __name__ == "__main__":
    main()
