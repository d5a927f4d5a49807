"""The bf16 policy: ``train.bf16`` autocast is used where the device multiplies bf16 natively, and refused, with the
reason, on a CPU that would run it emulated (several times slower than fp32, so never what was asked for)."""

from __future__ import annotations

import platform

import torch

from hookformer.core.errors import ConfigError


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions that torch's CPU kernels use (x86: AVX512-BF16 or AMX; ARM:
    the BF16 extension, which is what oneDNN's bf16 check tests there; on x86 that check only asks for AVX-512)."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_refusal(device: str, native_bf16: bool, capability: str) -> str | None:
    """Why ``train.bf16`` must not run on ``device`` (None: it may). ``native_bf16`` and ``capability`` describe the
    CPU (:func:`cpu_has_native_bf16`, ``torch.backends.cpu.get_cpu_capability()``); GPUs are not judged here."""
    if device != "cpu" or native_bf16:
        return None
    return (f"train.bf16 is true, but this CPU ({capability}) has no native bf16 matrix multiply (no AVX512-BF16 or "
            "AMX, no ARM BF16): bf16 autocast would run emulated kernels, several times slower than fp32. Set "
            "train.bf16=false, or train on a device with native bf16.")


def check_bf16(device: str, bf16: bool) -> None:
    """ConfigError when ``train.bf16`` is asked for on a device that would run it emulated."""
    if bf16 and (reason := bf16_refusal(device, device != "cpu" or cpu_has_native_bf16(),
                                        torch.backends.cpu.get_cpu_capability())):
        raise ConfigError(reason)
