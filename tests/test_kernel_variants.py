"""Kernels that compute something other than plain attention (a window, a bias) say so in their capabilities:
``auto`` never picks them, and the conformance kit checks them against the function their author writes out."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from hookformer.core.capabilities import AttentionCall, AttentionCapabilities
from hookformer.core.parts import BuildContext, PartSpec
from hookformer.plugins.attention.auto import AutoKernel
from hookformer.registry.catalog import Catalog, CatalogEntry
from hookformer.registry.discovery import PluginOrigin
from hookformer.testing import attention_cases, check_attention_kernel

WINDOW = 4


def windowed_reference(q, k, v, *, causal=False, key_padding_mask=None, scale=None, dropout_p=0.0):
    """Causal sliding-window attention written out (causal whatever the flag): query i sees keys i - WINDOW + 1 .. i."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    i = torch.arange(q.shape[-2])[:, None]
    j = torch.arange(k.shape[-2])[None, :]
    scores = (q @ k.transpose(-2, -1) * scale).masked_fill((j > i) | (i - j >= WINDOW), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def windowed_kernel(q, k, v, **kwargs):
    """The kernel under test: the same function computed in the input's dtype."""
    return windowed_reference(q, k, v, **kwargs)


WINDOWED = AttentionCapabilities(variant="sliding_window", causal=True, key_padding_mask=False,
                                 unequal_lengths=False, dropout=False, dtypes=frozenset({"float32"}))


def catalog_with_windowed(variant: str | None) -> Catalog:
    """The installed catalog plus a windowed kernel at a higher priority than every built-in."""
    installed = Catalog.load()
    origin = PluginOrigin("windowed", "tests", "hookformer-windowed", "0.1.0")
    spec = PartSpec("attention", "windowed", "causal sliding-window attention", factory=lambda o, c: windowed_kernel,
                    capabilities=WINDOWED.model_copy(update={"variant": variant}), priority=1000)
    stages = {stage: dict(entries) for stage, entries in installed.stages().items()}
    stages["attention"]["windowed"] = CatalogEntry(spec, origin)
    return Catalog(stages)


def test_auto_never_picks_a_kernel_that_computes_a_variant_of_attention():
    call = AttentionCall("cpu", "float32", 16, 8, 8, True, False, False)
    assert AutoKernel(BuildContext(run_dir=".", catalog=catalog_with_windowed("sliding_window"))).select(call)[0] \
        == "sdpa"
    # The same kernel declared as plain attention would be chosen: the variant is what keeps it out.
    assert AutoKernel(BuildContext(run_dir=".", catalog=catalog_with_windowed(None))).select(call)[0] == "windowed"


def test_the_kit_checks_a_variant_against_its_authors_reference_and_refuses_to_guess_one():
    cases = attention_cases(WINDOWED)
    assert cases
    for case in cases:
        check_attention_kernel(windowed_kernel, WINDOWED, case, reference=windowed_reference)
    with pytest.raises(ValueError, match="declares variant 'sliding_window': pass reference="):
        check_attention_kernel(windowed_kernel, WINDOWED, cases[0])
    # Against plain attention the kit sees the difference once a sequence is longer than the window.
    longer = next(case for case in cases if case.t_k > WINDOW)
    plain = WINDOWED.model_copy(update={"variant": None})
    with pytest.raises(AssertionError, match="differs from the reference"):
        check_attention_kernel(windowed_kernel, plain, longer)


def test_the_conformance_fixture_builds_the_kernel_with_validated_options(attention_conformance):
    assert attention_conformance("naive", options={}) > 0
    with pytest.raises(ValidationError, match="window"):
        attention_conformance("sdpa", options={"window": 4})
