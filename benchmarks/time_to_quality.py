"""Time to quality: wall seconds to validation loss 1.88 on tinyshakespeare, characters, nanoGPT's CPU quick-start
shape (4 layers x 4 heads x 128, block 64, batch 12).

Contenders, interleaved in one run:

* reference: benchmarks/reference_gpt.py with nanoGPT's recipe (AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1
  on linear weights, cosine with 100 warmup steps to 1e-4 at step 2000, clip 1.0), plain PyTorch;
* hookformer nanogpt: the named recipe ``nanogpt`` (the same recipe), built through Assembly;
* hookformer speedrun: the ``nanogpt`` recipe with the named recipe ``speedrun`` on top (its ideas), its own step
  budget (--speedrun-steps: the schedule's length and its step cap);
* ablations (unless --no-ablation): speedrun with one idea turned back to nanogpt's choice.

Characters: the file is ASCII, so a character is a byte; the vocabulary is the 65 characters that occur (nanoGPT's),
and the hookformer models are built for it by Assembly with given shapes (``Shapes(65, 64)``, as
benchmarks/throughput.py does), so their embeddings match the reference's. The first 90% of the text trains, the
last 10% validates. Training draws random 64-character windows (one seeded generator per contender, the same draws);
a window predicts its last 63 characters. The validation loss is the mean over the whole validation text: windows
with a stride of 63 score every character after the first exactly once.

The contenders take turns in slices of --eval-every steps, each slice followed by its validation, so a burst of load
on the (shared) machine hits all of them alike; a contender stops at the first validation <= --target or at its step
cap. Seconds are training seconds (validation excluded); seconds to the target are counted at the validation that
first reaches it, so they resolve to --eval-every steps.

    python benchmarks/time_to_quality.py                         # the three contenders and the ablations
    python benchmarks/time_to_quality.py --no-ablation
    python benchmarks/time_to_quality.py --quick                 # smoke test: 20 steps each; the numbers mean nothing
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_gpt import GPT, GPTConfig, configure_adamw  # noqa: E402
from throughput import CLIP, autocast_factory, count, engine_step  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
REFERENCE, NANOGPT, SPEEDRUN = "reference (nanoGPT recipe)", "hookformer nanogpt", "hookformer speedrun"
TARGET, BLOCK, BATCH, NANOGPT_STEPS = 1.88, 64, 12, 2000
SPEEDRUN_STEPS = 1000

#: Speedrun with one idea turned back to nanogpt's choice: (row label, config update).
ABLATIONS: list[tuple[str, dict]] = [
    ("muon -> adamw", {"optimizer": {"name": "adamw", "lr": 1.0e-3, "betas": [0.9, 0.99], "weight_decay": 0.1}}),
    ("wsd -> cosine", {"scheduler": {"name": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.1}}),
    ("rope -> learned positions", {"model": {"positions": "learned"}}),
    ("rmsnorm -> layernorm", {"model": {"norm": "layernorm"}}),
    ("relu2 -> gelu", {"model": {"mlp": "gelu"}}),
    ("qk_norm off", {"model": {"qk_norm": False}}),
    ("untied -> tied head", {"model": {"tie_embeddings": True}}),
    ("softcap off", {"model": {"logit_softcap": None}}),
]


@dataclass
class Contender:
    name: str
    params: int
    step: Callable[[dict], float]  # one optimizer step on a batch
    warm_up: Callable[[dict], None]  # a forward and backward, gradients dropped: first-call costs, before timing
    val_sum: Callable[[torch.Tensor], tuple[float, int]]  # (summed loss, scored characters) of windows, no grad
    max_steps: int
    steps: int = 0
    seconds: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    reached: tuple[int, float] | None = None  # (step, seconds) of the first validation <= target
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(1337))

    @property
    def done(self) -> bool:
        return self.reached is not None or self.steps >= self.max_steps


# -- data ---------------------------------------------------------------------------------------------------------------
def load_characters(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train ids, validation ids, vocabulary size): the first 90% and the last 10% of the text, as character ids."""
    text = path.read_text(encoding="ascii")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(chars)


def random_batch(ids: torch.Tensor, generator: torch.Generator) -> dict:
    starts = torch.randint(0, len(ids) - BLOCK, (BATCH,), generator=generator)
    return {"input_ids": torch.stack([ids[s:s + BLOCK] for s in starts])}


