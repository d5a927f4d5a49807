"""Training tokens/s of one process vs torchrun with N processes (DDP and FSDP2) on config B, through the real
``hookformer train`` (data sliced per rank, gradient all-reduce, logging on rank 0).

Config B: 6 layers, 6 heads, width 384, block 256, batch 8; byte tokenizer on the Python docs (``pydoc_data``), no
dropout, no evaluation or sampling. "same global batch" keeps 8 sequences per step over all ranks (strong scaling);
"batch 8 per rank" gives each rank 8 (weak scaling). A figure is the median ``tokens_per_s`` of the logged windows
after the first (warm-up) one; tokens/s counts the tokens of every rank.

    python benchmarks/distributed.py                  # 1 vs 2 processes, 20 steps each
    python benchmarks/distributed.py --nproc 4 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from pydoc_data.topics import topics


def config(root: Path, steps: int) -> Path:
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(topics.values()), encoding="utf-8")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"name": "text", "paths": [str(corpus)], "block_size": 256},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 6, "n_head": 6, "d_model": 384, "dropout": 0.0},
        "callbacks": [],
        "train": {"max_steps": steps, "batch_size": 8, "log_every": 2, "eval_every": 10 ** 6, "eval_batches": 1,
                  "checkpoint_every": 10 ** 6, "sample_tokens": 0, "progress": False, "device": "cpu"},
    }))
    return path


def tokens_per_s(root: Path, name: str, nproc: int, strategy: str, batch: int) -> float:
    run_dir = root / name
    launcher = [sys.executable, "-m", "hookformer"]
    if nproc > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                    "--master_port", str(port), "-m", "hookformer"]
    subprocess.run([*launcher, "train", str(root / "config.yaml"), "--run-dir", str(run_dir),
                    "--set", f"train.batch_size={batch}", "--set", f"train.distributed.strategy={strategy}"],
                   check=True, capture_output=True, env={**os.environ, "HOOKFORMER_CACHE": str(root / "cache")})
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config(root, args.steps)
        n = args.nproc
        runs = [("1 process", 1, "none", 8)]
        for strategy in ("ddp", "fsdp"):
            runs += [(f"{n} x {strategy}, same global batch", n, strategy, 8 // n),
                     (f"{n} x {strategy}, batch 8 per rank", n, strategy, 8)]
        print(f"config B, {args.steps} steps, {os.cpu_count()} CPU cores")
        print(f"{'run':<34} {'global batch':>12} {'tokens/s':>10}")
        for i, (name, nproc, strategy, batch) in enumerate(runs):
            rate = tokens_per_s(root, f"run{i}", nproc, strategy, batch)
            print(f"{name:<34} {batch * nproc:>12} {rate:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
