"""Time to quality: wall seconds to validation loss 1.88 on tinyshakespeare, characters, nanoGPT's CPU quick-start
shape (4 layers x 4 heads x 128, block 64, batch 12).

Contenders, interleaved in one run:

* reference: benchmarks/reference_gpt.py with nanoGPT's recipe (AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1
  on linear weights, cosine with 100 warmup steps to 1e-4 at step 2000, clip 1.0), plain PyTorch;
* hookformer nanogpt: the named recipe ``nanogpt`` (the same recipe), built through Assembly;
* hookformer speedrun: the ``nanogpt`` recipe with the named recipe ``speedrun`` on top (its ideas), its own step
  budget (--speedrun-steps: the schedule's length and its step cap);
* ablations (unless --no-ablation): speedrun with one idea turned back to nanogpt's choice (the recipe
  with the changes its row names: keys left out or set).

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

--default-run instead measures validation loss at equal wall time on the default run's data (``hookformer train``:
the built-in corpus, its SentencePiece tokenizer trained as the run trains it, its shapes, batches and seed): the
classic GPT recipe (``classic_gpt``, the default run before the speedrun ideas) trains its 1000 steps
(--default-steps); the default run, "default run + speedrun" (``speedrun`` on top, as ``hookformer train speedrun``
runs) and the ablations named with --ablation (speedrun over classic_gpt, one idea turned back) train as many steps as fit in the same wall time, their schedules
sized to those steps. How many fit comes from each contender's time per step, timed first
in interleaved rounds; then the contenders race in --slices slices of about equal time, each validated over the whole
validation split. Every contender draws the run's batches in the same order. Repeated --repeats times with
train.seed --seed, --seed + 1, ...; the table gives each repetition and each contender's mean and range.

    python benchmarks/time_to_quality.py                         # the three contenders and the ablations
    python benchmarks/time_to_quality.py --no-ablation
    python benchmarks/time_to_quality.py --quick                 # smoke test: 20 steps each; the numbers mean nothing
    python benchmarks/time_to_quality.py --default-run --threads 1 --ablation "wsd -> cosine"
    python benchmarks/time_to_quality.py --default-run --quick   # smoke test
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import statistics
import sys
import tempfile
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
CLASSIC, DEFAULT_RUN, DEFAULT_SPEEDRUN, SEED = "classic_gpt", "default run", "default run + speedrun", 1337

#: Speedrun with one idea turned back to the base recipe's choice: (row label, the changes to the ``speedrun`` recipe:
#: a dotted key it leaves out, so that the base's setting or the part's default applies, or ``key=value`` it sets).
ABLATIONS: list[tuple[str, tuple[str, ...]]] = [
    ("muon -> adamw", ("optimizer",)),
    ("wsd -> cosine", ("scheduler",)),
    ("rope -> learned positions", ("model.positions",)),
    ("rmsnorm -> layernorm", ("model.norm",)),
    ("relu2 -> gelu", ("model.mlp",)),
    ("qk_norm off", ("model.qk_norm",)),
    ("untied -> tied head", ("model.tie_embeddings",)),
    ("softcap off", ("model.logit_softcap",)),
    # The ideas a Hugging Face family expresses: no ReLU^2 or soft-cap (export family qwen3), nor QK-norm (llama).
    ("as Qwen3 (swiglu, no bias, tied head)", ("model.mlp=swiglu", "model.bias=false", "model.tie_embeddings",
                                                "model.logit_softcap")),
    ("as Llama (swiglu, no bias, tied head)", ("model.mlp=swiglu", "model.bias=false", "model.qk_norm",
                                                "model.tie_embeddings", "model.logit_softcap")),
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
def validation_loss(contender: Contender, windows: torch.Tensor, tokens: int = 16384) -> float:
    """The mean loss per scored token over all ``windows``, in chunks of about ``tokens`` tokens."""
    total, items = 0.0, 0
    for chunk in windows.split(max(1, tokens // windows.shape[1])):
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


def changed(layer: dict, changes: tuple[str, ...]) -> dict:
    """A copy of the recipe ``layer`` with ``changes``: a dotted key (``"model.qk_norm"``) is left out, a
    ``key=value`` (``"model.mlp=swiglu"``) is set."""
    from hookformer.core.config import apply_override

    out = copy.deepcopy(layer)
    for change in changes:
        if "=" in change:
            out = apply_override(out, change)
            continue
        *path, last = change.split(".")
        section = out
        for name in path:
            section = section[name]
        del section[last]
    return out


def hookformer_raw(*layers: dict, max_steps: int) -> dict:
    """The default recipe, then each layer (a recipe or an update), then this contender's step budget."""
    from hookformer.core.config import default_recipe, merge

    raw = default_recipe()
    for layer in layers:
        raw = merge(raw, layer)
    return merge(raw, {"train": {"max_steps": max_steps, "device": "cpu"}})


