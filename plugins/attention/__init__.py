"""Built-in attention kernels, each with the capabilities the engine checks every call against."""

from hookformer.core.capabilities import AttentionCapabilities, Tolerance
from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__

NAIVE = AttentionCapabilities(document_mask=True)
SDPA = AttentionCapabilities(deterministic=False, document_mask=True)
TRITON_FLASH = AttentionCapabilities(
    devices=frozenset({"cuda", "cpu"}),
    dtypes=frozenset({"float32", "float16", "bfloat16"}),
    head_dim_min=16,
    head_dim_max=128,
    dropout=False,
    document_mask=True,
    deterministic=True,
    needs_interpreter_on_cpu=True,
    # The interpreter is for tests; fp32 takes IEEE dot products without tensor cores (never silently TF32), where
    # SDPA's fp32 kernels are faster.
    prefer_others_on=frozenset({"cpu", "cuda/float32"}),
    tolerances={
        "float32": Tolerance(atol=1e-5, rtol=1e-4),
        "float16": Tolerance(atol=5e-3, rtol=5e-3),
        "bfloat16": Tolerance(atol=3e-2, rtol=3e-2),
    },
)


@hookimpl
def hookformer_parts():
    return [
        PartSpec("attention", "naive", "softmax(QK^T * scale) V written out: the reference every kernel is checked "
                 "against", factory=f"{_HERE}.naive:build", capabilities=NAIVE, priority=0),
        PartSpec("attention", "sdpa", "torch.nn.functional.scaled_dot_product_attention",
                 factory=f"{_HERE}.sdpa:build", capabilities=SDPA, priority=20),
        PartSpec("attention", "triton_flash", "FlashAttention-2 forward and backward written in Triton (online "
                 "softmax, no T x T matrix); CUDA, or CPU under TRITON_INTERPRET=1", factory=f"{_HERE}.triton_flash:build",
                 options=f"{_HERE}.triton_flash:TritonFlashOptions", capabilities=TRITON_FLASH, priority=30),
        PartSpec("attention", "auto", "picks, for each call, the highest-priority registered kernel whose "
                 "capabilities cover it", factory=f"{_HERE}.auto:build"),
    ]
