"""torch.nn.functional.scaled_dot_product_attention, with the causal diagonal aligned like the reference. With no
padding or document mask it runs SDPA's own causal path (the fused kernels); otherwise it passes the reference's
boolean mask as ``attn_mask``."""

from __future__ import annotations

import torch.nn.functional as F

from hookformer.plugins.attention.naive import allowed_keys


def sdpa_attention(q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None, document_ids=None):
    t_q, t_k = q.shape[-2], k.shape[-2]
    if key_padding_mask is None and document_ids is None and (not causal or t_q == t_k):
        # is_causal aligns the diagonal to the start; it is only the same mask when T_q == T_k.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
    allowed = allowed_keys(q, k, causal, key_padding_mask, document_ids)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)
    # Rows with no visible key come back as NaN from SDPA; the reference defines them as zeros.
    return out.nan_to_num(0.0)


def build(options, ctx):
    return sdpa_attention