def build_hookformer(name: str, raw: dict, shapes, seed: int = 0) -> Contender:
    """The contender ``name`` trained as ``raw`` says, its model built for ``shapes`` after ``torch.manual_seed(seed)``."""
    from hookformer.core.assemble import Assembly
    from hookformer.core.config import validate
    from hookformer.core.objective import compute
    from hookformer.core.precision import check_bf16
    from hookformer.registry.catalog import Catalog

    config = validate(raw, Catalog.load())
    check_bf16("cpu", config.train.bf16)
    torch.manual_seed(seed)
    assembly = Assembly(config, Path("."), device="cpu", shapes=shapes)
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


def contenders(vocab: int, nanogpt_steps: int, speedrun_steps: int, ablations: list[tuple[str, tuple[str, ...]]],
               yardsticks: bool = True) -> list[Callable[[], Contender]]:
    """Builders of the contenders: the reference and hookformer nanogpt (unless not ``yardsticks``), speedrun and
    its ablations."""
    from hookformer.core.parts import Shapes

    nanogpt, speedrun, shapes = recipe("nanogpt"), recipe("speedrun"), Shapes(vocab, BLOCK)
    builders = [lambda: build_reference(vocab, nanogpt_steps),
                lambda: build_hookformer(NANOGPT, hookformer_raw(nanogpt, max_steps=nanogpt_steps), shapes)]
    builders = builders if yardsticks else []
    builders.append(lambda: build_hookformer(SPEEDRUN, hookformer_raw(nanogpt, speedrun, max_steps=speedrun_steps),
                                             shapes))
    for label, keys in ablations:
        builders.append(lambda label=label, keys=keys: build_hookformer(
            f"speedrun, {label}", hookformer_raw(nanogpt, changed(speedrun, keys), max_steps=speedrun_steps),
            shapes))
    return builders


# -- the race -----------------------------------------------------------------------------------------------------------
def timed_steps(c: Contender, batches: list[dict]) -> float:
    """Seconds ``c`` takes to train on ``batches`` (drawn beforehand, so that drawing is not timed)."""
    gc.collect()
    began = time.perf_counter()
    for batch in batches:
        c.step(batch)
    return time.perf_counter() - began


def race(field_: list[Contender], draw: Callable[[Contender], dict], warm: dict, windows: torch.Tensor,
         every: Callable[[Contender], int], target: float | None = None) -> None:
    """Each contender warms up on ``warm``, then trains on ``draw(c)`` batches in slices of ``every(c)`` steps in turn,
    each slice followed by the contender's validation on ``windows``, until every one is done (reached ``target``,
    where given, or its step cap)."""
    for c in field_:
        c.warm_up(warm)
        c.curve.append((0, validation_loss(c, windows)))
    while not all(c.done for c in field_):
        for c in field_:
            if c.done:
                continue
            n = min(every(c), c.max_steps - c.steps)
            c.seconds += timed_steps(c, [draw(c) for _ in range(n)])
            c.steps += n
            loss = validation_loss(c, windows)
            c.curve.append((c.steps, loss))
            if target is not None and loss <= target and c.reached is None:
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


# -- the default run at equal wall time ---------------------------------------------------------------------------------
def default_run_data(run_dir: Path):
    """The default run's splits, tokenized as ``hookformer train`` does (its SentencePiece model is trained into
    ``run_dir``): (train table, validation ids, the model's shapes, batch size)."""
    from hookformer.core.assemble import Assembly
    from hookformer.core.config import validate
    from hookformer.core.sampler import as_table
    from hookformer.registry.catalog import Catalog

    config = validate(hookformer_raw(max_steps=1), Catalog.load())
    assembly = Assembly(config, run_dir, device="cpu")
    splits = assembly.prepare_data()
    return (as_table(splits["train"]), as_table(splits["validation"])["input_ids"], assembly.shapes(),
            config.train.batch_size)


