"""ELECTRA against masked-LM pretraining at equal compute, judged by fine-tuning on the ``stdlib_areas`` demo.

Both pretrain the same bidirectional encoder (--layers x --width, block --block, batch 16, the default
run's SentencePiece tokenizer) on the built-in corpus, through the command line (``hookformer train``):

* ``electra``: the ``electra`` objective (generator a quarter as wide as the encoder), --steps steps;
* ``mlm``: the ``mlm`` objective, as many steps as cost the same training FLOPs: --steps x (FLOPs of an ELECTRA
  step / FLOPs of an MLM step), both counted by ``torch.utils.flop_counter.FlopCounterMode`` over one training step
  (forward and backward) of the built parts on a batch of the same shape, so the load on the machine plays no part.

Each pretrained encoder is then fine-tuned with the ``stdlib_areas`` recipe (``hookformer finetune RUN
stdlib_areas``, --finetune-steps steps, docstrings cut to --finetune-length tokens) and the table prints its
validation accuracy (final and best) and loss, the majority-class baseline, and each pretraining's first and last
training loss (ELECTRA's generator and discriminator losses at its last evaluation too). The two arms run side by
side (one process each, so a burst of load on a shared machine hits both); wall seconds are printed for information
only.

    python benchmarks/electra_vs_mlm.py                      # the defaults below
    python benchmarks/electra_vs_mlm.py --steps 600 --finetune-steps 300
    python benchmarks/electra_vs_mlm.py --quick              # smoke test: a few steps; the numbers mean nothing
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from hookformer.core.cli import main
from hookformer.core.config import resolve_part
from hookformer.core.loop import accumulate_gradients
from hookformer.core.parts import BuildContext, Shapes
from hookformer.registry.catalog import Catalog

BATCH, VOCAB = 16, 2048
MAX_SEQ_LEN = 128  # stdlib_areas fine-tunes on docstrings of up to 128 tokens


def pretraining(objective: dict, steps: int, layers: int, width: int, block: int) -> dict:
    return {
        "data": {"name": "builtin", "block_size": block},
        # Every architecture option named: step_flops builds the model from this section alone, without the default
        # recipe the runs are layered over (BERT's architecture, as in the measured figures).
        "model": {"name": "transformer", "causal": False, "n_layer": layers, "n_head": max(1, width // 64),
                  "d_model": width, "dropout": 0.0, "max_seq_len": MAX_SEQ_LEN, "positions": "learned",
                  "norm": "layernorm", "mlp": "gelu", "qk_norm": False, "bias": True},
        "objective": objective,
        "optimizer": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 0.01},
        "scheduler": {"name": "linear", "warmup_steps": max(1, steps // 10)},
        "metrics": ["loss", "accuracy"], "hooks": [],
        "train": {"max_steps": steps, "batch_size": BATCH, "eval_every": steps, "eval_batches": 8,
                  "checkpoint_every": steps, "sample_tokens": 0, "progress": False, "seed": 1337},
    }


def step_flops(raw: dict) -> float:
    """FLOPs of one training step (forward and backward) of the model and objective of ``raw`` on a random batch."""
    catalog = Catalog.load()
    tokenizer = resolve_part("tokenizer", "tokenizer", {"name": "byte"}, catalog).build(BuildContext(run_dir=Path(".")))
    block = raw["data"]["block_size"]
    ctx = BuildContext(run_dir=Path("."), tokenizer=tokenizer, shapes=Shapes(VOCAB, MAX_SEQ_LEN), catalog=catalog)
    attention = resolve_part("attention", "attention", {"name": "sdpa"}, catalog).build(ctx)
    ctx = BuildContext(**{**ctx.__dict__, "attention": attention})
    model = resolve_part("model", "model", raw["model"], catalog).build(ctx)
    ctx = BuildContext(**{**ctx.__dict__, "model": model})
    objective = ctx.build("objective", raw["objective"], "objective")
    ids = torch.randint(0, 256, (BATCH, block), generator=torch.Generator().manual_seed(0))
    model.train()
    with FlopCounterMode(display=False) as counter:
        accumulate_gradients(model, objective, [{"input_ids": ids}])
    return float(counter.get_total_flops())


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(args: list[str]) -> float:
    began = time.perf_counter()
    code = main([str(arg) for arg in args])
    if code:
        raise SystemExit(f"hookformer {' '.join(map(str, args))} exited with {code}")
    return time.perf_counter() - began


def run(name: str, raw: dict, root: Path, finetune_steps: int, finetune_length: int) -> dict:
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw))
    pretrained, finetuned = root / name, root / f"{name}-areas"
    pretrain_s = train(["train", config, "--run-dir", pretrained])
    finetune_s = train(["finetune", pretrained, "stdlib_areas", "--run-dir", finetuned,
                        "--set", f"train.max_steps={finetune_steps}", "--set", "train.progress=false",
                        "--set", f"train.checkpoint_every={finetune_steps}", "--set", "hooks=[]",
                        "--set", f"data.max_length={finetune_length}"])
    losses = [r["loss"] for r in records(pretrained) if "loss" in r]
    last_eval = [r for r in records(pretrained) if "val_loss" in r][-1]
    evals = [r for r in records(finetuned) if "val_accuracy" in r]
    baseline = next(r for r in records(finetuned) if "majority_val_accuracy" in r)
    return {"name": name, "steps": raw["train"]["max_steps"], "first_loss": losses[0], "last_loss": losses[-1],
            "pretrain_eval": last_eval, "val_accuracy": evals[-1]["val_accuracy"],
            "best_val_accuracy": max(r["val_accuracy"] for r in evals), "val_loss": evals[-1]["val_loss"],
            "majority": baseline["majority_val_accuracy"], "pretrain_s": pretrain_s, "finetune_s": finetune_s}


def main_(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="ELECTRA pretraining steps")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--finetune-length", type=int, default=128, help="stdlib_areas data.max_length")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--block", type=int, default=128, help="pretraining block size (the model is built for "
                        f"{MAX_SEQ_LEN} tokens either way)")
    parser.add_argument("--root", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 pretraining and 4 fine-tuning steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.finetune_steps = 4, 4
    electra = {"name": "electra", "generator_d_model": max(1, args.width // 4)}
    mlm = {"name": "mlm"}
    flops = {name: step_flops(pretraining(objective, 1, args.layers, args.width, args.block))
             for name, objective in (("electra", electra), ("mlm", mlm))}
    ratio = flops["electra"] / flops["mlm"]
    mlm_steps = max(1, round(args.steps * ratio))
    print(f"training FLOPs per step: electra {flops['electra'] / 1e9:.2f} G, mlm {flops['mlm'] / 1e9:.2f} G "
          f"(ratio {ratio:.3f}): mlm trains {mlm_steps} steps for electra's {args.steps}", flush=True)
    root = args.root or Path(tempfile.mkdtemp(prefix="electra_vs_mlm-"))
    root.mkdir(parents=True, exist_ok=True)
    plan = (("electra", electra, args.steps), ("mlm", mlm, mlm_steps))
    arms = [(name, pretraining(objective, steps, args.layers, args.width, args.block), root, args.finetune_steps,
             args.finetune_length) for name, objective, steps in plan]
    with ProcessPoolExecutor(len(arms), mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(run, *zip(*arms)))
    print(f"\nencoder {args.layers} x {args.width}, block {args.block}, batch {BATCH}; stdlib_areas fine-tuning "
          f"{args.finetune_steps} steps of {args.finetune_length} tokens; majority-class accuracy "
          f"{rows[0]['majority']:.3f}; runs in {root}")
    print("| pretraining | steps | train loss first -> last | areas val accuracy (final / best) | areas val loss "
          "| wall s (pretrain + finetune) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['steps']} | {row['first_loss']:.3f} -> {row['last_loss']:.3f} | "
              f"{row['val_accuracy']:.3f} / {row['best_val_accuracy']:.3f} | {row['val_loss']:.3f} | "
              f"{row['pretrain_s']:.0f} + {row['finetune_s']:.0f} |")
    electra_eval = rows[0]["pretrain_eval"]
    generator, discriminator, detection = (electra_eval.get(key, float("nan")) for key in (
        "val_loss_generator", "val_loss_discriminator", "val_accuracy"))
    print(f"\nelectra at its last evaluation: val_loss_generator {generator:.3f}, val_loss_discriminator "
          f"{discriminator:.3f}, val_accuracy (replaced-token detection) {detection:.3f}")
    difference = rows[0]["val_accuracy"] - rows[1]["val_accuracy"]
    print(f"electra - mlm, final areas val accuracy: {difference:+.3f}")


if __name__ == "__main__":
    main_()