def validation_windows(ids: torch.Tensor) -> torch.Tensor:
    """Windows of BLOCK characters with a stride of BLOCK - 1: each scores its last BLOCK - 1, so together they score
    every character but the first (and a tail shorter than a window)."""
    return ids.unfold(0, BLOCK, BLOCK - 1)


@torch.no_grad()
def validation_loss(contender: Contender, windows: torch.Tensor, batch: int = 256) -> float:
    total, items = 0.0, 0
    for chunk in windows.split(batch):
        loss_sum, n = contender.val_sum(chunk)
        total, items = total + loss_sum, items + n
    return total / items


# -- contenders ---------------------------------------------------------------------------------------------------------
def nanogpt_lr(step: int, peak: float = 1e-3, floor: float = 1e-4, warmup: int = 100,
               total: int = NANOGPT_STEPS) -> float:
    """nanoGPT's schedule: linear warmup, then cosine from the peak to the floor at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_reference(vocab: int, max_steps: int) -> Contender:
    torch.manual_seed(0)
    model = GPT(GPTConfig(4, 4, 128, BLOCK, vocab))
    optimizer = configure_adamw(model, lr=1.0, betas=(0.9, 0.99))  # lr 1.0: the schedule gives the rate itself
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, nanogpt_lr)

    def step(batch: dict) -> float:
        model.train()
        ids = batch["input_ids"]
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def warm_up(batch: dict) -> None:
        ids = batch["input_ids"]
        F.cross_entropy(model(ids)[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1)).backward()
        model.zero_grad(set_to_none=True)

    def val_sum(ids: torch.Tensor) -> tuple[float, int]:
        model.eval()
        logits = model(ids)
        targets = ids[:, 1:].reshape(-1)
        return float(F.cross_entropy(logits[:, :-1].reshape(-1, vocab), targets, reduction="sum")), targets.numel()

    return Contender(REFERENCE, count(model), step, warm_up, val_sum, max_steps)


def recipe(name: str) -> dict:
    from hookformer.core.config import config_file, read_yaml

    return read_yaml(config_file(Path(name)))


def hookformer_raw(*layers: dict, max_steps: int) -> dict:
    """The default recipe, then each layer (a recipe or an update), then this contender's step budget."""
    from hookformer.core.config import default_recipe, merge

    raw = default_recipe()
    for layer in layers:
        raw = merge(raw, layer)
    return merge(raw, {"train": {"max_steps": max_steps, "device": "cpu"}})


def build_hookformer(name: str, raw: dict, vocab: int) -> Contender:
    from hookformer.core.assemble import Assembly
    from hookformer.core.config import validate
    from hookformer.core.objective import compute
    from hookformer.core.parts import Shapes
    from hookformer.core.precision import check_bf16
    from hookformer.registry.catalog import Catalog

    config = validate(raw, Catalog.load())
    check_bf16("cpu", config.train.bf16)
    torch.manual_seed(0)
    assembly = Assembly(config, Path("."), device="cpu", shapes=Shapes(vocab, BLOCK))
    model, objective = assembly.model(), assembly.objective()
    optimizer, scheduler = assembly.optimizer(), assembly.scheduler()
    autocast = autocast_factory("cpu", "bf16" if config.train.bf16 else "fp32")
    train_step = engine_step(model, model, objective, optimizer, autocast, scheduler,
                             config.train.clip_grad_norm or math.inf)

    def step(batch: dict) -> float:
        model.train()
        return train_step(batch)

    def warm_up(batch: dict) -> None:
        with autocast():
            compute(objective, model, batch).loss_sum.backward()
        model.zero_grad(set_to_none=True)

    def val_sum(ids: torch.Tensor) -> tuple[float, int]:
        model.eval()
        with autocast():
            result = compute(objective, model, {"input_ids": ids})
        return float(result.loss_sum), result.num_items

    return Contender(name, count(model), step, warm_up, val_sum, config.train.max_steps)


def contenders(vocab: int, nanogpt_steps: int, speedrun_steps: int, ablations: list[tuple[str, dict]],
               yardsticks: bool = True) -> list[Callable[[], Contender]]:
    """Builders of the contenders: the reference and hookformer nanogpt (unless not ``yardsticks``), speedrun and
    its ablations."""
    nanogpt, speedrun = recipe("nanogpt"), recipe("speedrun")
    builders = [lambda: build_reference(vocab, nanogpt_steps),
                lambda: build_hookformer(NANOGPT, hookformer_raw(nanogpt, max_steps=nanogpt_steps), vocab)]
    builders = builders if yardsticks else []
    builders.append(lambda: build_hookformer(SPEEDRUN, hookformer_raw(nanogpt, speedrun, max_steps=speedrun_steps),
                                             vocab))
    for label, update in ablations:
        builders.append(lambda label=label, update=update: build_hookformer(
            f"speedrun, {label}", hookformer_raw(nanogpt, speedrun, update, max_steps=speedrun_steps), vocab))
    return builders


