"""What an attention kernel can run, as data, and why it cannot run a given call.

A kernel declares :class:`AttentionCapabilities` in its ``PartSpec(capabilities=...)``. The engine checks every call
against them (an explicitly named kernel that cannot run its inputs fails with all of its reasons; never a silent
change of meaning), ``attention.name: auto`` picks the highest-priority kernel with no reason against the call
(kernels that declare another kernel faster for the call's device and dtype last), and
the conformance kit (``hookformer.testing``) tests a kernel over exactly the cases its capabilities claim, with the
tolerances it declares. Nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class AttentionCall:
    """The properties of one attention call that decide whether a kernel can run it."""

    device: str  # "cpu", "cuda", ...
    dtype: str  # "float32", "float16", "bfloat16", "float64"
    head_dim: int
    t_q: int
    t_k: int
    causal: bool
    key_padding_mask: bool
    dropout: bool
    document_mask: bool = False  # document_ids given: attention stays inside each packed document

    @classmethod
    def of(cls, q, k, *, causal, key_padding_mask, dropout_p, document_ids=None) -> "AttentionCall":
        return cls(q.device.type, str(q.dtype).removeprefix("torch."), q.shape[-1], q.shape[-2], k.shape[-2],
                   bool(causal), key_padding_mask is not None, dropout_p > 0.0, document_ids is not None)


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    atol: float
    rtol: float


class AttentionCapabilities(BaseModel):
    """What a kernel supports. Defaults describe a kernel that takes everything (like the reference), except
    ``document_mask``, which a kernel declares to opt in: only such a kernel is ever given ``document_ids``, so a
    kernel written before document masks existed keeps working (and is refused for a call that needs them).

    ``document_ids`` is an integer tensor (B, T_k): the document each key belongs to. Query i is the key at
    position i + T_k - T_q (aligned to the end, as the causal diagonal) and sees only keys of its own document,
    on top of the causal and padding masks: packed documents do not attend to each other.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: frozenset[str] = Field(frozenset({"cpu", "cuda"}), description="torch device types")
    dtypes: frozenset[str] = Field(frozenset({"float32", "float16", "bfloat16", "float64"}))
    head_dim_min: int = 1
    head_dim_max: int = 1 << 16
    causal: bool = True
    key_padding_mask: bool = True
    unequal_lengths: bool = Field(True, description="T_q != T_k (causal diagonal aligned to the end)")
    dropout: bool = True
    document_mask: bool = Field(False, description="document_ids (B, T_k): attention only between tokens of the "
                                "same packed document")
    deterministic: bool = True
    needs_interpreter_on_cpu: bool = Field(False, description="runs on CPU only under TRITON_INTERPRET=1")
    prefer_others_on: frozenset[str] = Field(frozenset(), description='device types ("cpu") or device/dtype pairs '
                                             '("cuda/float32") where the kernel runs but is not the fastest exact '
                                             "choice: auto takes any other capable kernel there first")
    variant: str | None = Field(None, description="None: the kernel computes exactly softmax(QK^T * scale) V with "
                                "the masks it is given, as the reference does. A name (\"sliding_window\", "
                                "\"alibi\", ...): it computes another function. auto never picks a variant (only a "
                                "config naming it does), and its conformance check needs the author's reference")
    tolerances: dict[str, Tolerance] = Field(
        default_factory=dict, description="per dtype: the error against the fp64 reference, values and gradients")

    def not_supported_reasons(self, call: AttentionCall) -> list[str]:
        """Readable reasons why ``call`` cannot run on this kernel; empty when it can."""
        reasons = []
        if call.device not in self.devices:
            reasons.append(f"device {call.device} not supported (supports {', '.join(sorted(self.devices))})")
        elif call.device == "cpu" and self.needs_interpreter_on_cpu and os.environ.get(
                "TRITON_INTERPRET", "0") in ("", "0"):
            reasons.append("on CPU it runs only under Triton's interpreter: set TRITON_INTERPRET=1 (slow; for tests)")
        if call.dtype not in self.dtypes:
            reasons.append(f"dtype {call.dtype} not supported (supports {', '.join(sorted(self.dtypes))})")
        if not self.head_dim_min <= call.head_dim <= self.head_dim_max:
            reasons.append(f"head dim {call.head_dim} outside {self.head_dim_min}..{self.head_dim_max}")
        if call.causal and not self.causal:
            reasons.append("causal attention not supported")
        if call.key_padding_mask and not self.key_padding_mask:
            reasons.append("key padding masks not supported")
        if call.t_q != call.t_k and not self.unequal_lengths:
            reasons.append(f"T_q != T_k ({call.t_q} vs {call.t_k}) not supported")
        if call.dropout and not self.dropout:
            reasons.append("attention dropout not supported (turn the model's attention dropout off, or choose another "
                           "kernel)")
        if call.document_mask and not self.document_mask:
            reasons.append("document masks not supported (document_ids keep attention inside each packed document; "
                           "turn the data's document masks off, or choose another kernel)")
        elif call.document_mask and call.t_q > call.t_k:
            reasons.append(f"a document mask needs T_q <= T_k (got {call.t_q} vs {call.t_k}): document_ids label "
                           f"the keys, and the queries are the last T_q of them")
        return reasons

    def prefers_others(self, call: AttentionCall) -> bool:
        return bool({call.device, f"{call.device}/{call.dtype}"} & self.prefer_others_on)

    def tolerance(self, dtype: str) -> Tolerance:
        if dtype in self.tolerances:
            return self.tolerances[dtype]
        return DEFAULT_TOLERANCES.get(dtype, Tolerance(atol=1e-2, rtol=1e-2))