def default_run_recipes(ablations: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, list[dict]]]:
    """(contender, the recipes layered over the default run): the classic GPT recipe, the default run, it with
    ``speedrun``, and speedrun's ablations over the classic recipe (an idea turned back takes classic_gpt's choice:
    over the default run, which has most of the ideas, turning one back would change nothing)."""
    speedrun, classic = recipe("speedrun"), recipe(CLASSIC)
    return [(CLASSIC, [classic]), (DEFAULT_RUN, []), (DEFAULT_SPEEDRUN, [speedrun]),
            *((f"{CLASSIC} + speedrun, {label}", [classic, changed(speedrun, keys)]) for label, keys in ablations)]


def ms_per_step(field_: list[Contender], draw: Callable[[Contender], dict], warm: dict, steps: int,
                rounds: int) -> dict[str, float]:
    """Each contender's median milliseconds per training step over ``rounds`` interleaved rounds of ``steps`` steps.
    The contenders are spent (they have trained): race fresh ones."""
    times: dict[str, list[float]] = {c.name: [] for c in field_}
    for c in field_:
        c.warm_up(warm)
    for _ in range(rounds):
        for c in field_:
            times[c.name].append(1000 * timed_steps(c, [draw(c) for _ in range(steps)]) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def equal_time(recipes_: list[tuple[str, list[dict]]], train: dict, windows: torch.Tensor, shapes, batch_size: int,
               default_steps: int, slices: int, seed: int, calibration: tuple[int, int]) -> list[Contender]:
    """One repetition: the first contender trains ``default_steps`` steps, every other one as many steps as fit in
    the same wall time, its schedule sized to them. The budgets come from each contender's time per step, timed
    first in interleaved rounds (``calibration``: steps, rounds); then they race in ``slices`` slices each (about
    equal times), validated after each. All draw the same batches, in the order of a run with ``train.seed`` seed."""
    from hookformer.core.sampler import TableStream, table_rows

    def field_of(steps: Callable[[str], int]) -> tuple[list[Contender], Callable[[Contender], dict]]:
        streams = {name: TableStream(train, seed) for name, _ in recipes_}
        built = [build_hookformer(name, hookformer_raw(*layers, max_steps=steps(name)), shapes, seed)
                 for name, layers in recipes_]
        return built, lambda c: streams[c.name].next_batch(batch_size)

    warm = table_rows(train, list(range(batch_size)))
    ms = ms_per_step(*field_of(lambda name: default_steps), warm, *calibration)
    budget = default_steps * ms[recipes_[0][0]]
    field_, draw = field_of(lambda name: max(1, round(budget / ms[name])))
    print("  ms/step: " + ", ".join(f"{name} {t:.0f}" for name, t in ms.items()), flush=True)
    race(field_, draw, warm, windows, lambda c: math.ceil(c.max_steps / slices))
    return field_


def spread(values: list[float], spec: str) -> str:
    """The mean, and the range where there are several values."""
    mean = format(statistics.fmean(values), spec)
    return mean if len(values) == 1 else f"{mean} ({format(min(values), spec)} to {format(max(values), spec)})"


def report_equal_time(repetitions: list[list[Contender]]) -> None:
    """Each repetition's contenders beside the first (classic_gpt), then each contender's mean and range over
    them."""
    print(f"\n| repetition | contender | params | steps | train s | s / {CLASSIC} | final val | - {CLASSIC}'s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for i, field_ in enumerate(repetitions, 1):
        base = field_[0]
        for c in field_:
            print(f"| {i} | {c.name} | {c.params:,} | {c.steps} | {c.seconds:.1f} | {c.seconds / base.seconds:.2f} "
                  f"| {c.curve[-1][1]:.4f} | {c.curve[-1][1] - base.curve[-1][1]:+.4f} |")
    print(f"\nOver {len(repetitions)} repetition(s), mean (range):\n")
    print(f"| contender | steps | train s | s / {CLASSIC} | final val | - {CLASSIC}'s |")
    print("|---|---:|---:|---:|---:|---:|")
    for j, c in enumerate(repetitions[0]):
        rows = [(field_[j], field_[0]) for field_ in repetitions]
        print(f"| {c.name} | {spread([float(r.steps) for r, _ in rows], '.0f')} "
              f"| {spread([r.seconds for r, _ in rows], '.1f')} "
              f"| {spread([r.seconds / b.seconds for r, b in rows], '.2f')} "
              f"| {spread([r.curve[-1][1] for r, _ in rows], '.4f')} "
              f"| {spread([r.curve[-1][1] - b.curve[-1][1] for r, b in rows], '+.4f')} |")


def cpu_line() -> str:
    from hookformer.core.precision import cpu_has_native_bf16

    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU "
            f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help=f"tinyshakespeare's input.txt (default {DATA})")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--nanogpt-steps", type=int, default=NANOGPT_STEPS, help="schedule and cap of the "
                        "reference and hookformer nanogpt")
    parser.add_argument("--speedrun-steps", type=int, default=SPEEDRUN_STEPS, help="schedule and cap of speedrun")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--ablation", action="append", default=None, help="only these ablation rows (by label); "
                        "with --default-run, the ablation rows to add (none unless named)")
    parser.add_argument("--no-yardsticks", action="store_true", help="leave out the reference and hookformer "
                        "nanogpt (an ablation run: rows compare with speedrun)")
    parser.add_argument("--default-run", action="store_true", help="instead: classic_gpt, the default run and the "
                        "default run + speedrun on the default run's data, at equal wall time")
    parser.add_argument("--default-steps", type=int, default=None, help="--default-run: classic_gpt's steps "
                        "(default: its train.max_steps), whose wall time every contender gets")
    parser.add_argument("--repeats", type=int, default=2, help="--default-run: repetitions, train.seed --seed, "
                        "--seed + 1, ...")
    parser.add_argument("--seed", type=int, default=SEED, help="--default-run: the first repetition's train.seed")
    parser.add_argument("--slices", type=int, default=10, help="--default-run: slices (and validations) per contender")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's); 1 keeps a "
                        "machine shared with another job from oversubscribing its cores")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 steps each, one ablation row")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.default_run:
        return main_default_run(args)
    ablations = [] if args.no_ablation else [a for a in ABLATIONS if args.ablation is None or a[0] in args.ablation]
    if args.quick:
        args.nanogpt_steps = args.speedrun_steps = 20
        args.eval_every, ablations = 10, ablations[:1]
    train, val, vocab = load_characters(args.data)
    windows = validation_windows(val)
    print(f"time to validation loss {args.target} on {args.data.name}: {len(train):,} train / {len(val):,} "
          f"validation characters, vocabulary {vocab}; {cpu_line()}")
    field_ = [build() for build in contenders(vocab, args.nanogpt_steps, args.speedrun_steps, ablations,
                                                   not args.no_yardsticks)]
    race(field_, lambda c: random_batch(train, c.generator), random_batch(train, torch.Generator().manual_seed(0)),
         windows, lambda c: args.eval_every, args.target)
    report(field_, args.target)
    return 0


def main_default_run(args) -> int:
    """--default-run: the classic GPT recipe, the default run and it with the speedrun recipe, at equal wall time,
    repeated."""
    ablations = [a for a in ABLATIONS if a[0] in (args.ablation or [])]
    steps, calibration = args.default_steps or recipe(CLASSIC)["train"]["max_steps"], (8, 3)
    if args.quick:
        steps, calibration, args.slices, args.repeats = 20, (2, 1), 2, 1
    with tempfile.TemporaryDirectory() as run_dir:
        train, windows, shapes, batch_size = default_run_data(Path(run_dir))
    print(f"validation loss at equal wall time on the default run's data: {len(train['input_ids']):,} train / "
          f"{len(windows):,} validation examples of {shapes.max_seq_len} tokens, vocabulary {shapes.vocab_size}, "
          f"batch {batch_size}; {CLASSIC}'s {steps} steps set the time; {cpu_line()}")
    repetitions = []
    for repetition in range(args.repeats):
        seed = args.seed + repetition
        print(f"repetition {repetition + 1} (train.seed {seed})", flush=True)
        repetitions.append(equal_time(default_run_recipes(ablations), train, windows, shapes, batch_size, steps,
                                      args.slices, seed, calibration))
    report_equal_time(repetitions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
