"""``hookformer import`` of a Hugging Face model: wall time and peak memory, which show that the weights are streamed.

A model is built at random from a transformers config (no download), saved with ``save_pretrained`` as safetensors
(sharded: ``--shard-size``) beside a byte-level BPE tokenizer trained here, then imported by ``hookformer import``
in a fresh subprocess, which first imports a tiny model of the same family (every module loaded) and then measures
the real one: its resident memory before, the kernel's peak of it (VmHWM) and the peak of its anonymous part
(RssAnon, sampled every millisecond: what the process allocated itself, leaving out the pages of the memory-mapped
safetensors files it read, which the page cache gives back under pressure). The import builds the hookformer model
(one copy of the weights) and copies each tensor into it from the memory-mapped files one at a time, so the
anonymous increase stays near one copy of the weights: well below the two copies of a load-everything-then-copy
import. Printed: the model's bytes, each increase and its ratio to them; transformers' own ``from_pretrained`` of the
same directory (``AutoModelForCausalLM``; BERT: ``AutoModel``) is measured the same way beside it.

    python benchmarks/hf_import.py                        # Llama, ~100M parameters, 4 shards
    python benchmarks/hf_import.py --family gpt2 --size small
    python benchmarks/hf_import.py --quick                # smoke test: a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: name -> (Llama sizes, GPT-2 sizes): hidden, layers, heads, kv heads, MLP width, vocabulary, positions.
SIZES = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=176, vocab=1000, positions=128),
    "small": dict(hidden=384, layers=6, heads=6, kv_heads=3, ffn=1024, vocab=8000, positions=256),
    "medium": dict(hidden=768, layers=12, heads=12, kv_heads=4, ffn=2048, vocab=16000, positions=512),  # ~100M
}
TEXT = ("The quick brown fox jumps over the lazy dog. A model reads text, one token at a time.\n"
        "def f(x):\n    return x * 2\n中文的句子也在这里。 Numbers 0123456789 and symbols !?%&.\n")


def random_hf_dir(folder: Path, family: str, size: str, shard_size: str | None = None, seed: int = 0) -> int:
    """Write a random ``family`` ("llama", "gpt2", "bert") model of ``SIZES[size]`` to ``folder`` as transformers
    saves it, with a byte-level BPE tokenizer; returns its parameter count."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    s = SIZES[size]
    torch.manual_seed(seed)
    if family == "llama":
        config = transformers.LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"],
                                          intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
                                          num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                                          max_position_embeddings=s["positions"], bos_token_id=0, eos_token_id=0)
        model = transformers.LlamaForCausalLM(config)
    elif family == "gpt2":
        config = transformers.GPT2Config(vocab_size=s["vocab"], n_embd=s["hidden"], n_layer=s["layers"],
                                         n_head=s["heads"], n_positions=s["positions"], bos_token_id=0,
                                         eos_token_id=0)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.BertConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                         num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"],
                                         max_position_embeddings=s["positions"], pad_token_id=0)
        model = transformers.BertModel(config)
    model.save_pretrained(folder, safe_serialization=True, **({"max_shard_size": shard_size} if shard_size else {}))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if family == "bert" else ["<|endoftext|>"]
    tok.train_from_iterator([TEXT] * 50, trainers.BpeTrainer(vocab_size=min(s["vocab"], 500), special_tokens=special,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(folder / "tokenizer.json"))
    return sum(p.numel() for p in model.parameters())


def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident memory (VmRSS), its peak (VmHWM) or its anonymous part (RssAnon), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakAnonymous:
    """The peak of RssAnon (memory not backed by a file: what the process allocated itself), sampled every
    millisecond by a thread; the kernel keeps a peak (VmHWM) only of the whole RSS, which also counts the pages of
    memory-mapped safetensors files that were read (the page cache, given back under pressure)."""

    def __init__(self):
        import threading

        self.peak, self._done = rss_kib("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, rss_kib("RssAnon"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib("RssAnon"))


def _load(how: str, family: str, hf_dir: Path, run_dir: Path) -> None:
    import transformers

    from hookformer.core.interop import import_hf
    from hookformer.registry.catalog import Catalog

    if how == "hookformer":
        import_hf(hf_dir, run_dir, Catalog.load())
    else:
        auto = transformers.AutoModel if family == "bert" else transformers.AutoModelForCausalLM
        auto.from_pretrained(hf_dir)


def _worker(how: str, family: str, hf_dir: Path, run_dir: Path, warmup_dir: Path) -> None:
    """In a fresh process: load the tiny model of ``warmup_dir`` first (every module imported, caches filled), then
    memory before, load ``hf_dir`` by ``how``, peak memory and seconds after; one JSON line on stdout."""
    _load(how, family, warmup_dir, run_dir.with_name(run_dir.name + "-warmup"))
    before, anonymous = rss_kib(), rss_kib("RssAnon")
    began = time.perf_counter()
    with PeakAnonymous() as peak:
        _load(how, family, hf_dir, run_dir)
    print(json.dumps({"seconds": time.perf_counter() - began, "before_kib": before, "peak_kib": rss_kib("VmHWM"),
                      "anonymous_before_kib": anonymous, "anonymous_peak_kib": peak.peak}))


def measure(how: str, family: str, hf_dir: Path, run_dir: Path, warmup_dir: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", how, family, str(hf_dir), str(run_dir),
                           str(warmup_dir)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise SystemExit(f"{how} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["llama", "gpt2", "bert"], default="llama")
    parser.add_argument("--size", choices=list(SIZES), default="medium")
    parser.add_argument("--shard-size", default="100MB", help="save_pretrained's max_shard_size")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of each, interleaved (median reported)")
    parser.add_argument("--quick", action="store_true", help="smoke test: the tiny size, one round")
    parser.add_argument("--worker", nargs=5, metavar=("HOW", "FAMILY", "HF_DIR", "RUN_DIR", "WARMUP_DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker[0], args.worker[1], *map(Path, args.worker[2:]))
    if args.quick:
        args.size, args.rounds = "tiny", 1
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / f"hf-{args.family}"
        parameters = random_hf_dir(hf_dir, args.family, args.size, args.shard_size)
        random_hf_dir(Path(tmp) / "warmup", args.family, "tiny")
        shards = sorted(p.name for p in hf_dir.glob("*.safetensors"))
        model_bytes = sum(p.stat().st_size for p in hf_dir.glob("*.safetensors"))
        print(f"{args.family} {args.size}: {parameters / 1e6:.1f}M parameters, {model_bytes / 2**20:.0f} MiB of "
              f"fp32 safetensors in {len(shards)} file(s); {os.cpu_count()} CPUs (shared with other processes)")
        results: dict[str, list[dict]] = {}
        for round_ in range(args.rounds):
            for how in ("hookformer", "transformers"):
                run_dir = Path(tmp) / f"run-{round_}"
                results.setdefault(how, []).append(measure(how, args.family, hf_dir, run_dir, Path(tmp) / "warmup"))
                for folder in (run_dir, run_dir.with_name(run_dir.name + "-warmup")):
                    shutil.rmtree(folder, ignore_errors=True)
    titles = {"hookformer": "hookformer import", "transformers": "transformers from_pretrained"}
    print("\n| what | seconds | RSS before MiB | peak RSS increase MiB (/ model bytes) | peak anonymous increase "
          "MiB (/ model bytes) |")
    print("|---|---:|---:|---:|---:|")
    for how, runs in results.items():
        def median(key, runs=runs):
            return statistics.median(r[key] for r in runs)
        total = (median("peak_kib") - median("before_kib")) * 1024
        anonymous = (median("anonymous_peak_kib") - median("anonymous_before_kib")) * 1024
        print(f"| {titles[how]} | {median('seconds'):.2f} | {median('before_kib') / 1024:.0f} | "
              f"{total / 2**20:.0f} ({total / model_bytes:.2f}x) | {anonymous / 2**20:.0f} "
              f"({anonymous / model_bytes:.2f}x) |")

if __name__ == "__main__":
    main()
