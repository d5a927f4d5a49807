"""The bf16 policy (core/precision.py): bf16 autocast only where the CPU multiplies bf16 natively."""

import pytest
import torch

from hookformer.core.errors import ConfigError
from hookformer.core.precision import bf16_refusal, check_bf16, cpu_has_native_bf16


def test_bf16_is_refused_with_the_reason_on_a_cpu_without_native_bf16():
    reason = bf16_refusal("cpu", native_bf16=False, capability="AVX2")
    assert reason is not None
    assert "AVX2" in reason and "emulated" in reason and "train.bf16=false" in reason


def test_bf16_is_accepted_on_a_cpu_with_native_bf16():
    assert bf16_refusal("cpu", native_bf16=True, capability="AVX512") is None


def test_bf16_on_a_gpu_is_not_judged_by_the_cpu():
    assert bf16_refusal("cuda", native_bf16=False, capability="AVX2") is None


def test_the_run_check_follows_this_cpus_capability():
    if cpu_has_native_bf16():
        check_bf16("cpu", True)
    else:
        with pytest.raises(ConfigError, match=torch.backends.cpu.get_cpu_capability()):
            check_bf16("cpu", True)


def test_fp32_is_never_refused():
    check_bf16("cpu", False)
