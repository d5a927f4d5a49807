"""How fast can any implementation of the throughput configs train on this machine? The matrix-product floor.

A training step of the GPT in ``throughput.py`` is, for every block, four linear layers (qkv, attention output, MLP
in and out), each one matrix product forward and two backward (the input's and the weight's gradient), plus the
attention kernel forward and backward, plus the language-model head. Whatever else an implementation does
(norms, GELU, residual adds, the loss, AdamW) only adds time. This script times exactly those matrix products
with ``torch.mm`` on the step's shapes, and ``F.scaled_dot_product_attention`` forward+backward on the step's
q/k/v, and sets the result against a real training step of the plain reference GPT, in interleaved rounds:

* floor s/step: the matrix products and attention of one step, nothing else;
* ceiling tok/s: tokens per step / floor, the most any implementation built on the same BLAS and attention kernel
  gets on this machine;
* reference tok/s, and the share of its step that the floor takes.

If the reference already spends most of its step in the floor, no engine can beat it by much: a target of "1.3x HF
GPT2" is reachable only when HF GPT2 is far below the ceiling.

    python benchmarks/matmul_floor.py                    # configs A and B, fp32
    python benchmarks/matmul_floor.py --config B --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import CONFIGS, Shape, autocast_factory, build_hf, build_reference, hf_available  # noqa: E402


def floor_step(shape: Shape):
    """A function that runs one step's matrix products and attention (forward and backward) and nothing else."""
    tokens, width = shape.batch * shape.block, shape.d_model
    linears = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]  # (in, out) per block
    tensors = []
    for fan_in, fan_out in linears * shape.n_layer + [(width, shape.vocab)]:
        x, w, grad_y = torch.randn(tokens, fan_in), torch.randn(fan_out, fan_in), torch.randn(tokens, fan_out)
        tensors.append((x, w, grad_y))
    head = width // shape.n_head
    qkv = [torch.randn(shape.batch, shape.n_head, shape.block, head, requires_grad=True) for _ in range(3)]
    grad_attention = torch.randn(shape.batch, shape.n_head, shape.block, head)

    def step():
        for x, w, grad_y in tensors:
            torch.mm(x, w.t())  # forward
            torch.mm(grad_y, w)  # gradient of the input
            torch.mm(grad_y.t(), x)  # gradient of the weight
        for _ in range(shape.n_layer):
            out = F.scaled_dot_product_attention(*qkv, is_causal=True)
            torch.autograd.grad(out, qkv, grad_attention)

    return step


def timed(fn) -> float:
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["A", "B", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on cpu")
    rows = []
    for name in ("A", "B"):
        if args.config not in (name, "all"):
            continue
        shape = CONFIGS[name]
        tokens = shape.batch * shape.block
        batch = {"input_ids": torch.randint(0, shape.vocab, (shape.batch, shape.block))}
        contenders = {"floor": floor_step(shape)}
        for label, build in [("reference", build_reference)] + ([("HF GPT2", build_hf)] if hf_available() else []):
            _, step = build(shape, "cpu", autocast_factory("cpu", "fp32"), False, batch)
            contenders[label] = lambda step=step: step(batch)
        repeats = max(1, shape.steps // 2)
        for fn in contenders.values():  # warmup
            fn()
        seconds = {label: [] for label in contenders}
        for _ in range(args.rounds):
            for label, fn in contenders.items():
                seconds[label].append(timed(lambda fn=fn: [fn() for _ in range(repeats)]) / repeats)
        median = {label: statistics.median(values) for label, values in seconds.items()}
        share = statistics.median(f / r for f, r in zip(seconds["floor"], seconds["reference"]))
        print(f"\n{shape.describe()}; {tokens} tokens/step; {args.rounds} rounds x {repeats} steps")
        for label, value in median.items():
            print(f"  {label:<10} {value * 1000:8.1f} ms/step  {tokens / value:10,.0f} tok/s")
        print(f"  the floor is {share:.0%} of the reference's step: no implementation on this BLAS and attention "
              f"kernel gets above {1 / share:.2f}x the reference")
        # Speed ratio within each round: HF GPT2's seconds per step over the reference's.
        hf = statistics.median(h / r for r, h in zip(seconds["reference"], seconds["HF GPT2"])) \
            if "HF GPT2" in seconds else None
        if hf is not None:
            print(f"  the reference is {hf:.2f}x as fast as HF GPT2; 1.3x HF GPT2 is {1.3 / hf:.2f}x the reference "
                  f"({'above' if 1.3 / hf > 1 / share else 'below'} the ceiling of {1 / share:.2f}x)")
        rows.append((shape, median, share, hf))
    print("\n| config | floor ms/step | ceiling tok/s | reference tok/s | floor / reference step | max speedup over "
          "reference | HF GPT2 tok/s | reference / HF GPT2 | 1.3x HF GPT2 in reference units |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, median, share, hf in rows:
        tokens = shape.batch * shape.block
        hf_cells = (f"{tokens / median['HF GPT2']:,.0f} | {hf:.2f}x | {1.3 / hf:.2f}x" if hf is not None
                    else "- | - | -")
        print(f"| {shape.name} fp32 | {median['floor'] * 1000:.1f} | {tokens / median['floor']:,.0f} "
              f"| {tokens / median['reference']:,.0f} | {share:.0%} | {1 / share:.2f}x | {hf_cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
