"""Attention conformance: values and gradients against the fp64 reference, within the kernel's declared tolerances."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from hookformer.core.capabilities import AttentionCall, AttentionCapabilities
from hookformer.plugins.attention.naive import naive_attention

LENGTHS = (1, 7, 64, 100)
HEAD_DIMS = (16, 32, 64)
UNEQUAL = ((3, 9), (9, 3), (64, 100))
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class AttentionCase:
    t_q: int
    t_k: int
    head_dim: int
    causal: bool
    padded: bool
    dtype: str
    documents: bool = False  # document_ids split each sequence into packed documents

    def __str__(self) -> str:
        masks = ("-padded" if self.padded else "") + ("-documents" if self.documents else "")
        return f"{self.dtype}-Tq{self.t_q}-Tk{self.t_k}-D{self.head_dim}-{'causal' if self.causal else 'full'}{masks}"


def attention_cases(capabilities: AttentionCapabilities, *, lengths=LENGTHS, head_dims=HEAD_DIMS,
                    dtypes=DTYPES, device: str = "cpu") -> list[AttentionCase]:
    """The cases a kernel with ``capabilities`` claims to run on ``device``: every length at the first head dim,
    every head dim at one length, T_q != T_k, each causal or not, with and without a padding mask, in the first
    dtype; the other dtypes on a smaller grid. For a kernel with document masks, the same with document ids at the
    first head dim, and on the smaller grid also with a padding mask. Cases the capabilities exclude are left out,
    never expected to fail."""
    causal_modes = (False, True) if capabilities.causal else (False,)
    mask_modes = (False, True) if capabilities.key_padding_mask else (False,)
    document_modes = (False, True) if capabilities.document_mask else (False,)
    dims = [d for d in head_dims if capabilities.head_dim_min <= d <= capabilities.head_dim_max]
    kinds = [d for d in dtypes if d in capabilities.dtypes]
    if not dims or not kinds:
        return []
    shapes = [(t, t, dims[0]) for t in lengths] + [(lengths[-2], lengths[-2], d) for d in dims[1:]]
    shapes += [(t_q, t_k, dims[0]) for t_q, t_k in UNEQUAL]
    small_grid = [(lengths[1], lengths[1], dims[0]), (*UNEQUAL[-1], dims[-1])]
    cases = []
    for index, dtype in enumerate(kinds):
        for t_q, t_k, d in shapes if index == 0 else small_grid:
            for causal, padded, documents in itertools.product(causal_modes, mask_modes, document_modes):
                if documents and (t_q, t_k, d) not in small_grid and (padded or d != dims[0]):
                    continue  # document ids with every length at the first head dim; with padding on the small grid
                call = AttentionCall(device, dtype, d, t_q, t_k, causal, padded, False, documents)
                if not _excluded(capabilities, call):
                    cases.append(AttentionCase(t_q, t_k, d, causal, padded, dtype, documents))
    return cases


def _excluded(capabilities: AttentionCapabilities, call: AttentionCall) -> bool:
    # The device check is left to the caller: a kernel's cases are listed even where its device is missing.
    return any(not reason.startswith(("device", "on CPU")) for reason in capabilities.not_supported_reasons(call))


def _inputs(case: AttentionCase, device: str, seed: int):
    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, case.dtype)
    shape_q, shape_k = (2, 3, case.t_q, case.head_dim), (2, 3, case.t_k, case.head_dim)
    q, k, v = (torch.randn(shape, generator=generator).to(device, dtype).requires_grad_()
               for shape in (shape_q, shape_k, shape_k))
    mask = None
    if case.padded:
        mask = torch.ones(2, case.t_k, dtype=torch.bool)
        mask[1, max(1, case.t_k * 2 // 3):] = False  # the second sequence ends in padding
        mask = mask.to(device)
    documents = None
    if case.documents:  # the first sequence holds three documents, the second two (the first of them short)
        position = torch.arange(case.t_k)
        documents = torch.stack([position * 3 // case.t_k, (position >= max(1, case.t_k // 4)).long()]).to(device)
    grad = torch.randn(shape_q, generator=generator).to(device, dtype)
    return q, k, v, mask, documents, grad


def check_attention_kernel(kernel, capabilities: AttentionCapabilities, case: AttentionCase, *, device: str = "cpu",
                           seed: int = 0, scale: float | None = None, reference=None) -> None:
    """Run ``kernel`` on ``case`` and compare output and dQ, dK, dV with the reference computed in fp64 from the same
    inputs. Raises AssertionError naming the case, the tensor and the tolerance when they differ.

    ``reference``: the function the kernel computes, written plainly (same signature as a kernel; it is run in fp64).
    The default is softmax attention; a kernel that declares a ``variant`` must give its own."""
    if reference is None and capabilities.variant is not None:
        raise ValueError(f"the kernel declares variant {capabilities.variant!r}: pass reference=, the function it "
                         f"computes written plainly, to check it against")
    reference = reference or naive_attention
    q, k, v, mask, documents, grad = _inputs(case, device, seed)
    kwargs = dict(causal=case.causal, key_padding_mask=mask, scale=scale)
    if documents is not None:  # only then: a kernel without document masks has no document_ids argument
        kwargs["document_ids"] = documents
    out = kernel(q, k, v, **kwargs)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    ref_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = reference(*ref_inputs, **kwargs)
    want = (ref, *torch.autograd.grad(ref, ref_inputs, grad.double()))
    tolerance = capabilities.tolerance(case.dtype)
    for name, actual, expected in zip(("output", "dq", "dk", "dv"), got, want):
        assert actual.dtype == q.dtype, f"{case}: {name} has dtype {actual.dtype}, expected {q.dtype}"
        torch.testing.assert_close(actual.double(), expected, atol=tolerance.atol, rtol=tolerance.rtol,
                                   msg=lambda m, n=name: f"{case}: {n} differs from the reference "
                                                         f"(atol {tolerance.atol}, rtol {tolerance.rtol}): {m}")
