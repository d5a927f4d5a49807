"""FlashAttention-2 in Triton: forward and backward kernels with online softmax; the T x T score matrix is never
materialized.

Supports causal and non-causal attention, key padding masks (B, T_k), document masks (``document_ids`` (B, T_k):
attention only inside each packed document; key blocks are masked, not skipped, by document), any T_q and T_k (the
causal diagonal aligned to the end when they differ), head dims 16 to 128 (any size: padded to the next power of
two inside the kernel), fp32 / fp16 / bf16 and a softmax scale. Dropout is not supported (declared in the capabilities, so it is refused, never
ignored). The backward pass is two kernels (dK/dV over key blocks, dQ over query blocks) with no atomics, so it is
deterministic. Numerics: scores, softmax statistics and accumulators are fp32; fp32 inputs use IEEE dot products
(no TF32) unless ``allow_tf32`` is set.

On a machine without a GPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the
tests check them. The interpreter of triton 3.9 computes bf16 ``tl.dot`` wrongly, so there the operands of every dot
product are upcast to fp32 (``UPCAST``): interpreted bf16 results are therefore slightly more accurate than on a GPU.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from pydantic import Field

from hookformer.core.parts import PartOptions

LOG2E = 1.4426950408889634


class TritonFlashOptions(PartOptions):
    allow_tf32: bool = Field(False, description="let fp32 dot products use TF32 tensor cores (faster, ~1e-3 error)")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
             HAS_DOC: tl.constexpr):
    """(M, N) bool: query offs_m may attend to key offs_n."""
    ok = (offs_m[:, None] < T_Q) & (offs_n[None, :] < T_K)
    if CAUSAL:
        ok = ok & ((offs_m[:, None] + (T_K - T_Q)) >= offs_n[None, :])
    if HAS_KPM:
        keep = tl.load(KPM + offs_n, mask=offs_n < T_K, other=0)
        ok = ok & (keep[None, :] != 0)
    if HAS_DOC:  # document ids label the keys; query i is key i + T_K - T_Q
        doc_q = tl.load(DOC + offs_m + (T_K - T_Q), mask=offs_m < T_Q, other=-1)
        doc_k = tl.load(DOC + offs_n, mask=offs_n < T_K, other=-2)
        ok = ok & (doc_q[:, None] == doc_k[None, :])
    return ok


@triton.jit
def _causal_end(start_m, T_Q, T_K, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """One past the last key a query block can see."""
    if CAUSAL:
        return tl.minimum(T_K, (start_m + 1) * BLOCK_M + (T_K - T_Q))
    return T_K


@triton.jit
def _rows(ptr, rows, n_rows, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """The (rows, BLOCK_D) tile of a row-major (n_rows, HEAD_DIM) matrix; rows past the end and the padding
    columns up to BLOCK_D read as zeros."""
    cols = tl.arange(0, BLOCK_D)
    return tl.load(ptr + rows[:, None] * HEAD_DIM + cols[None, :],
                   mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM), other=0.0)


@triton.jit
def _rows_t(ptr, rows, n_rows, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """The same tile transposed: (BLOCK_D, rows)."""
    cols = tl.arange(0, BLOCK_D)
    return tl.load(ptr + rows[None, :] * HEAD_DIM + cols[:, None],
                   mask=(rows[None, :] < n_rows) & (cols[:, None] < HEAD_DIM), other=0.0)


@triton.jit
def _store_rows(ptr, tile, rows, n_rows, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    tl.store(ptr + rows[:, None] * HEAD_DIM + cols[None, :], tile.to(ptr.dtype.element_ty),
             mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM))


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, KPM, DOC, H, T_Q, T_K, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr,
                UPCAST: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q += bh * T_Q * HEAD_DIM
    O += bh * T_Q * HEAD_DIM
    K += bh * T_K * HEAD_DIM
    V += bh * T_K * HEAD_DIM
    KPM += (bh // H) * T_K
    DOC += (bh // H) * T_K
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _rows(Q, offs_m, T_Q, HEAD_DIM, BLOCK_D)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, _causal_end(start_m, T_Q, T_K, BLOCK_M, CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_t = _rows_t(K, offs_n, T_K, HEAD_DIM, BLOCK_D)
        v = _rows(V, offs_n, T_K, HEAD_DIM, BLOCK_D)
        s = _dot(q, k_t, PRECISION, UPCAST) * qk_scale  # log2 domain
        s = tl.where(_visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, CAUSAL, HAS_KPM, HAS_DOC), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new
    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    _store_rows(O, acc / l_safe[:, None], offs_m, T_Q, HEAD_DIM, BLOCK_D)  # no visible key: zeros, as the reference
    tl.store(LSE + bh * T_Q + offs_m, tl.where(seen, m_i + tl.log2(l_safe), float("inf")), mask=offs_m < T_Q)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, KPM, DOC, H, T_Q, T_K, qk_scale, sm_scale,
                     HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr,
                     UPCAST: tl.constexpr):
    start_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q += bh * T_Q * HEAD_DIM
    DO += bh * T_Q * HEAD_DIM
    K += bh * T_K * HEAD_DIM
    V += bh * T_K * HEAD_DIM
    DK += bh * T_K * HEAD_DIM
    DV += bh * T_K * HEAD_DIM
    LSE += bh * T_Q
    DELTA += bh * T_Q
    KPM += (bh // H) * T_K
    DOC += (bh // H) * T_K
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _rows(K, offs_n, T_K, HEAD_DIM, BLOCK_D)
    v = _rows(V, offs_n, T_K, HEAD_DIM, BLOCK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    first_m = 0
    if CAUSAL:  # queries before this one cannot see any key of the block
        first_m = tl.maximum(0, start_n * BLOCK_N - (T_K - T_Q)) // BLOCK_M * BLOCK_M
    for start_m in range(first_m, T_Q, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_t = _rows_t(Q, offs_m, T_Q, HEAD_DIM, BLOCK_D)
        do_t = _rows_t(DO, offs_m, T_Q, HEAD_DIM, BLOCK_D)
        lse = tl.load(LSE + offs_m, mask=offs_m < T_Q, other=float("inf"))
        delta = tl.load(DELTA + offs_m, mask=offs_m < T_Q, other=0.0)
        p_t = tl.exp2(_dot(k, q_t, PRECISION, UPCAST) * qk_scale - lse[None, :])  # (N, M)
        p_t = tl.where(tl.trans(_visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, CAUSAL, HAS_KPM, HAS_DOC)), p_t, 0.0)
        dv += _dot(p_t.to(do_t.dtype), tl.trans(do_t), PRECISION, UPCAST)
        ds_t = p_t * (_dot(v, do_t, PRECISION, UPCAST) - delta[None, :])
        dk += _dot(ds_t.to(q_t.dtype), tl.trans(q_t), PRECISION, UPCAST)
    _store_rows(DK, dk * sm_scale, offs_n, T_K, HEAD_DIM, BLOCK_D)
    _store_rows(DV, dv, offs_n, T_K, HEAD_DIM, BLOCK_D)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, KPM, DOC, H, T_Q, T_K, qk_scale, sm_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr,
                   UPCAST: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q += bh * T_Q * HEAD_DIM
    DO += bh * T_Q * HEAD_DIM
    DQ += bh * T_Q * HEAD_DIM
    K += bh * T_K * HEAD_DIM
    V += bh * T_K * HEAD_DIM
    KPM += (bh // H) * T_K
    DOC += (bh // H) * T_K
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _rows(Q, offs_m, T_Q, HEAD_DIM, BLOCK_D)
    do = _rows(DO, offs_m, T_Q, HEAD_DIM, BLOCK_D)
    lse = tl.load(LSE + bh * T_Q + offs_m, mask=offs_m < T_Q, other=float("inf"))
    delta = tl.load(DELTA + bh * T_Q + offs_m, mask=offs_m < T_Q, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, _causal_end(start_m, T_Q, T_K, BLOCK_M, CAUSAL), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_t = _rows_t(K, offs_n, T_K, HEAD_DIM, BLOCK_D)
        v_t = _rows_t(V, offs_n, T_K, HEAD_DIM, BLOCK_D)
        p = tl.exp2(_dot(q, k_t, PRECISION, UPCAST) * qk_scale - lse[:, None])
        p = tl.where(_visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, CAUSAL, HAS_KPM, HAS_DOC), p, 0.0)
        ds = p * (_dot(do, v_t, PRECISION, UPCAST) - delta[:, None])
        dq += _dot(ds.to(k_t.dtype), tl.trans(k_t), PRECISION, UPCAST)
    _store_rows(DQ, dq * sm_scale, offs_m, T_Q, HEAD_DIM, BLOCK_D)


def _blocks(head_dim: int, dtype: torch.dtype) -> tuple[int, int, int]:
    block_d = max(16, triton.next_power_of_2(head_dim))
    if interpreting():
        return block_d, 32, 32  # the interpreter pays per loop iteration, not per element
    if block_d > 64 or dtype == torch.float32:
        return block_d, 64, 32
    return block_d, 128, 64


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, document_ids, causal, scale, allow_tf32):
        b, h, t_q, d = q.shape
        t_k = k.shape[2]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        has_kpm, has_doc = key_padding_mask is not None, document_ids is not None
        kpm = key_padding_mask.to(torch.int8).contiguous() if has_kpm else q.new_empty(1, dtype=torch.int8)
        doc = document_ids.to(torch.int32).contiguous() if has_doc else q.new_empty(1, dtype=torch.int32)
        out = torch.empty_like(q)
        lse = torch.empty(b * h, t_q, device=q.device, dtype=torch.float32)
        block_d, block_m, block_n = _blocks(d, q.dtype)
        meta = dict(HEAD_DIM=d, BLOCK_D=block_d, CAUSAL=causal, HAS_KPM=has_kpm, HAS_DOC=has_doc,
                    PRECISION="tf32" if allow_tf32 else "ieee", UPCAST=interpreting() and q.dtype != torch.float32)
        _fwd_kernel[(triton.cdiv(t_q, block_m), b * h)](
            q, k, v, out, lse, kpm, doc, h, t_q, t_k, scale * LOG2E, BLOCK_M=block_m, BLOCK_N=block_n, **meta)
        ctx.save_for_backward(q, k, v, out, lse, kpm, doc)
        ctx.scale, ctx.meta, ctx.blocks = scale, meta, (block_m, block_n)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, kpm, doc = ctx.saved_tensors
        b, h, t_q, _ = q.shape
        t_k = k.shape[2]
        grad_out = grad_out.contiguous()
        delta = (grad_out.float() * out.float()).sum(-1).reshape(b * h, t_q)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        block_m, block_n = ctx.blocks
        common = (h, t_q, t_k, ctx.scale * LOG2E, ctx.scale)
        # dK/dV iterate over query blocks inside a key block; smaller query blocks there, as in FlashAttention-2.
        _bwd_dkdv_kernel[(triton.cdiv(t_k, block_n), b * h)](
            q, k, v, grad_out, lse, delta, dk, dv, kpm, doc, *common, BLOCK_M=block_n, BLOCK_N=block_n, **ctx.meta)
        _bwd_dq_kernel[(triton.cdiv(t_q, block_m), b * h)](
            q, k, v, grad_out, lse, delta, dq, kpm, doc, *common, BLOCK_M=block_m, BLOCK_N=block_n, **ctx.meta)
        return dq, dk, dv, None, None, None, None, None


class TritonFlashAttention:
    """The attention-stage callable. Dropout is not implemented: the capabilities say so, and a call with
    ``dropout_p > 0`` raises instead of silently skipping it."""

    def __init__(self, options: TritonFlashOptions):
        self.allow_tf32 = options.allow_tf32

    def __call__(self, q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None, document_ids=None):
        if dropout_p > 0.0:
            raise ValueError("triton_flash does not implement attention dropout; set model.dropout=0 or choose "
                             "another attention kernel")
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        return _FlashAttention.apply(q, k, v, key_padding_mask, document_ids, causal, scale, self.allow_tf32)


def build(options: TritonFlashOptions, ctx) -> TritonFlashAttention:
    return TritonFlashAttention(options)
