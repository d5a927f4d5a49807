"""Training throughput side by side: hookformer's GPT vs a plain-PyTorch reference GPT vs HF transformers' GPT2,
each eager and under torch.compile.

Three models of the same shape, trained on the same random token batches with AdamW (lr 3e-4, betas (0.9, 0.95),
weight decay 0.1 on linear weights), gradient clipping at 1.0, fp32 or bf16 autocast:

* reference: benchmarks/reference_gpt.py, plain PyTorch with F.scaled_dot_product_attention;
* hookformer: the ``transformer`` model, ``sdpa`` attention (wrapped in its capability check, as ``Run`` does),
  ``clm`` objective and ``adamw`` optimizer, all built through the registry; the step is the engine's own
  (``core.loop.accumulate_gradients`` then clip, step, zero_grad, as in ``Run.train_step``);
* HF GPT2: ``transformers.GPT2LMHeadModel`` with SDPA attention and no dropout (skipped if transformers is missing).

Each also runs compiled (left out with --no-compile): the reference and HF GPT2 under ``torch.compile(model,
dynamic=False)``, hookformer through ``core.loop.compile_for_training``, as ``train.compile: true`` does. Compilation
happens before the timed steps; the "startup" column is the time to build a model and run its first step, compilation
included.

The models are interleaved (round 1: each model in turn; round 2: ...) so that machine noise hits all of them alike;
the reported tokens/s of a model is the median over rounds, and a ratio of two models is the median over rounds of
their ratio within the round. Tokens per step = batch * block.

    python benchmarks/throughput.py                          # configs A and B, fp32 and bf16
    python benchmarks/throughput.py --config A --dtype bf16 --steps 100 --rounds 5
    python benchmarks/throughput.py --quick --no-compile     # smoke test: config A, 1 step per round
    python benchmarks/throughput.py --quick --config all     # smoke test of config B and compilation too (slow)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_gpt import GPT, GPTConfig, configure_adamw, lm_loss  # noqa: E402

LR, CLIP = 3e-4, 1.0


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_head: int
    d_model: int
    block: int
    batch: int
    vocab: int
    steps: int  # default timed steps per round
    warmup: int  # default warmup steps per model

    def describe(self) -> str:
        return (f"config {self.name}: {self.n_layer} layers, {self.n_head} heads, width {self.d_model}, "
                f"block {self.block}, batch {self.batch}, vocab {self.vocab}")


CONFIGS = {
    "A": Shape("A", n_layer=4, n_head=4, d_model=128, block=64, batch=12, vocab=65, steps=50, warmup=10),
    "B": Shape("B", n_layer=6, n_head=6, d_model=384, block=256, batch=8, vocab=65, steps=10, warmup=3),
}


def autocast_factory(device: str, dtype: str):
    """A zero-argument callable returning the context manager of one forward pass (as core/loop.py expects)."""
    if dtype == "bf16":
        return lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied parameters once


def plain_step(model, loss_of, autocast):
    """The training step of the reference and HF models: mean loss, backward, clip, AdamW step."""
    optimizer = configure_adamw(model, lr=LR)

    def step(batch):
        with autocast():
            loss = loss_of(batch["input_ids"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


# -- the contenders: each is (model, step function); step() trains on one batch and returns its loss -----------------
def build_reference(shape: Shape, device: str, autocast, compiled: bool, batch: dict):
    torch.manual_seed(0)
    model = GPT(GPTConfig(shape.n_layer, shape.n_head, shape.d_model, shape.block, shape.vocab)).to(device)
    net = torch.compile(model, dynamic=False) if compiled else model
    return model, plain_step(model, lambda ids: lm_loss(net(ids), ids), autocast)


def build_hookformer(shape: Shape, device: str, autocast, compiled: bool, batch: dict):
    from hookformer.core.assemble import Assembly
    from hookformer.core.config import validate
    from hookformer.core.loop import compile_for_training
    from hookformer.core.parts import Shapes
    from hookformer.registry.catalog import Catalog

    torch.manual_seed(0)
    config = validate({
        "data": {"name": "builtin"}, "tokenizer": {"name": "byte"},  # validated, never built: the shapes are given
        "model": {"name": "transformer", "n_layer": shape.n_layer, "n_head": shape.n_head, "d_model": shape.d_model,
                  "dropout": 0.0},
        "attention": {"name": "sdpa"}, "objective": {"name": "clm"}, "optimizer": {"name": "adamw", "lr": LR},
        "scheduler": {"name": "constant"}, "train": {"device": device},
    }, Catalog.load())
    assembly = Assembly(config, Path("."), device=device, shapes=Shapes(shape.vocab, shape.block))
    model, objective, optimizer = assembly.model(), assembly.objective(), assembly.optimizer()
    train_model = compile_for_training(model, objective, batch, autocast) if compiled else model

    return model, engine_step(model, train_model, objective, optimizer, autocast)


def engine_step(model, train_model, objective, optimizer, autocast, scheduler=None, clip: float = CLIP):
    """Run.train_step on one given batch, less the bookkeeping: returns step(batch) -> mean loss."""
    from hookformer.core.loop import accumulate_gradients

    def step(batch):
        loss_sum, items, _ = accumulate_gradients(train_model, objective, [batch], autocast)
        params = [p for p in model.parameters() if p.grad is not None]
        float(torch.nn.utils.clip_grad_norm_(params, clip))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum / max(1, items)

    return step


def build_hf(shape: Shape, device: str, autocast, compiled: bool, batch: dict):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=shape.vocab, n_positions=shape.block, n_embd=shape.d_model, n_layer=shape.n_layer,
                        n_head=shape.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        activation_function="gelu_new", layer_norm_epsilon=1e-5, use_cache=False,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    try:
        model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    except (TypeError, ValueError, ImportError):
        model = GPT2LMHeadModel(config)
    model = model.to(device)
    net = torch.compile(model, dynamic=False) if compiled else model
    return model, plain_step(model, lambda ids: net(input_ids=ids, labels=ids).loss, autocast)


BUILDERS = {"reference": build_reference, "hookformer": build_hookformer, "HF GPT2": build_hf}
COMPILED = " compiled"  # suffix of a compiled contender's name


def hf_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# -- timing -------------------------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_steps(step, batches, n: int, start: int, device: str) -> tuple[float, float]:
    """n training steps on batches[start:], cycling; returns (seconds, last loss)."""
    sync(device)
    begin = time.perf_counter()
    for i in range(n):
        loss = step(batches[(start + i) % len(batches)])
    sync(device)
    return time.perf_counter() - begin, float(loss)


def bench(shape: Shape, dtype: str, device: str, steps: int, warmup: int, rounds: int, names: list[str]) -> dict:
    """Tokens/s of each named contender ("hookformer", "hookformer compiled", ...), interleaved over rounds."""
    autocast = autocast_factory(device, dtype)
    generator = torch.Generator().manual_seed(1234)
    batches = [{"input_ids": torch.randint(0, shape.vocab, (shape.batch, shape.block), generator=generator)
                .to(device)} for _ in range(8)]
    contenders, result = {}, {}
    for name in names:
        build = BUILDERS[name.removesuffix(COMPILED)]
        sync(device)
        began = time.perf_counter()
        model, step = contenders[name] = build(shape, device, autocast, name.endswith(COMPILED), batches[0])
        model.train()
        run_steps(step, batches, 1, 0, device)
        result[name] = {"params": count(model), "rates": [], "loss": float("nan"),
                        "startup_s": time.perf_counter() - began}
        if warmup > 1:
            run_steps(step, batches, warmup - 1, 1, device)
    tokens_per_step = shape.batch * shape.block
    for r in range(rounds):
        for name, (_, step) in contenders.items():
            gc.collect()
            seconds, loss = run_steps(step, batches, steps, warmup + r * steps, device)
            result[name]["rates"].append(steps * tokens_per_step / seconds)
            result[name]["loss"] = loss
    for entry in result.values():
        entry["tok_s"] = statistics.median(entry["rates"])
    del contenders
    gc.collect()
    return result


def ratio(result: dict, a: str, b: str) -> float | None:
    """Median over rounds of a's rate (tokens/s, examples/s) over b's in the same round: a round's runs are close in
    time, so a burst of load from other processes moves both, and the ratio is steadier than one of medians."""
    if a in result and b in result:
        return statistics.median(x / y for x, y in zip(result[a]["rates"], result[b]["rates"]))
    return None


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


RATIOS = [  # (label, numerator, denominator, target)
    ("hookformer / reference", "hookformer", "reference", "1.0x"),
    ("hookformer / HF GPT2", "hookformer", "HF GPT2", "1.3x"),
    ("hookformer compiled / reference compiled", "hookformer compiled", "reference compiled", None),
    ("hookformer compiled / HF GPT2", "hookformer compiled", "HF GPT2", None),
    ("hookformer compiled / HF GPT2 compiled", "hookformer compiled", "HF GPT2 compiled", None),
    ("hookformer compiled / hookformer", "hookformer compiled", "hookformer", None),
]


def print_table(shape: Shape, dtype: str, result: dict, steps: int, warmup: int, rounds: int) -> None:
    print(f"\n{shape.describe()}; {dtype}; {rounds} round(s) x {steps} steps after {warmup} warmup, "
          f"{shape.batch * shape.block} tokens/step")
    print(f"  {'model':<20} {'params':>11} {'startup s':>9} {'tok/s median':>13} {'best':>7}  {'loss':>6}  "
          "per round tok/s")
    for name, entry in result.items():
        rounds_s = " ".join(f"{rate:,.0f}" for rate in entry["rates"])
        print(f"  {name:<20} {entry['params']:>11,} {entry['startup_s']:>9.1f} {entry['tok_s']:>13,.0f} "
              f"{max(entry['rates']):>7,.0f}  {entry['loss']:>6.3f}  {rounds_s}")
    for label, a, b, target in RATIOS:
        if a in result and b in result:
            print(f"  {label}: {fmt_ratio(ratio(result, a, b))}" + (f" (target >= {target})" if target else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["A", "B", "all"], default=None, help="default: all (A with --quick)")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model per round "
                        "(default: A 50, B 10)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per model first (default: A 10, B 3)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds; the median is reported "
                        "(default 3)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--no-hf", action="store_true", help="leave out HF transformers' GPT2")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled models")
    parser.add_argument("--quick", action="store_true", help="smoke test: config A unless --config is given, "
                        "1 warmup step, 2 rounds x 1 step; the numbers mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.config = args.config or "A"
        args.steps = args.steps or 1
        args.warmup = 1 if args.warmup is None else args.warmup
        args.rounds = args.rounds or 2
    args.config, args.rounds = args.config or "all", args.rounds or 3
    shapes = [CONFIGS[c] for c in ("A", "B") if args.config in (c, "all")]
    dtypes = [d for d in ("fp32", "bf16") if args.dtype in (d, "all")]
    from hookformer.core.precision import cpu_has_native_bf16

    with_hf = not args.no_hf and hf_available()
    names = [name for name in BUILDERS if with_hf or name != "HF GPT2"]
    if not args.no_compile:
        names += [name + COMPILED for name in names]

    versions = f"torch {torch.__version__}"
    if with_hf:
        import transformers

        versions += f", transformers {transformers.__version__}"
    print(f"training throughput on {args.device}: {versions}, {torch.get_num_threads()} threads; "
          f"AdamW lr {LR}, clip {CLIP}")
    if "bf16" in dtypes and args.device == "cpu" and not cpu_has_native_bf16():
        print(f"note: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16 matmul "
              "(core.precision.cpu_has_native_bf16() is False): bf16 autocast runs emulated kernels, "
              "far slower than fp32; the bf16 rows compare the models there, not a bf16 speedup")
    if not with_hf:
        print("note: HF GPT2 column skipped (" + ("--no-hf" if args.no_hf else "transformers is not installed") + ")")
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            steps, warmup = args.steps or shape.steps, args.warmup if args.warmup is not None else shape.warmup
            result = bench(shape, dtype, args.device, steps, warmup, args.rounds, names)
            print_table(shape, dtype, result, steps, warmup, args.rounds)
            rows.append((shape, dtype, result))

    print("\n| config | dtype | mode | reference tok/s | hookformer tok/s | HF GPT2 tok/s | hookformer / reference "
          "| hookformer / HF GPT2 | hookformer / HF GPT2 eager | startup s (ref / ours / HF) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for shape, dtype, result in rows:
        for mode, suffix in (("eager", ""), ("compiled", COMPILED)):
            if "hookformer" + suffix not in result:
                continue

            def cell(name, key="tok_s", spec=",.0f"):
                return format(result[name][key], spec) if name in result else "-"

            ours, ref, hf = "hookformer" + suffix, "reference" + suffix, "HF GPT2" + suffix
            print(f"| {shape.name} ({shape.n_layer}L {shape.n_head}H {shape.d_model}d, T={shape.block}, "
                  f"B={shape.batch}) | {dtype} | {mode} | {cell(ref)} | {cell(ours)} | {cell(hf)} "
                  f"| {fmt_ratio(ratio(result, ours, ref))} | {fmt_ratio(ratio(result, ours, hf))} "
                  f"| {fmt_ratio(ratio(result, ours, 'HF GPT2'))} "
                  f"| {' / '.join(cell(name, 'startup_s', '.1f') for name in (ref, ours, hf))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