DEFAULT_TOLERANCES = {
    "float64": Tolerance(atol=1e-10, rtol=1e-8),
    "float32": Tolerance(atol=2e-5, rtol=2e-4),
    "float16": Tolerance(atol=2e-3, rtol=2e-3),
    "bfloat16": Tolerance(atol=2e-2, rtol=2e-2),
}


def describe(call: AttentionCall) -> str:
    return (f"{call.device} {call.dtype}, head dim {call.head_dim}, T_q {call.t_q}, T_k {call.t_k}, "
            f"causal {call.causal}, padding mask {call.key_padding_mask}, dropout {call.dropout}, "
            f"document mask {call.document_mask}")


class CheckedKernel:
    """A kernel whose every call is checked against its capabilities first: a call it does not cover fails with
    all of its reasons instead of running with a different meaning. Each distinct kind of call is checked once (under
    torch.compile: once per traced graph)."""

    def __init__(self, name: str, kernel, capabilities: AttentionCapabilities):
        self.name = name
        self.kernel = kernel
        self.capabilities = capabilities
        self._accepted: set[AttentionCall] = set()

    def __call__(self, q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None, document_ids=None):
        call = AttentionCall.of(q, k, causal=causal, key_padding_mask=key_padding_mask, dropout_p=dropout_p,
                                document_ids=document_ids)
        if _compiling():
            # Under torch.compile the check runs while the graph is traced, and the graph's guards on device,
            # dtype and shapes retrace it for another kind of call; remembering calls here would break the graph.
            self._check(call)
        elif call not in self._accepted:
            self._check(call)
            self._accepted.add(call)
        return self.kernel(q, k, v, causal=causal, key_padding_mask=key_padding_mask, dropout_p=dropout_p,
                           scale=scale, **documents(document_ids))

    def _check(self, call: AttentionCall) -> None:
        reasons = self.capabilities.not_supported_reasons(call)
        if reasons:
            from hookformer.core.errors import HookformerError

            raise HookformerError(f'attention kernel "{self.name}" cannot run this call ({describe(call)}): '
                                  + "; ".join(reasons) + ". Choose another attention.name, or auto.")


def documents(document_ids) -> dict:
    """The ``document_ids`` keyword for a kernel call: only present when given, so kernels that do not declare
    document masks (and have no such argument) are called exactly as before."""
    return {} if document_ids is None else {"document_ids": document_ids}


def _compiling() -> bool:
    import torch  # only called with tensors in hand: torch is imported already

    return torch.compiler.is_compiling()
