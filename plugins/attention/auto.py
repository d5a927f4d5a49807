"""``attention.name: auto``: for each kind of call, the highest-priority registered kernel that can run it.

Candidates are every attention part in the catalog that declares capabilities and computes plain attention (no
``variant``), built-in or third-party alike, ordered by their declared ``PartSpec.priority``; a new kernel joins selection by registering, with no edit anywhere else. A
kernel that names the call's device or device/dtype in ``prefer_others_on`` (triton_flash: the CPU interpreter, and
fp32 on CUDA, where its exact dot products run without tensor cores) comes after every other capable kernel."""

from __future__ import annotations

import logging

from hookformer.core.capabilities import AttentionCall, describe, documents
from hookformer.core.errors import HookformerError

log = logging.getLogger(__name__)


class AutoKernel:
    def __init__(self, ctx):
        self.ctx = ctx
        # Only kernels that compute plain attention: a variant (a window, a bias) would change the results.
        entries = [e for name, e in ctx.catalog.stages()["attention"].items()
                   if name != "auto" and e.spec.capabilities is not None and e.capabilities().variant is None]
        self.candidates = sorted(entries, key=lambda e: (-e.spec.priority, e.spec.name))
        self._chosen: dict[AttentionCall, object] = {}
        self._built: dict[str, object] = {}

    def select(self, call: AttentionCall):
        """(name, kernel) of the kernel chosen for ``call``; every candidate's reasons when none can run it."""
        rejected = []
        for entry in sorted(self.candidates, key=lambda e: _prefers_others(e, call)):  # stable: priority order kept
            reasons = entry.capabilities().not_supported_reasons(call)
            if not reasons:
                name = entry.spec.name
                if name not in self._built:
                    self._built[name] = entry.build(entry.options_model()(), self.ctx)
                    log.info("attention auto: %s for %s", name, describe(call))
                return name, self._built[name]
            rejected.append(f"{entry.spec.name}: " + ", ".join(reasons))
        raise HookformerError(f"attention auto: no registered kernel can run this call ({describe(call)}). "
                              + "; ".join(rejected) + ".")

    def __call__(self, q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None, document_ids=None):
        call = AttentionCall.of(q, k, causal=causal, key_padding_mask=key_padding_mask, dropout_p=dropout_p,
                                document_ids=document_ids)
        kernel = self._chosen.get(call)
        if kernel is None:
            kernel = self._chosen[call] = self.select(call)[1]
        return kernel(q, k, v, causal=causal, key_padding_mask=key_padding_mask, dropout_p=dropout_p, scale=scale,
                      **documents(document_ids))


def _prefers_others(entry, call: AttentionCall) -> bool:
    prefers = getattr(entry.capabilities(), "prefers_others", None)  # capabilities written without the field
    return bool(prefers and prefers(call))


def build(options, ctx) -> AutoKernel:
    return AutoKernel(ctx)
