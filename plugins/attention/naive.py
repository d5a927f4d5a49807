"""The reference kernel: attention written out as softmax(Q K^T * scale) V, materializing the score matrix; causal,
padding and document masks are one boolean matrix of the keys each query may see."""

from __future__ import annotations

import functools
import math

import torch


def causal_mask(t_q: int, t_k: int, device) -> torch.Tensor:
    """Bool (T_q, T_k), True where query i may see key j; the diagonal is aligned to the end (cached decoding)."""
    offset = t_k - t_q
    q_pos = torch.arange(t_q, device=device)[:, None] + offset
    return torch.arange(t_k, device=device)[None, :] <= q_pos


def same_document(document_ids, t_q: int) -> torch.Tensor:
    """Bool (B, 1, T_q, T_k), True where query i and key j belong to the same document. ``document_ids`` (B, T_k)
    labels the keys; the queries are the last T_q of them (aligned to the end, as the causal diagonal)."""
    return document_ids[:, None, -t_q:, None] == document_ids[:, None, None, :]


def allowed_keys(q, k, causal: bool, key_padding_mask, document_ids) -> torch.Tensor | None:
    """Bool, broadcastable to (B, H, T_q, T_k): where query i may see key j; None when every key is visible."""
    masks = []
    if causal:
        masks.append(causal_mask(q.shape[-2], k.shape[-2], q.device))
    if key_padding_mask is not None:
        masks.append(key_padding_mask[:, None, None, :].bool())
    if document_ids is not None:
        masks.append(same_document(document_ids, q.shape[-2]))
    return functools.reduce(torch.logical_and, masks) if masks else None


def naive_attention(q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None, document_ids=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # Scores and softmax in at least fp32, whatever the input dtype: this is the accuracy reference.
    compute = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.to(compute) * scale, k.to(compute).transpose(-2, -1))
    allowed = allowed_keys(q, k, causal, key_padding_mask, document_ids)
    if allowed is not None:
        scores.masked_fill_(~allowed, float("-inf"))  # in place: matmul's backward does not need its output
    weights = torch.softmax(scores, dim=-1)
    if allowed is not None:
        sees_a_key = allowed.any(dim=-1, keepdim=True)
        if not bool(sees_a_key.all()):  # a query that sees no key at all gets zeros, not NaN
            weights = weights.masked_fill(~sees_a_key, 0.0)
    if dropout_p > 0.0:
        weights = torch.nn.functional.dropout(weights, p=dropout_p)
    return torch.matmul(weights.to(v.dtype), v)


def build(options, ctx):
    return naive_attention
