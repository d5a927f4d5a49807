"""The reference kernel: attention written out as softmax(Q K^T * scale) V, materializing the score matrix."""

from __future__ import annotations

import math

import torch


def causal_mask(t_q: int, t_k: int, device) -> torch.Tensor:
    """Bool (T_q, T_k), True where query i may see key j; the diagonal is aligned to the end (cached decoding)."""
    offset = t_k - t_q
    q_pos = torch.arange(t_q, device=device)[:, None] + offset
    return torch.arange(t_k, device=device)[None, :] <= q_pos


def naive_attention(q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # Scores and softmax in at least fp32, whatever the input dtype: this is the accuracy reference.
    compute = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.to(compute) * scale, k.to(compute).transpose(-2, -1))
    allowed = causal_mask(q.shape[-2], k.shape[-2], q.device) if causal else None
    if key_padding_mask is not None:
        keys = key_padding_mask[:, None, None, :].bool()
        allowed = keys if allowed is None else allowed & keys
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
