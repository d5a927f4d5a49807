"""LoRA against full fine-tuning of the same imported model: trainable parameters, peak memory and step time.

A Llama is built at random from a transformers config (``hf_import.SIZES``, no download), saved with
``save_pretrained`` and imported with ``hookformer import``. Each contender then fine-tunes it in a fresh subprocess,
built as ``Run`` builds a fine-tuning run (``Assembly`` with the run's config, the imported checkpoint loaded with the
hook parts' added tensors left as initialised), with the causal-LM objective, ``adamw`` (lr 1e-4) and gradient
clipping at 1.0, on the same seeded random token batches, stepped as ``Run.train_step`` steps (``accumulate_gradients``,
clip, step, zero_grad):

* **full**: every parameter trained;
* **lora**: the ``lora`` hook part (rank 8, alpha 16, targets ``*.attn.qkv``, ``*.attn.proj``, ``*.mlp.*`` by
  default), the rest frozen.

Memory: the subprocess's resident memory once the model is built and loaded (the weights, one copy), then its peak
(VmHWM, reset just before the first step through ``/proc/self/clear_refs``) over the steps: the increase is what
training adds, gradients, optimizer state and activations (the allocator's reuse of freed activation memory blurs
it); and the bytes of the gradients and the AdamW state themselves, counted from the tensors. Step time: the median
over the timed steps, after one warm-up step. The contenders take turns (``--rounds``), so machine noise hits both
alike; a figure is the median over rounds.

    python benchmarks/lora.py                        # Llama "small" (~16M parameters), batch 4 x 128
    python benchmarks/lora.py --size medium --steps 3
    python benchmarks/lora.py --quick                # smoke test: the tiny model, 2 steps, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_import import SIZES, random_hf_dir, rss_kib  # noqa: E402

CONTENDERS = ("full", "lora")


def _worker(contender: str, run_dir: Path, options: dict) -> None:
    """Fine-tune the imported run ``run_dir`` for ``options["steps"]`` steps; one JSON line on stdout."""
    import torch

    from hookformer.core import checkpoint
    from hookformer.core.assemble import Assembly
    from hookformer.core.config import read_yaml, validate
    from hookformer.core.loop import accumulate_gradients
    from hookformer.registry.catalog import Catalog

    torch.set_num_threads(options["threads"])
    torch.manual_seed(0)
    raw = read_yaml(run_dir / "config.yaml")
    raw["objective"] = {"name": "clm"}
    raw["optimizer"] = {"name": "adamw", "lr": 1e-4}
    raw["hooks"] = [{"name": "lora", "rank": options["rank"], "alpha": 2.0 * options["rank"],
                     "targets": options["targets"]}] if contender == "lora" else []
    config = validate(raw, Catalog.load())
    source = checkpoint.latest(run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        assembly = Assembly(config, Path(scratch), checkpoint=source)
        model, objective = assembly.model(), assembly.objective()
        added = frozenset(n for names in assembly.plugins.hook.hookformer_added_tensors(model=model) for n in names)
        checkpoint.load_pretrained(source, model, added)
        optimizer = assembly.optimizer()
    model.train()
    generator = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, model.vocab_size, (options["batch"], options["seq"]),
                                           generator=generator)} for _ in range(options["steps"] + 1)]
    before = rss_kib()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident memory
    times, loss, gradient_bytes = [], None, 0
    for batch in batches:
        began = time.perf_counter()
        loss_sum, items, _ = accumulate_gradients(model, objective, [batch])
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        gradient_bytes = sum(g.numel() * g.element_size() for g in grads)
        torch.nn.utils.clip_grad_norm_(grads, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - began)
        loss = loss_sum / items
    state_bytes = sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
                      if torch.is_tensor(t))
    print(json.dumps({
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "step_s": statistics.median(times[1:]), "before_kib": before, "peak_kib": rss_kib("VmHWM"), "loss": loss,
        "gradient_and_state_mib": (gradient_bytes + state_bytes) / 2**20}))


def measure(contender: str, run_dir: Path, options: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", contender, str(run_dir), json.dumps(options)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{contender} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per contender and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", nargs="+", default=["*.attn.qkv", "*.attn.proj", "*.mlp.*"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each contender")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, batch 2 x 16, 2 steps, 1 round")
    parser.add_argument("--worker", nargs=3, metavar=("CONTENDER", "RUN_DIR", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker[0], Path(args.worker[1]), json.loads(args.worker[2]))
    if args.quick:
        args.size, args.batch, args.seq, args.steps, args.rounds = "tiny", 2, 16, 2, 1
    from hookformer.core.interop import import_hf
    from hookformer.registry.catalog import Catalog

    options = {"batch": args.batch, "seq": min(args.seq, SIZES[args.size]["positions"]), "steps": args.steps,
               "rank": args.rank, "targets": args.targets, "threads": args.threads}
    results: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        random_hf_dir(Path(tmp) / "hf", "llama", args.size)
        import_hf(Path(tmp) / "hf", Path(tmp) / "run", Catalog.load())
        for _ in range(args.rounds):
            for name in CONTENDERS:
                results[name].append(measure(name, Path(tmp) / "run", options))
    print(f"\nLlama {args.size} imported, batch {options['batch']} x {options['seq']} tokens, {args.steps} timed "
          f"steps x {args.rounds} rounds, {args.threads} threads; {os.cpu_count()} CPUs (shared with other "
          f"processes), fp32")
    print("| contender | parameters | trainable | trainable % | step s | RSS loaded MiB | peak increase MiB | "
          "gradients + AdamW state MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for name, runs in results.items():
        step = statistics.median(r["step_s"] for r in runs)
        increase = statistics.median((r["peak_kib"] - r["before_kib"]) / 1024 for r in runs)
        loaded = statistics.median(r["before_kib"] / 1024 for r in runs)
        summary[name] = (step, increase)
        first = runs[0]
        print(f"| {name} | {first['parameters']:,} | {first['trainable']:,} | "
              f"{100 * first['trainable'] / first['parameters']:.2f}% | {step:.3f} | {loaded:.0f} | {increase:.0f} | "
              f"{first['gradient_and_state_mib']:.1f} |")
    ratios = [f["step_s"] / lo["step_s"] for f, lo in zip(results["full"], results["lora"])]
    print(f"\nfull / lora: step time {statistics.median(ratios):.2f}x (median of per-round ratios), peak memory "
          f"increase {summary['full'][1] / max(summary['lora'][1], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
