"""FlashAttention-2 in Triton: forward and backward kernels with online softmax; the T x T score matrix is never
materialized.

Supports causal and non-causal attention, key padding masks (B, T_k), document masks (``document_ids`` (B, T_k):
attention only inside each packed document; key blocks are masked, not skipped, by document), any T_q and T_k (the
causal diagonal aligned to the end when they differ), head dims 16 to 128 (any size: padded to the next power of
two inside the kernel), fp32 / fp16 / bf16 and a softmax scale. Dropout is not supported (declared in the
capabilities, so it is refused, never ignored). Numerics: scores, softmax statistics and accumulators are fp32; fp32
inputs use IEEE dot products (never TF32, whatever torch's global flags say) unless the ``allow_tf32`` option is set.

Layout. q, k, v, dO and O are read through their strides (the model passes permuted views of one qkv tensor: no
copies), and O is written in (B, T, H, D) memory so that the model's head merge is a view. Every grid is
one-dimensional (programs = blocks x B*H): CUDA caps grid axes 1 and 2 at 65,535, axis 0 at 2^31 - 1. Head
offsets are int64 (tensors past 2^31 elements).

Inner loops. Key (forward) or query (backward) blocks that lie wholly inside the visible region run without the
causal and length masks; only the blocks on the causal diagonal and at the ends of the sequences apply them. Padding
and document masks are data, so they are applied on every block that has them.

Backward: 5 matrix products per (query block, key block) pair, as FlashAttention-2 (S^T = K Q^T, dP^T = V dO^T,
dV += P^T dO, dK += dS^T Q, dQ += dS K), in one pass over the key blocks; delta = rowsum(dO * O) comes from a small
kernel first. FlashAttention-2 adds every key block's dQ into one fp32 buffer with atomics from many programs at
once, in an order (hence an fp32 rounding) that changes from run to run. Here each program owns a fixed, interleaved
set of key blocks of one head (j = g, g + S, ...) and adds their dQ into its own fp32 split g of S: no other program
touches it, each element gets one add per key block, and a barrier between key blocks orders them, so the sums are
the same bits every run; a last kernel adds the S splits in order, scales and casts. S (1 to 4) exceeds 1 only when
B*H alone cannot fill the GPU (two programs per multiprocessor), so the extra memory is at most 4 fp32 copies of dQ.

Tiles, warps and pipeline stages are autotuned per head dim, keyed on the dtype, the masks and the lengths rounded
to powers of two. Under Triton's interpreter (``TRITON_INTERPRET=1``, how the tests run on a machine without a GPU)
one small configuration is used; the GPU configurations are run there by the tests through ``configs=``. The
interpreter of triton 3.9 computes bf16 ``tl.dot`` wrongly, so there the operands of every dot product are upcast
to fp32 (``UPCAST``): interpreted bf16 results are therefore slightly more accurate than on a GPU.
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
MAX_DQ_SPLITS = 4


class TritonFlashOptions(PartOptions):
    allow_tf32: bool = Field(False, description="let fp32 dot products use TF32 tensor cores (faster, ~1e-3 error, "
                             "outside the declared fp32 tolerance)")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _config(block_m, block_n, warps, stages):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


# (BLOCK_M, BLOCK_N, warps, stages) per padded head dim, for fp16 / bf16.
FWD_CONFIGS = {
    64: [_config(128, 64, 4, 3), _config(128, 128, 8, 3), _config(64, 64, 4, 4), _config(64, 32, 4, 2)],
    128: [_config(128, 64, 8, 3), _config(128, 128, 8, 2), _config(64, 64, 4, 3), _config(64, 32, 4, 2)],
}
# The backward keeps dK and dV (BLOCK_N x D, fp32) in registers; 8 warps, where the sm_90 compile spills least
# (benchmarks/attention.py --sm90): none at D 64; at D 128 the 64-query tiles spill a little.
BWD_CONFIGS = {
    64: [_config(64, 64, 8, 2), _config(32, 64, 8, 2), _config(32, 64, 4, 3), _config(64, 128, 8, 2)],
    128: [_config(32, 64, 8, 2), _config(32, 128, 8, 1), _config(64, 64, 8, 2), _config(64, 128, 8, 2)],
}
# IEEE fp32 dot products run on the FMA units and spill at every tile (least at 32 x 32); auto routes fp32 to SDPA.
FP32_CONFIGS = {"fwd": [_config(32, 32, 4, 2), _config(64, 32, 4, 2)],
                "bwd": [_config(32, 32, 4, 2), _config(64, 32, 8, 2)]}
INTERPRETER_CONFIG = _config(32, 32, 4, 1)  # the interpreter pays per loop iteration, not per element


def gpu_configs(table: dict, block_d: int) -> list:
    return table[max(64, block_d)]


def _pruner(table, fp32):
    def prune(configs, nargs, **kwargs):
        if interpreting():
            return [INTERPRETER_CONFIG]
        if nargs["Q"].dtype == torch.float32:
            return fp32
        return gpu_configs(table, kwargs["BLOCK_D"])

    return prune


_TUNE_KEY = ["T_QB", "T_KB", "BLOCK_D", "CAUSAL", "HAS_KPM", "HAS_DOC", "PRECISION"]


def _all(table, fp32):
    return [INTERPRETER_CONFIG, *fp32] + [c for configs in table.values() for c in configs]


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _tile(ptr, rows, stride, n_rows, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr):
    """The (rows, BLOCK_D) tile of a (n_rows, HEAD_DIM) matrix with row stride ``stride``; rows past the end (only
    checked when MASKED) and the padding columns up to BLOCK_D read as zeros."""
    cols = tl.arange(0, BLOCK_D)
    ptrs = ptr + rows[:, None] * stride + cols[None, :]
    if MASKED:
        x = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM), other=0.0)
    elif BLOCK_D == HEAD_DIM:
        x = tl.load(ptrs)
    else:
        x = tl.load(ptrs, mask=cols[None, :] < HEAD_DIM, other=0.0)
    return x


@triton.jit
def _store_tile(ptr, tile, rows, stride, n_rows, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    tl.store(ptr + rows[:, None] * stride + cols[None, :], tile.to(ptr.dtype.element_ty),
             mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM))


@triton.jit
def _visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, BOUNDS: tl.constexpr, CAUSAL: tl.constexpr,
             HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr):
    """(M, N) bool: query offs_m may attend to key offs_n. BOUNDS and CAUSAL are off inside the visible region."""
    ok = tl.full([offs_m.shape[0], offs_n.shape[0]], True, tl.int1)
    if BOUNDS:
        ok = ok & (offs_m[:, None] < T_Q) & (offs_n[None, :] < T_K)
    if CAUSAL:
        ok = ok & ((offs_m[:, None] + (T_K - T_Q)) >= offs_n[None, :])
    if HAS_KPM:
        keep = tl.load(KPM + offs_n, mask=offs_n < T_K, other=0)
        ok = ok & (keep[None, :] != 0)
    if HAS_DOC:
        # document ids label the keys; query i is key i + T_K - T_Q. With T_Q > T_K the first queries come before
        # the first key: they see nothing, and their document is never read (it would be before the tensor).
        pos_q = offs_m + (T_K - T_Q)
        has_doc = (pos_q >= 0) & (offs_m < T_Q)
        doc_q = tl.load(DOC + pos_q, mask=has_doc, other=0)
        doc_k = tl.load(DOC + offs_n, mask=offs_n < T_K, other=0)
        ok = ok & has_doc[:, None] & (doc_q[:, None] == doc_k[None, :])
    return ok


@triton.jit
def _query_positions(start, BLOCK: tl.constexpr, T_Q, T_K):
    """Key positions of the first and last query of the block (queries i are keys i + T_K - T_Q), the first
    clamped to 0; the last is negative when every query of the block comes before the first key."""
    first = tl.maximum(start + (T_K - T_Q), 0)
    last = tl.minimum(start + BLOCK, T_Q) - 1 + (T_K - T_Q)
    return first, last


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_vt, offs_m, lo, hi, KPM, DOC, T_Q, T_K, qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
               HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
               MASKED: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _tile(K, offs_n, stride_kt, T_K, HEAD_DIM, BLOCK_D, MASKED)
        v = _tile(V, offs_n, stride_vt, T_K, HEAD_DIM, BLOCK_D, MASKED)
        s = _dot(q, tl.trans(k), PRECISION, UPCAST) * qk_scale  # log2 domain
        if MASKED or HAS_KPM or HAS_DOC:
            s = tl.where(_visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, MASKED, MASKED and CAUSAL, HAS_KPM, HAS_DOC),
                         s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_all(FWD_CONFIGS, FP32_CONFIGS["fwd"]), key=_TUNE_KEY,
                 prune_configs_by={"early_config_prune": _pruner(FWD_CONFIGS, FP32_CONFIGS["fwd"])})
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, KPM, DOC, RUNS, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
                H, T_Q, T_K, T_QB, T_KB, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
                HAS_DOC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr):
    n_m = tl.cdiv(T_Q, BLOCK_M)
    pid = tl.program_id(0)
    start_m = pid % n_m
    if CAUSAL:  # the longest rows first, so that the grid's tail is short work
        start_m = n_m - 1 - start_m
    bh = (pid // n_m).to(tl.int64)
    b, h = bh // H, bh % H
    Q += b * sqb + h * sqh
    K += b * skb + h * skh
    V += b * svb + h * svh
    O += b * sob + h * soh
    KPM += b * T_K
    DOC += b * T_K
    RUNS += b * 2 * T_K
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _tile(Q, offs_m, sqt, T_Q, HEAD_DIM, BLOCK_D, True)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL:  # every key before `full` is visible to every query of the block; none from `hi` on
        hi = tl.minimum(T_K, (start_m + 1) * BLOCK_M + (T_K - T_Q))
        full = tl.maximum(0, tl.minimum(T_K, start_m * BLOCK_M + (T_K - T_Q) + 1)) // BLOCK_N * BLOCK_N
    else:
        hi = T_K
        full = T_K // BLOCK_N * BLOCK_N
    lo = 0
    if HAS_DOC:  # only the keys of the documents of the block's queries (all keys when the ids are not sorted)
        first, last = _query_positions(start_m * BLOCK_M, BLOCK_M, T_Q, T_K)
        lo = tl.load(RUNS + first) // BLOCK_N * BLOCK_N
        hi = tl.where(last >= 0, tl.minimum(hi, tl.load(RUNS + T_K + tl.maximum(last, 0))), 0)
        full = tl.minimum(full, hi) // BLOCK_N * BLOCK_N
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, skt, svt, offs_m, lo, full, KPM, DOC, T_Q, T_K, qk_scale,
                               HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, HAS_KPM, HAS_DOC, PRECISION, UPCAST, False)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, skt, svt, offs_m, tl.maximum(lo, full), hi, KPM, DOC, T_Q,
                               T_K, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, CAUSAL, HAS_KPM, HAS_DOC, PRECISION,
                               UPCAST, True)
    seen = l_i > 0.0
    l_safe = tl.where(seen, l_i, 1.0)
    # a row with no visible key: zeros, as the reference
    _store_tile(O, acc / l_safe[:, None], offs_m, sot, T_Q, HEAD_DIM, BLOCK_D)
    tl.store(LSE + bh * T_Q + offs_m, tl.where(seen, m_i + tl.log2(l_safe), float("inf")), mask=offs_m < T_Q)


@triton.jit
def _delta_kernel(O, DO, DELTA, sob, soh, sot, sdb, sdh, sdt, H, T_Q,
                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta = rowsum(dO * O) in fp32, (B*H, T_Q)."""
    n_m = tl.cdiv(T_Q, BLOCK_M)
    pid = tl.program_id(0)
    bh = (pid // n_m).to(tl.int64)
    b, h = bh // H, bh % H
    offs_m = (pid % n_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    o = _tile(O + b * sob + h * soh, offs_m, sot, T_Q, HEAD_DIM, BLOCK_D, True).to(tl.float32)
    do = _tile(DO + b * sdb + h * sdh, offs_m, sdt, T_Q, HEAD_DIM, BLOCK_D, True).to(tl.float32)
    tl.store(DELTA + bh * T_Q + offs_m, tl.sum(o * do, 1), mask=offs_m < T_Q)


@triton.jit
def _bwd_inner(dk, dv, k, v, Q, DO, DQ, LSE, DELTA, sqt, sdot, offs_n, lo, hi, mid, end, KPM, DOC, T_Q, T_K,
               qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr,
               HAS_KPM: tl.constexpr, HAS_DOC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Query blocks from lo to hi against one key block: 5 products each; dK, dV accumulate in registers, dQ in this
    program's own fp32 buffer (unscaled). Only the blocks outside [mid, end) compute the causal and length mask:
    a branch taken by the whole program, in one loop (three loops, as in the forward, spill registers at D 128)."""
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _tile(Q, offs_m, sqt, T_Q, HEAD_DIM, BLOCK_D, True)
        do = _tile(DO, offs_m, sdot, T_Q, HEAD_DIM, BLOCK_D, True)
        lse = tl.load(LSE + offs_m, mask=offs_m < T_Q, other=float("inf"))  # rows past T_Q: P is zero
        delta = tl.load(DELTA + offs_m, mask=offs_m < T_Q, other=0.0)
        p_t = tl.exp2(_dot(k, tl.trans(q), PRECISION, UPCAST) * qk_scale - lse[None, :])  # (N, M)
        if (start_m < mid) | (start_m >= end):
            p_t = tl.where(tl.trans(_visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, True, CAUSAL, HAS_KPM, HAS_DOC)),
                           p_t, 0.0)
        elif HAS_KPM or HAS_DOC:
            p_t = tl.where(tl.trans(_visible(offs_m, offs_n, T_Q, T_K, KPM, DOC, False, False, HAS_KPM, HAS_DOC)),
                           p_t, 0.0)
        dv += _dot(p_t.to(do.dtype), do, PRECISION, UPCAST)
        ds_t = p_t * (_dot(v, tl.trans(do), PRECISION, UPCAST) - delta[None, :])
        dk += _dot(ds_t.to(q.dtype), q, PRECISION, UPCAST)
        # Only this program adds to its dQ split, each element once per key block, and a barrier separates key
        # blocks: the adds land in a fixed order. An add without a returned value holds no registers for the old one.
        dq = _dot(tl.trans(ds_t).to(k.dtype), k, PRECISION, UPCAST)
        cols = tl.arange(0, BLOCK_D)
        tl.atomic_add(DQ + offs_m[:, None] * HEAD_DIM + cols[None, :], dq,
                      mask=(offs_m[:, None] < T_Q) & (cols[None, :] < HEAD_DIM), sem="relaxed")
    return dk, dv


@triton.autotune(configs=_all(BWD_CONFIGS, FP32_CONFIGS["bwd"]), key=_TUNE_KEY + ["SPLITS"], reset_to_zero=["DQ"],
                 prune_configs_by={"early_config_prune": _pruner(BWD_CONFIGS, FP32_CONFIGS["bwd"])})
@triton.jit
def _bwd_kernel(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, KPM, DOC, RUNS, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                sdob, sdoh, sdot, H, T_Q, T_K, T_QB, T_KB, SPLITS, qk_scale, sm_scale,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
                HAS_DOC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """Program (head bh, split g): key blocks g, g + SPLITS, ... of head bh; dK, dV written, dQ added into split g
    of DQ (SPLITS, B*H, T_Q, HEAD_DIM) fp32. DK and DV are contiguous (B, H, T_K, HEAD_DIM)."""
    pid = tl.program_id(0)
    g = pid % SPLITS
    bh = (pid // SPLITS).to(tl.int64)
    b, h = bh // H, bh % H
    Q += b * sqb + h * sqh
    K += b * skb + h * skh
    V += b * svb + h * svh
    DO += b * sdob + h * sdoh
    DK += bh * T_K * HEAD_DIM
    DV += bh * T_K * HEAD_DIM
    DQ += (g * (tl.num_programs(0) // SPLITS) + bh) * T_Q * HEAD_DIM
    LSE += bh * T_Q
    DELTA += bh * T_Q
    KPM += b * T_K
    DOC += b * T_K
    RUNS += b * 2 * T_K
    last_full_m = T_Q // BLOCK_M * BLOCK_M
    for start_n in range(g * BLOCK_N, T_K, SPLITS * BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _tile(K, offs_n, skt, T_K, HEAD_DIM, BLOCK_D, True)
        v = _tile(V, offs_n, svt, T_K, HEAD_DIM, BLOCK_D, True)
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        if CAUSAL:  # queries before `lo` see no key of the block; from `mid` on they see all of them
            lo = tl.maximum(0, start_n - (T_K - T_Q)) // BLOCK_M * BLOCK_M
            mid = tl.minimum(tl.cdiv(tl.maximum(0, start_n + BLOCK_N - 1 - (T_K - T_Q)), BLOCK_M) * BLOCK_M, T_Q)
        else:
            lo = 0
            mid = 0
        end = tl.maximum(mid, last_full_m)
        if start_n + BLOCK_N > T_K:  # the last, partial key block is masked throughout
            end = mid
        hi = T_Q
        if HAS_DOC:  # only the queries of the documents of the block's keys (all when the ids are not sorted)
            lo = tl.maximum(lo, tl.load(RUNS + start_n) - (T_K - T_Q)) // BLOCK_M * BLOCK_M
            hi = tl.minimum(T_Q, tl.load(RUNS + T_K + tl.minimum(start_n + BLOCK_N, T_K) - 1) - (T_K - T_Q))
        dk, dv = _bwd_inner(dk, dv, k, v, Q, DO, DQ, LSE, DELTA, sqt, sdot, offs_n, lo, hi, mid, end, KPM, DOC,
                            T_Q, T_K, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, CAUSAL, HAS_KPM, HAS_DOC, PRECISION, UPCAST)
        _store_tile(DK, dk * sm_scale, offs_n, HEAD_DIM, T_K, HEAD_DIM, BLOCK_D)
        _store_tile(DV, dv, offs_n, HEAD_DIM, T_K, HEAD_DIM, BLOCK_D)
        tl.debug_barrier()  # this key block's dQ adds are performed before the next block's


@triton.jit
def _dq_kernel(DQ_SPLITS, DQ, sdb, sdh, sdt, H, T_Q, SPLITS, sm_scale,
               HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """dQ = sm_scale * the sum of the splits, in split order, cast to dQ's dtype."""
    n_m = tl.cdiv(T_Q, BLOCK_M)
    pid = tl.program_id(0)
    bh = (pid // n_m).to(tl.int64)
    n_bh = tl.num_programs(0) // n_m
    offs_m = (pid % n_m) * BLOCK_M + tl.arange(0, BLOCK_M)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for g in range(SPLITS):
        dq += _tile(DQ_SPLITS + (g * n_bh + bh) * T_Q * HEAD_DIM, offs_m, HEAD_DIM, T_Q, HEAD_DIM, BLOCK_D, True)
    _store_tile(DQ + (bh // H) * sdb + (bh % H) * sdh, dq * sm_scale, offs_m, sdt, T_Q, HEAD_DIM, BLOCK_D)


def dq_splits(bh: int, t_k: int, device: torch.device) -> int:
    """How many programs share the key blocks of one head in the backward: enough for two programs per
    multiprocessor, at most MAX_DQ_SPLITS, no more than there are 64-key blocks."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return max(1, min(MAX_DQ_SPLITS, triton.cdiv(2 * sms, bh), triton.cdiv(t_k, 64)))


def _document_runs(doc):
    """(B, 2, T_k) int32: for each key, the start and the end (exclusive) of the run of equal ids it lies in, where
    a sequence's ids never decrease (packed documents: each run is a whole document, and the kernels skip the
    blocks outside it); 0 and T_k otherwise (document ids that repeat apart: nothing is skipped). No host sync."""
    b, t = doc.shape
    position = torch.arange(t, device=doc.device, dtype=torch.int32).expand(b, t)
    change = doc[:, 1:] != doc[:, :-1]
    first = torch.cat([change.new_ones(b, 1), change], 1)
    last = torch.cat([change, change.new_ones(b, 1)], 1)
    start = torch.cummax(torch.where(first, position, 0), 1).values
    end = torch.cummin(torch.where(last, position + 1, t).flip(1), 1).values.flip(1)
    sorted_ids = (doc[:, 1:] >= doc[:, :-1]).all(1, keepdim=True)
    return torch.stack([torch.where(sorted_ids, start, 0), torch.where(sorted_ids, end, t)], 1).to(torch.int32)


def _strides(x):
    """(batch, head, row) strides of a (B, H, T, D) tensor; the head dim must be contiguous."""
    return x.stride()[:3]


def _dense_rows(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def _launch(kernel, config, grid, *args, **meta):
    """Every kernel launch: autotuned (or plain), or with one given triton.Config (the tests run the GPU
    configurations that way). ``grid`` is one-dimensional."""
    if config is None:
        kernel[grid](*args, **meta)
    else:
        kernel.fn[grid](*args, **meta, **config.all_kwargs())


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, document_ids, causal, scale, allow_tf32, configs):
        b, h, t_q, d = q.shape
        t_k = k.shape[2]
        q, k, v = _dense_rows(q), _dense_rows(k), _dense_rows(v)
        has_kpm, has_doc = key_padding_mask is not None, document_ids is not None
        kpm = key_padding_mask.to(torch.int8).contiguous() if has_kpm else q.new_empty(1, dtype=torch.int8)
        doc = document_ids.to(torch.int32).contiguous() if has_doc else q.new_empty(1, dtype=torch.int32)
        runs = _document_runs(doc) if has_doc else doc
        out = q.new_empty(b, t_q, h, d).transpose(1, 2)  # (B, T, H, D) memory: the model merges heads for free
        lse = torch.empty(b * h, t_q, device=q.device, dtype=torch.float32)
        meta = dict(HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), CAUSAL=causal, HAS_KPM=has_kpm,
                    HAS_DOC=has_doc, PRECISION="tf32" if allow_tf32 and q.dtype == torch.float32 else "ieee",
                    UPCAST=interpreting() and q.dtype != torch.float32)
        buckets = (triton.next_power_of_2(t_q), triton.next_power_of_2(t_k))
        _launch(_fwd_kernel, configs and configs[0], lambda c: (triton.cdiv(t_q, c["BLOCK_M"]) * b * h,),
                q, k, v, out, lse, kpm, doc, runs, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
                h, t_q, t_k, *buckets, scale * LOG2E, **meta)
        ctx.save_for_backward(q, k, v, out, lse, kpm, doc, runs)
        ctx.scale, ctx.meta, ctx.buckets, ctx.configs = scale, meta, buckets, configs
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, kpm, doc, runs = ctx.saved_tensors
        b, h, t_q, d = q.shape
        t_k = k.shape[2]
        meta, configs = ctx.meta, ctx.configs
        grad_out = _dense_rows(grad_out)
        small = dict(HEAD_DIM=d, BLOCK_D=meta["BLOCK_D"], BLOCK_M=32 if interpreting() else 64)
        delta = torch.empty(b * h, t_q, device=q.device, dtype=torch.float32)
        rows = (triton.cdiv(t_q, small["BLOCK_M"]) * b * h,)
        _launch(_delta_kernel, None, rows, out, grad_out, delta, *_strides(out), *_strides(grad_out), h, t_q, **small)
        splits = dq_splits(b * h, t_k, q.device)
        dq_acc = torch.zeros(splits, b * h, t_q, d, device=q.device, dtype=torch.float32)
        dk = torch.empty_like(k, memory_format=torch.contiguous_format)
        dv = torch.empty_like(v, memory_format=torch.contiguous_format)
        _launch(_bwd_kernel, configs and configs[1], (splits * b * h,), q, k, v, grad_out, lse, delta, dq_acc, dk,
                dv, kpm, doc, runs, *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), h, t_q, t_k,
                *ctx.buckets, splits, ctx.scale * LOG2E, ctx.scale, **meta)
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        _launch(_dq_kernel, None, rows, dq_acc, dq, *_strides(dq), h, t_q, splits, ctx.scale, **small)
        return dq, dk, dv, None, None, None, None, None, None


def flash_attention(q, k, v, *, causal=False, key_padding_mask=None, scale=None, document_ids=None,
                    allow_tf32=False, configs=None):
    """The kernels on (B, H, T, D) tensors of any strides (the head dim contiguous). ``configs``: a (forward,
    backward) pair of ``triton.Config`` to run instead of autotuning."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _FlashAttention.apply(q, k, v, key_padding_mask, document_ids, causal, scale, allow_tf32, configs)


class TritonFlashAttention:
    """The attention-stage callable. Dropout is not implemented: the capabilities say so, and a call with
    ``dropout_p > 0`` raises instead of silently skipping it."""

    def __init__(self, options: TritonFlashOptions):
        self.allow_tf32 = options.allow_tf32

    def __call__(self, q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None, document_ids=None):
        if dropout_p > 0.0:
            raise ValueError("triton_flash does not implement attention dropout; set model.dropout=0 or choose "
                             "another attention kernel")
        return flash_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale,
                               document_ids=document_ids, allow_tf32=self.allow_tf32)


def build(options: TritonFlashOptions, ctx) -> TritonFlashAttention:
    return TritonFlashAttention(options)