# -- the race -----------------------------------------------------------------------------------------------------------
def race(field_: list[Contender], train: torch.Tensor, windows: torch.Tensor, every: int, target: float) -> None:
    """Slices of ``every`` steps in turn, each followed by the contender's validation, until every one is done."""
    for c in field_:
        c.warm_up(random_batch(train, torch.Generator().manual_seed(0)))
        c.curve.append((0, validation_loss(c, windows)))
    while not all(c.done for c in field_):
        for c in field_:
            if c.done:
                continue
            n = min(every, c.max_steps - c.steps)
            batches = [random_batch(train, c.generator) for _ in range(n)]
            gc.collect()
            began = time.perf_counter()
            for batch in batches:
                c.step(batch)
            c.seconds += time.perf_counter() - began
            c.steps += n
            loss = validation_loss(c, windows)
            c.curve.append((c.steps, loss))
            if loss <= target and c.reached is None:
                c.reached = (c.steps, c.seconds)
            print(f"  {c.name:<42} step {c.steps:>5}  val {loss:.4f}  {c.seconds:7.1f} s", flush=True)


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def seconds_to_target(c: Contender | None) -> float | None:
    return c.reached[1] if c is not None and c.reached else None


def share(a: Contender, b: Contender | None) -> str:
    """a's seconds to the target over b's; "< x" where b stopped at its cap first (it would need more)."""
    if a.reached is None or b is None:
        return "-"
    if b.reached is None:
        return f"< {a.reached[1] / b.seconds:.2f}"
    return f"{a.reached[1] / b.reached[1]:.2f}"


def report(field_: list[Contender], target: float) -> None:
    by_name = {c.name: c for c in field_}
    reference, best = by_name.get(REFERENCE), by_name[SPEEDRUN]
    print(f"\n| contender | params | steps | train s | ms/step | final val | steps to {target} | s to {target} "
          f"| / reference | / speedrun |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in field_:
        print(f"| {c.name} | {c.params:,} | {c.steps} | {c.seconds:.1f} | {1000 * c.seconds / max(1, c.steps):.1f} "
              f"| {c.curve[-1][1]:.4f} | {cell(c.reached[0] if c.reached else None, 'd')} "
              f"| {cell(seconds_to_target(c), '.1f')} | {share(c, reference)} | {share(c, best)} |")
    if best.reached is None:
        print(f"\nhookformer speedrun did not reach {target} within its {best.max_steps} steps")
    elif reference is not None:
        print(f"\nhookformer speedrun / reference, seconds to {target}: {share(best, reference)}x (target <= 0.5x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help=f"tinyshakespeare's input.txt (default {DATA})")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--nanogpt-steps", type=int, default=NANOGPT_STEPS, help="schedule and cap of the "
                        "reference and hookformer nanogpt")
    parser.add_argument("--speedrun-steps", type=int, default=SPEEDRUN_STEPS, help="schedule and cap of speedrun")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--ablation", action="append", default=None, help="only these ablation rows (by label)")
    parser.add_argument("--no-yardsticks", action="store_true", help="leave out the reference and hookformer "
                        "nanogpt (an ablation run: rows compare with speedrun)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's); 1 keeps a "
                        "machine shared with another job from oversubscribing its cores")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 steps each, one ablation row")
    args = parser.parse_args(argv)
    ablations = [] if args.no_ablation else [a for a in ABLATIONS if args.ablation is None or a[0] in args.ablation]
    if args.quick:
        args.nanogpt_steps = args.speedrun_steps = 20
        args.eval_every, ablations = 10, ablations[:1]

    from hookformer.core.precision import cpu_has_native_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    train, val, vocab = load_characters(args.data)
    windows = validation_windows(val)
    print(f"time to validation loss {args.target} on {args.data.name}: {len(train):,} train / {len(val):,} "
          f"validation characters, vocabulary {vocab}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}")
    field_ = [build() for build in contenders(vocab, args.nanogpt_steps, args.speedrun_steps, ablations,
                                                   not args.no_yardsticks)]
    race(field_, train, windows, args.eval_every, args.target)
    report(field_, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
