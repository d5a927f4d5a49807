"""Attention kernels side by side: forward+backward time and peak memory.

CPU table (always): naive vs sdpa, B=4, H=8, D=64, fp32, causal,
T in {256, 512, 1024, 2048}. Each measurement runs in a fresh subprocess so that its peak resident memory (ru_maxrss)
is its own; "extra MB" is that peak minus the peak of the same process without the attention call.

GPU table (only where CUDA is available): triton_flash vs torch SDPA restricted to its flash backend, TFLOP/s of the
forward and of forward+backward, causal and not, bf16, D in {64, 128}, T from 1k to 16k, B*H*T = 64k tokens; each
shape with contiguous (B, H, T, D) inputs and in the model's layout (permuted views of one (B, T, 3, H, D) qkv
tensor, the output merged back to (B, T, H*D)), where copies would show.

sm_90 table (no GPU needed): every triton_flash kernel and GPU tile configuration compiled for sm_90 without
launching, bf16, D in {64, 96, 128}; registers, spill stack, shared memory and whether the dots became wgmma.

    python benchmarks/attention.py            # CPU and GPU tables where possible
    python benchmarks/attention.py --cpu      # CPU table only
    python benchmarks/attention.py --gpu      # GPU table only
    python benchmarks/attention.py --sm90     # compile for sm_90 only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CPU_LENGTHS = (256, 512, 1024, 2048)


def _kernel(name: str):
    from hookformer.core.parts import BuildContext
    from hookformer.registry.catalog import Catalog

    entry = Catalog.load().get("attention", name)
    return entry.build(entry.options_model()(), BuildContext(run_dir="."))


def measure_one(name: str, t: int, device: str, repeats: int) -> dict:
    """Runs inside the child process: time of forward+backward (median of ``repeats``) and peak RSS.
    ``name`` "none" measures the process with its inputs but without any attention call (the baseline)."""
    import torch

    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 8, t, 64, device=device, requires_grad=True) for _ in range(3))
    grad = torch.randn(4, 8, t, 64, device=device)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if name == "none":
        return {"seconds": 0.0, "peak_kb": baseline_kb}
    kernel = _kernel(name)
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        start = time.perf_counter()
        out = kernel(q, k, v, causal=True)
        out.backward(grad)
        times.append(time.perf_counter() - start)
        q.grad = k.grad = v.grad = None
    times = sorted(times[1:])
    return {"seconds": times[len(times) // 2], "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _child(name: str, t: int, repeats: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", name, str(t), str(repeats)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_table(repeats: int) -> None:
    import torch

    names = ["naive", "sdpa"]
    print(f"CPU, B=4 H=8 D=64 fp32 causal, forward+backward, median of {repeats}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    header = f"{'T':>6} | " + " | ".join(f"{n + ' s':>10} {n + ' MB':>11}" for n in names)
    print(header + " | sdpa speedup | sdpa memory ratio")
    print("-" * len(header) + "-" * 35)
    for t in CPU_LENGTHS:
        base = _child("none", t, repeats)["peak_kb"]
        results = {n: _child(n, t, repeats) for n in names}
        extra = {n: (r["peak_kb"] - base) / 1024 for n, r in results.items()}
        cells = " | ".join(f"{results[n]['seconds']:>10.3f} {extra[n]:>11.1f}" for n in names)
        speedup = results["naive"]["seconds"] / results["sdpa"]["seconds"]
        memory = extra["sdpa"] / max(extra["naive"], 1e-9)
        print(f"{t:>6} | {cells} | {speedup:>11.2f}x | {memory:>16.3f}x")


def _gpu_row(flash, b: int, h: int, t: int, d: int, causal: bool, layout: str) -> list[tuple[float, float]]:
    """TFLOP/s (forward, forward+backward) of triton_flash and of SDPA's flash backend on one shape. ``layout``
    "model": q, k, v are permuted views of one qkv tensor and the output is merged to (B, T, H*D), as in the
    transformer."""
    import torch
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if layout == "model":
        qkv = torch.randn(b, t, 3, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        leaves = [qkv]
    else:
        q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        leaves = [q, k, v]
    grad = torch.randn(b, t, h * d, device="cuda", dtype=torch.bfloat16)
    flops = 4 * b * h * t * t * d * (0.5 if causal else 1.0)

    def merged(out):
        return out.transpose(1, 2).reshape(b, t, h * d)

    def ours():
        return merged(flash(q, k, v, causal=causal))

    def sdpa():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return merged(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))

    row = []
    for fn in (ours, sdpa):
        fwd_ms = triton.testing.do_bench(fn)
        both_ms = triton.testing.do_bench(lambda fn=fn: fn().backward(grad), grad_to_none=leaves)
        row.append((flops / fwd_ms / 1e9, 3.5 * flops / both_ms / 1e9))  # backward = 2.5x forward
    return row


def gpu_table() -> None:
    import torch

    if not torch.cuda.is_available():
        print("GPU table: skipped (no CUDA device)")
        return
    flash = _kernel("triton_flash")
    tokens = 65536
    print(f"GPU {torch.cuda.get_device_name()}, bf16, B*T = {tokens} tokens per head group, H=16; TFLOP/s "
          f"(ratio = triton_flash / SDPA flash)")
    print(f"{'D':>4} {'T':>6} {'causal':>6} {'layout':>7} | {'fwd ours':>9} {'fwd sdpa':>9} {'ratio':>6} | "
          f"{'f+b ours':>9} {'f+b sdpa':>9} {'ratio':>6}")
    for d in (64, 128):
        for t in (1024, 2048, 4096, 8192, 16384):
            for causal in (False, True):
                for layout in ("contig", "model"):
                    (of, ob), (sf, sb) = _gpu_row(flash, max(1, tokens // t), 16, t, d, causal, layout)
                    print(f"{d:>4} {t:>6} {str(causal):>6} {layout:>7} | {of:>9.1f} {sf:>9.1f} {of / sf:>6.2f} | "
                          f"{ob:>9.1f} {sb:>9.1f} {ob / sb:>6.2f}")
                    torch.cuda.empty_cache()


def _compile_sm90(fn, pointers: dict, constants: dict, num_warps: int, num_stages: int) -> dict:
    """Compile one kernel for sm_90 without a GPU: every pointer and stride 16-aligned, as torch allocates them;
    registers and spill stack read from the cubin with cuobjdump."""
    import os
    import re
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {n: "constexpr" if n in constants else pointers.get(n, "fp32" if "scale" in n else "i32")
                 for n in fn.arg_names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
               if n in pointers or n.startswith("s") and signature[n] == "i32"}
    target = GPUTarget("cuda", 90, 32)
    options = triton.compiler.make_backend(target).parse_options({"num_warps": num_warps, "num_stages": num_stages})
    compiled = triton.compile(ASTSource(fn, signature, constants, aligned), target=target, options=options.__dict__)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True, text=True, check=True).stdout
    ptx = compiled.asm["ptx"]
    return {"regs": int(re.search(r"REG:(\d+)", usage).group(1)),
            "stack": int(re.search(r"STACK:(\d+)", usage).group(1)), "shared": compiled.metadata.shared,
            "wgmma": ptx.count("wgmma.mma_async"), "mma.sync": ptx.count("mma.sync")}


def sm90_table() -> None:
    from hookformer.plugins.attention import triton_flash as tf

    def types(dtype: str, **more) -> dict:
        pointers = {n: dtype for n in ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ")}
        return {**pointers, "LSE": "*fp32", "DELTA": "*fp32", "DQ_SPLITS": "*fp32", "KPM": "*i8", "DOC": "*i32",
                "RUNS": "*i32", **more}

    print("sm_90 compile (no launch); shared memory limit 232448 bytes. Causal; every bf16 configuration without "
          "padding or document masks, the first also with both; the fp32 configurations (IEEE dots)")
    print(f"{'kernel':>6} {'variant':>7} {'D':>4} {'BLOCK_M':>7} {'BLOCK_N':>7} {'warps':>5} {'stages':>6} | "
          f"{'regs':>4} {'stack':>5} {'shared':>7} {'wgmma':>5} {'mma.sync':>8}")
    for d in (64, 96, 128):
        block_d = max(16, 1 << (d - 1).bit_length())
        jobs = []
        for name, fn, table in (("fwd", tf._fwd_kernel.fn, tf.FWD_CONFIGS), ("bwd", tf._bwd_kernel.fn, tf.BWD_CONFIGS)):
            dq = {"DQ": "*fp32"} if name == "bwd" else {}  # the backward sums dQ in fp32 splits
            runs = [(c, "bf16", False, "*bf16") for c in tf.gpu_configs(table, block_d)]
            runs.insert(1, (runs[0][0], "masks", True, "*bf16"))
            runs += [(c, "fp32", False, "*fp32") for c in tf.FP32_CONFIGS[name]]
            for config, variant, masks, dtype in runs:
                constants = dict(CAUSAL=True, HAS_KPM=masks, HAS_DOC=masks, PRECISION="ieee", UPCAST=False,
                                 **config.kwargs)
                jobs.append((name, variant, fn, types(dtype, **dq), constants, config.num_warps, config.num_stages))
        for name, fn in (("delta", tf._delta_kernel), ("dq", tf._dq_kernel)):
            jobs.append((name, "bf16", fn, types("*bf16"), dict(BLOCK_M=64), 4, 1))
        for name, variant, fn, pointers, constants, warps, stages in jobs:
            r = _compile_sm90(fn, pointers, dict(HEAD_DIM=d, BLOCK_D=block_d, **constants), warps, stages)
            print(f"{name:>6} {variant:>7} {d:>4} {constants['BLOCK_M']:>7} {constants.get('BLOCK_N', ''):>7} "
                  f"{warps:>5} {stages:>6} | {r['regs']:>4} {r['stack']:>5} {r['shared']:>7} {r['wgmma']:>5} "
                  f"{r['mma.sync']:>8}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, t, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(measure_one(name, t, "cpu", repeats)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="CPU table only")
    parser.add_argument("--gpu", action="store_true", help="GPU table only")
    parser.add_argument("--sm90", action="store_true", help="compile the Triton kernels for sm_90 only")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.sm90:
        sm90_table()
        return
    if not args.gpu:
        cpu_table(args.repeats)
    if not args.cpu:
        gpu_table()


if __name__ == "__main__":
    main()
