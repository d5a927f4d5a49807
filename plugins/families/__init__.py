"""Hugging Face model families (stage ``family``) for ``hookformer import`` and ``export``: see
hookformer.core.interop. Registered by the built-in models plugin (plugins/models/__init__.py)."""

from __future__ import annotations

from hookformer.core.interop import Geometry

#: What every built-in family maps onto: the ``transformer`` model part, read with the ``hf_tokenizer`` part.
TRANSFORMER = {"model": "transformer", "tokenizer": "hf_tokenizer"}


def transformer_geometry(options) -> Geometry:
    """The head layout of the transformer part's options (its fused q/k/v projection is split by it)."""
    return Geometry(options.n_head, options.kv_heads, options.head_dim)
