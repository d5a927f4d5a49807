"""A pre-norm Transformer built on the attention stage. One Block serves the decoder (``causal: true``, GPT-style)
and the encoder (``causal: false``, BERT-style): a switch, not a second copy. The modern decoder pieces (RoPE,
RMSNorm, SwiGLU or ReLU^2 MLP, grouped-query attention, QK-norm, logit soft-capping) are options of the same Block;
the defaults give the GPT-2 model, parameter names included. BERT's pieces (post-norm blocks, an embedding norm,
exact GELU, the masked-LM head transform) are options too. A decoder decodes incrementally with a KV cache
(``new_cache``), and the same Block with a cross-attention sub-layer makes the decoder of the encoder-decoder
(plugins/models/encoder_decoder.py). With ``memory_length`` a decoder reads consecutive segments of a stream with
Transformer-XL's segment recurrence (``new_segment_memory``)."""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from hookformer.core.capabilities import documents
from hookformer.core.errors import ConfigError, HookformerError
from hookformer.core.parts import PartOptions


class TransformerOptions(PartOptions):
    n_layer: int = Field(4, gt=0, description="number of Transformer blocks")
    n_head: int = Field(4, gt=0, description="attention heads per block")
    d_model: int = Field(128, gt=0, description="width of the residual stream (a multiple of n_head)")
    d_ff: int | None = Field(None, gt=0, description="hidden width of the MLP; null means 4 * d_model")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on embeddings, attention weights and residuals")
    causal: bool = Field(True, description="true: decoder (each token sees the past); false: bidirectional encoder")
    positions: Literal["learned", "sinusoidal", "rope"] = Field(
        "learned", description="position encoding: learned or sinusoidal vectors added to the token embeddings (a "
        "token's position counts the real tokens before it, so left padding shifts nothing), or rope (rotary "
        "embeddings: q and k of every head rotated by their index in the block before the attention kernel, so "
        "every kernel serves it; scores depend on position differences only)")
    rope_base: float = Field(10000.0, gt=0.0, description="RoPE base: pair i of a head turns by position * "
                             "rope_base^(-2i/head_dim); larger bases reach longer contexts")
    norm: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="the norms of the blocks and the final "
                                                  "norm: LayerNorm, or RMSNorm (x / sqrt(mean(x^2) + eps) * weight)")
    mlp: Literal["gelu", "gelu_exact", "swiglu", "relu2"] = Field(
        "gelu", description="gelu: proj(gelu(fc x)) with GELU's tanh approximation (GPT-2); gelu_exact: the same "
        "with the exact (erf) GELU (BERT); relu2: proj(relu(fc x)^2); swiglu: proj(silu(gate x) * fc x), "
        "whose hidden width is d_ff or else 8/3 * d_model rounded up to a multiple of 64 (about the parameters of "
        "the 4 * d_model GELU MLP)")
    n_kv_head: int | None = Field(None, gt=0, description="grouped-query attention: key/value heads, a divisor of "
                                  "n_head (each serves n_head / n_kv_head query heads; 1 is multi-query attention); "
                                  "null means n_head")
    qk_norm: bool = Field(False, description="RMSNorm on the queries and keys of each head before the kernel")
    logit_softcap: float | None = Field(None, gt=0.0, description="cap the language-model logits smoothly to "
                                        "(-cap, cap): cap * tanh(logits / cap); null: no cap")
    max_seq_len: int | None = Field(None, gt=0, description="longest sequence; null means the data block size")
    vocab_size: int | None = Field(None, gt=0, description="null means the tokenizer's vocabulary size")
    tie_embeddings: bool = Field(True, description="share the input embedding with the output projection")
    type_vocab_size: int = Field(0, ge=0, description="segment (token-type) embeddings, e.g. 2 for BERT-style "
                                 "sentence pairs; 0: none (token_type_ids are then refused)")
    default_token_type: int | None = Field(None, ge=0, description="the segment of every token when a batch has no "
                                           "token_type_ids: null adds no segment embedding then; 0 adds segment "
                                           "0's, as BERT does")
    pooler: bool = Field(False, description="add the head \"pooled\": tanh(dense(first token's hidden state)), the "
                         "BERT pooled output that sentence-level heads can read")
    unpad: bool = Field(True, description="when a batch has padding (an attention_mask with zeros), run the "
                        "embeddings, norms, projections and MLP on the real tokens only and pad them again just for "
                        "the attention kernel: the same outputs on real tokens, less work the more padding there is. "
                        "Padding positions of the hidden states are then zero. Not used while torch.compile traces "
                        "(its shapes depend on the data)")
    bias: bool = Field(True, description="biases in linear layers and norms")
    norm_eps: float = Field(1e-5, gt=0.0, description="epsilon added to the variance (or mean square) in the norms")
    norm_position: Literal["pre", "post"] = Field(
        "pre", description="pre: x + f(norm(x)) in each block and a final norm (GPT-2, Llama); post: norm(x + f(x)) "
        "in each block and no final norm (BERT)")
    embedding_norm: bool = Field(False, description="a norm on the summed embeddings, before the blocks (BERT)")
    lm_head_transform: bool = Field(False, description="BERT's masked-LM prediction head: dense, GELU (exact with "
                                    "mlp gelu_exact, else tanh) and a norm before the output projection, which then "
                                    "has a bias")
    memory_length: int = Field(0, ge=0, description="segment recurrence (Transformer-XL): each block's "
                               "self-attention also attends over the last memory_length hidden states that entered "
                               "it in the previous segments (kept without gradient in a segment memory, see "
                               "new_segment_memory), for decoders trained on consecutive segments of a stream; 0: off. "
                               "Needs causal: true and positions: rope (scores then depend on relative positions "
                               "only)")

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): each key/value head "
                             "serves the same number of query heads; choose a divisor, or null for n_head")
        if self.default_token_type is not None and self.default_token_type >= self.type_vocab_size:
            raise ValueError(f"default_token_type ({self.default_token_type}) must be a segment id below "
                             f"type_vocab_size ({self.type_vocab_size}), or null")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"positions: rope turns pairs of a head's dimensions, so the head dimension d_model / "
                             f"n_head ({self.head_dim}) must be even; change d_model or n_head")
        if self.memory_length and (not self.causal or self.positions != "rope"):
            raise ValueError(f"memory_length ({self.memory_length}) needs a decoder with relative positions: "
                             f"causal: true and positions: rope (got causal: {str(self.causal).lower()}, positions: "
                             f"{self.positions}); added position vectors would number each segment from 0 again. "
                             "Set model.positions: rope (with causal: true), or memory_length: 0")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head


def gelu(x: torch.Tensor, kind: str) -> torch.Tensor:
    """GELU as the ``mlp`` option names it: exact (erf) for gelu_exact, else the tanh approximation."""
    return F.gelu(x, approximate="none" if kind == "gelu_exact" else "tanh")


def make_norm(opts: TransformerOptions, width: int) -> nn.Module:
    if opts.norm == "rmsnorm":
        return nn.RMSNorm(width, eps=opts.norm_eps)
    return nn.LayerNorm(width, eps=opts.norm_eps, bias=opts.bias)


class Rotary(nn.Module):
    """RoPE: the pairs (x[2i], x[2i+1]) of each head, read as complex numbers, are multiplied by
    exp(1j * position * base^(-2i/D)), so q.k depends on the positions' difference only. The positions are the
    indices of the tokens in the (B, T) block: with left padding the real tokens shift together, which leaves their
    scores unchanged. Cached decoding rotates the new tokens by their index in the whole sequence (``start`` on)."""

    def __init__(self, head_dim: int, base: float):
        super().__init__()
        # Not saved: a function of the options, so checkpoints keep the names of the other position encodings.
        self.register_buffer("inv_freq", base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim),
                             persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, H, T, D) -> (B, H, T, D), token t rotated by position start + t."""
        positions = torch.arange(start, start + x.shape[-2], device=x.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class Unpadded:
    """Where the real tokens of a padded (B, T) batch sit: token-wise layers work on the (N, C) rows ``keep`` selects
    from the flattened batch, and only attention, which needs the (B, T) layout, sees them padded again."""

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.length = attention_mask.shape
        self.keep = attention_mask.flatten().nonzero().squeeze(1)

    def select(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): the real tokens."""
        return padded.flatten(0, 1).index_select(0, self.keep)

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros on padding."""
        padded = rows.new_zeros((self.batch * self.length, *rows.shape[1:])).index_copy(0, self.keep, rows)
        return padded.view(self.batch, self.length, *rows.shape[1:])


class KVSlot:
    """The keys and values one attention sub-layer has cached, (B, n_kv_head, T, head_dim) each: after RoPE and
    QK-norm, before the key/value heads are repeated for grouped-query attention (so the cache stays small)."""

    def __init__(self):
        self.k = self.v = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens' keys and values; returns the keys and values of every token so far."""
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=-2), torch.cat((self.v, v), dim=-2)
        self.k, self.v = k, v
        return k, v


class KVCache:
    """What a decoder keeps between the calls of incremental decoding (``model.new_cache()``, see the Model protocol
    in hookformer.core.parts): per block, the keys and values of every token so far; for an encoder-decoder also the
    cross-attention keys and values of the source (computed on the first call) and the source's padding mask."""

    def __init__(self, n_layer: int, cross_attention: bool = False):
        self.self_attn = [KVSlot() for _ in range(n_layer)]
        self.cross_attn = [KVSlot() if cross_attention else None for _ in range(n_layer)]
        self.memory_mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """The number of tokens cached so far (padding included): the position of the next token."""
        return self.self_attn[0].length

    @property
    def has_memory(self) -> bool:
        """Whether the source's cross-attention keys and values are cached (the encoder need not run again)."""
        return self.cross_attn[0] is not None and self.cross_attn[0].k is not None

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows ``index`` (a LongTensor (B_new,)), in that order, in place: beam search reorders its
        hypotheses, and finished rows can be dropped."""
        for slot in (*self.self_attn, *self.cross_attn):
            if slot is not None and slot.k is not None:
                rows = index.to(slot.k.device)
                slot.k, slot.v = slot.k.index_select(0, rows), slot.v.index_select(0, rows)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index.to(self.memory_mask.device))


class SegmentMemory:
    """Transformer-XL's memory (``model.new_segment_memory()``): per block, the hidden states that entered it in the
    previous segments, (B, at most memory_length, d_model), detached so no gradient reaches past segments. Keys and
    values are computed from them by the current weights at every call. Row i of every call must continue the text
    of row i of the previous call; start a new memory where a stream starts over."""

    def __init__(self, n_layer: int, capacity: int):
        self.capacity = capacity
        self.states: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        """The number of past tokens held (the same for every block)."""
        return 0 if self.states[0] is None else self.states[0].shape[1]

    def keep(self, layer: int, x: torch.Tensor) -> None:
        """Append the current segment's input ``x`` (B, T, C) of block ``layer``, keeping the last ``capacity``."""
        previous = self.states[layer]
        held = x if previous is None else torch.cat((previous, x), dim=1)
        self.states[layer] = held[:, -self.capacity:].detach()


class Attention(nn.Module):
    """What self- and cross-attention share: the head layout, QK-norm, the key/value heads' repetition (grouped-query
    attention), the kernel call and the output projection. Positions (RoPE), QK-norm and the repetition all happen
    before the kernel call, so every attention kernel serves every option with the (B, H, T, D) tensors of its
    protocol."""

    #: What a kernel refused for T_q != T_k should hear about this sub-layer's calls.
    unequal_lengths_use: str

    def _init_heads(self, opts: TransformerOptions, attention, causal: bool) -> None:
        # Called after the input projections are made: the modules' order decides the initial weights' draws.
        self.n_head, self.kv_heads, self.head_dim = opts.n_head, opts.kv_heads, opts.head_dim
        self.causal = causal
        self.dropout = opts.dropout
        self.attention = attention
        self.proj = nn.Linear(opts.d_model, opts.d_model, bias=opts.bias)
        self.qk_norm = opts.qk_norm
        if opts.qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=opts.norm_eps)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=opts.norm_eps)

    def attend(self, q, k, v, key_padding_mask, document_ids, unpadded: Unpadded | None) -> torch.Tensor:
        """The kernel on q (B, H, T_q, D) and k, v (B, H_kv, T_k, D), heads merged and projected: (B, T_q, C), or
        the (N, C) real tokens with ``unpadded``."""
        b, _, t, _ = q.shape
        if self.kv_heads != self.n_head:
            # Query head h reads key/value head h // group: repeated, the kernels need no notion of groups.
            group = self.n_head // self.kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        try:
            # Only a kernel that declares document masks is handed document_ids (see AttentionKernel).
            y = self.attention(q, k, v, causal=self.causal, key_padding_mask=key_padding_mask,
                               dropout_p=self.dropout if self.training else 0.0, **documents(document_ids))
        except HookformerError as err:
            if k.shape[-2] == t:
                raise
            raise HookformerError(f"{err} {self.unequal_lengths_use}") from err
        y = y.transpose(1, 2).reshape(b, t, self.n_head * self.head_dim)
        return self.proj(y if unpadded is None else unpadded.select(y))


class SelfAttention(Attention):
    """One ``qkv`` projection to n_head query heads and n_kv_head key and value heads (n_head each by default)."""

    unequal_lengths_use = ("Decoding with a KV cache calls the kernel with the new tokens' queries over every cached "
                           "key (T_q < T_k, the causal diagonal aligned to the end): a kernel without unequal_lengths "
                           "cannot attend over cached keys. Generate with use_cache: false, or choose another "
                           "attention kernel.")

    def __init__(self, opts: TransformerOptions, attention):
        super().__init__()
        self.qkv = nn.Linear(opts.d_model, opts.d_model + 2 * opts.kv_heads * opts.head_dim, bias=opts.bias)
        self._init_heads(opts, attention, opts.causal)
        self.rotary = Rotary(self.head_dim, opts.rope_base) if opts.positions == "rope" else None

    def forward(self, x, key_padding_mask=None, document_ids=None, unpadded: Unpadded | None = None,
                cache: KVSlot | None = None, previous: torch.Tensor | None = None):
        """With ``cache``, ``x`` holds the new tokens only: their keys and values are appended to the cache's, and
        their queries attend over all of them (``key_padding_mask`` then covers every token so far). ``previous``
        (B, M, C), the (normed) hidden states of a segment memory, adds M keys and values before the tokens', at
        positions 0..M-1: the tokens' positions start at M."""
        qkv = self.qkv(x)
        if unpadded is not None:
            qkv = unpadded.pad(qkv)
        b, t, _ = qkv.shape
        heads = qkv.view(b, t, self.n_head + 2 * self.kv_heads, self.head_dim).transpose(1, 2)
        q, k, v = heads.split([self.n_head, self.kv_heads, self.kv_heads], dim=1)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:
            start = cache.length if cache is not None else 0 if previous is None else previous.shape[1]
            q, k = self.rotary(q, start), self.rotary(k, start)
        if cache is not None:
            k, v = cache.extend(k, v)
        if previous is not None:
            k_mem, v_mem = self._memory_keys(previous)
            k, v = torch.cat((k_mem, k), dim=-2), torch.cat((v_mem, v), dim=-2)
        return self.attend(q, k, v, key_padding_mask, document_ids, unpadded)

    def _memory_keys(self, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (RoPE from position 0, QK-norm) and values of a segment memory's hidden states (B, M, C), by the key
        and value rows of ``qkv``: the memory's queries are never used."""
        width = self.n_head * self.head_dim
        bias = None if self.qkv.bias is None else self.qkv.bias[width:]
        b, m, _ = previous.shape
        kv = F.linear(previous, self.qkv.weight[width:], bias).view(b, m, 2 * self.kv_heads, self.head_dim)
        k, v = kv.transpose(1, 2).chunk(2, dim=1)
        if self.qk_norm:
            k = self.k_norm(k)
        return self.rotary(k), v


class CrossAttention(Attention):
    """Attention of the decoder's tokens (queries, projected by ``q``) over the encoder's output ``memory`` (keys and
    values, projected by ``kv``) with the source's padding mask: a non-causal kernel call with T_q != T_k. No
    positions here: the encoder's hidden states carry the source's."""

    unequal_lengths_use = ("An encoder-decoder's cross-attention attends from the target's tokens over the source's "
                           "(T_q != T_k): choose an attention kernel that declares unequal_lengths.")

    def __init__(self, opts: TransformerOptions, attention):
        super().__init__()
        self.q = nn.Linear(opts.d_model, opts.d_model, bias=opts.bias)
        self.kv = nn.Linear(opts.d_model, 2 * opts.kv_heads * opts.head_dim, bias=opts.bias)
        self._init_heads(opts, attention, causal=False)

    def forward(self, x, memory, memory_mask=None, unpadded: Unpadded | None = None, cache: KVSlot | None = None):
        """``memory``: (B, S, C) encoder hidden states, ``memory_mask`` (B, S) True on real source tokens. With
        ``cache``, the memory's keys and values are computed on the first call and read from it afterwards
        (``memory`` may then be None)."""
        q = self.q(x)
        if unpadded is not None:
            q = unpadded.pad(q)
        b, t, _ = q.shape
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        if cache is not None and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            s = memory.shape[1]
            k, v = self.kv(memory).view(b, s, 2 * self.kv_heads, self.head_dim).transpose(1, 2).chunk(2, dim=1)
            if self.qk_norm:
                k = self.k_norm(k)
            if cache is not None:
                cache.extend(k, v)
        if self.qk_norm:
            q = self.q_norm(q)
        return self.attend(q, k, v, memory_mask, None, unpadded)


def swiglu_width(d_model: int) -> int:
    """8/3 * d_model rounded up to a multiple of 64: three matrices of about the size of GELU's two at 4 * d_model."""
    return -(-8 * d_model // (3 * 64)) * 64


class MLP(nn.Module):
    """``proj(act(fc x))``; SwiGLU adds ``gate``: ``proj(silu(gate x) * fc x)``."""

    def __init__(self, opts: TransformerOptions):
        super().__init__()
        self.kind = opts.mlp
        hidden = opts.d_ff or (swiglu_width(opts.d_model) if opts.mlp == "swiglu" else 4 * opts.d_model)
        if opts.mlp == "swiglu":
            self.gate = nn.Linear(opts.d_model, hidden, bias=opts.bias)
        self.fc = nn.Linear(opts.d_model, hidden, bias=opts.bias)
        self.proj = nn.Linear(hidden, opts.d_model, bias=opts.bias)

    def forward(self, x):
        if self.kind == "swiglu":
            return self.proj(F.silu(self.gate(x)) * self.fc(x))
        if self.kind == "relu2":
            return self.proj(F.relu(self.fc(x)).square())
        return self.proj(gelu(self.fc(x), self.kind))


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)); post-norm: norm(x + attention(x)), then norm(x + mlp(x)).
    With ``cross_attention`` (an encoder-decoder's decoder blocks), a cross-attention sub-layer over the encoder's
    output sits between the two, with its own norm, residual and the same pre- or post-norm placement."""

    def __init__(self, opts: TransformerOptions, attention, cross_attention: bool = False):
        super().__init__()
        self.post_norm = opts.norm_position == "post"
        self.norm1 = make_norm(opts, opts.d_model)
        self.attn = SelfAttention(opts, attention)
        if cross_attention:
            self.cross_norm = make_norm(opts, opts.d_model)
            self.cross_attn = CrossAttention(opts, attention)
        self.cross_attention = cross_attention
        self.norm2 = make_norm(opts, opts.d_model)
        self.mlp = MLP(opts)
        self.drop = nn.Dropout(opts.dropout)

    def _residual(self, x, norm: nn.Module, sublayer) -> torch.Tensor:
        if self.post_norm:
            return norm(x + self.drop(sublayer(x)))
        return x + self.drop(sublayer(norm(x)))

    def forward(self, x, key_padding_mask=None, document_ids=None, unpadded: Unpadded | None = None,
                cache: tuple[KVSlot, KVSlot | None] | None = None, memory=None, memory_mask=None, previous=None):
        """``x``: (B, T, C), or (N, C) real tokens when ``unpadded`` says where they sit. ``cache``: this block's
        (self-attention, cross-attention) slots of a :class:`KVCache`. ``memory``, ``memory_mask``: the encoder's
        output and the source's padding mask, for the cross-attention sub-layer. ``previous``: this block's hidden
        states of a :class:`SegmentMemory` (B, M, C), normed as ``x`` is before the self-attention."""
        self_slot, cross_slot = cache if cache is not None else (None, None)
        if previous is not None and not self.post_norm:
            previous = self.norm1(previous)
        x = self._residual(x, self.norm1,
                           lambda h: self.attn(h, key_padding_mask, document_ids, unpadded, self_slot, previous))
        if self.cross_attention:
            x = self._residual(x, self.cross_norm,
                               lambda h: self.cross_attn(h, memory, memory_mask, unpadded, cross_slot))
        return self._residual(x, self.norm2, self.mlp)


def sinusoidal_table(length: int, width: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class FirstTokenPooler(nn.Module):
    """The BERT pooled output: tanh(dense(hidden state of the first token))."""

    def __init__(self, width: int):
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, hidden, attention_mask=None):
        return torch.tanh(self.dense(hidden[:, 0]))


class LMTransform(nn.Module):
    """BERT's masked-LM head transform: norm(gelu(dense(hidden)))."""

    def __init__(self, opts: TransformerOptions):
        super().__init__()
        self.kind = opts.mlp
        self.dense = nn.Linear(opts.d_model, opts.d_model, bias=opts.bias)
        self.norm = make_norm(opts, opts.d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(gelu(self.dense(hidden), self.kind))


class Transformer(nn.Module):
    """Token embedding (+ segment embedding) + positions -> blocks -> final norm -> heads: the language-model head,
    plus any task heads attached with ``add_head`` (see the Model protocol in hookformer.core.parts).

    ``cross_attention`` gives every block a cross-attention sub-layer over ``memory`` (an encoder-decoder's decoder);
    ``lm_head: False`` leaves out the output projection (an encoder-decoder's encoder)."""

    #: Output names of a forward pass with ``heads`` that are not task heads.
    OUTPUTS = ("hidden", "lm")
    #: Whether the model reads a source (``input_ids``) and a target (``decoder_input_ids``): see EncoderDecoder.
    encoder_decoder = False

    def __init__(self, opts: TransformerOptions, attention, vocab_size: int, max_seq_len: int, *,
                 cross_attention: bool = False, lm_head: bool = True):
        super().__init__()
        self.opts = opts
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.d_model = opts.d_model
        self.causal = opts.causal
        self.memory_length = opts.memory_length
        self._scoped_segment_memory: SegmentMemory | None = None  # see segment_memory_scope
        self.cross_attention = cross_attention
        self.tok_emb = nn.Embedding(vocab_size, opts.d_model)
        if opts.type_vocab_size:
            self.type_emb = nn.Embedding(opts.type_vocab_size, opts.d_model)
        if opts.positions == "learned":
            self.pos_emb = nn.Embedding(max_seq_len, opts.d_model)
        elif opts.positions == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(max_seq_len, opts.d_model), persistent=False)
        if opts.embedding_norm:
            self.emb_norm = make_norm(opts, opts.d_model)
        self.drop = nn.Dropout(opts.dropout)
        self.blocks = nn.ModuleList(Block(opts, attention, cross_attention) for _ in range(opts.n_layer))
        # Post-norm blocks end in a norm already.
        self.norm = make_norm(opts, opts.d_model) if opts.norm_position == "pre" else nn.Identity()
        if lm_head:
            if opts.lm_head_transform:
                self.lm_transform = LMTransform(opts)
            self.lm_head = nn.Linear(opts.d_model, vocab_size, bias=opts.lm_head_transform)
            if opts.tie_embeddings:
                self.lm_head.weight = self.tok_emb.weight
        self.heads = nn.ModuleDict()
        if opts.pooler:
            self.add_head("pooled", FirstTokenPooler(opts.d_model))
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * opts.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def add_head(self, name: str, module: nn.Module) -> None:
        """Attach a task head ``module(hidden, attention_mask)``; its parameters are named ``heads.<name>.*``."""
        if name in self.OUTPUTS or name in self.heads:
            raise ValueError(f'the model already has a head named "{name}"')
        self.heads[name] = module.to(self.tok_emb.weight.device)

    def new_cache(self) -> KVCache:
        """An empty :class:`KVCache` for incremental decoding: pass it as ``cache`` to every call."""
        if not self.causal:
            raise ConfigError("a bidirectional encoder (model.causal: false) has no KV cache: every token's state "
                              "depends on the tokens after it, so nothing computed can be kept as the text grows")
        return KVCache(len(self.blocks), self.cross_attention)

    def new_segment_memory(self) -> SegmentMemory:
        """An empty :class:`SegmentMemory` for segment recurrence (``memory_length``): pass it as
        ``segment_memory`` to the calls on consecutive segments; each call attends over it and then adds its own
        hidden states."""
        if not self.opts.memory_length:
            raise ConfigError("segment recurrence needs model.memory_length > 0 (the past tokens each block keeps, "
                              "e.g. --set model.memory_length=128, with positions: rope)")
        return SegmentMemory(len(self.blocks), self.opts.memory_length)

    @contextlib.contextmanager
    def segment_memory_scope(self, segment_memory: SegmentMemory):
        """Within it, a forward call given no ``segment_memory`` uses this one: a training loop hands the memory to
        the calls an objective makes without changing the objective."""
        outer, self._scoped_segment_memory = self._scoped_segment_memory, segment_memory
        try:
            yield segment_memory
        finally:
            self._scoped_segment_memory = outer

    def hidden_states(self, input_ids, attention_mask=None, token_type_ids=None, document_ids=None, *,
                      cache: KVCache | None = None, memory=None, memory_mask=None,
                      segment_memory: SegmentMemory | None = None):
        """(B, T) ids -> (B, T, d_model) after the final norm. ``attention_mask``: (B, T), True/1 on real tokens.

        With ``cache`` the ids are the new tokens only, their positions continue from ``cache.length``, and
        ``attention_mask`` covers every token so far (B, cache.length + T). ``memory`` (B, S, d_model) and
        ``memory_mask`` (B, S) feed the cross-attention sub-layers. With ``segment_memory`` (``new_segment_memory``)
        the ids are the next segment of each row's stream: every block also attends over the hidden states the
        memory holds, then the memory keeps this segment's."""
        b, t = input_ids.shape
        if segment_memory is not None:
            self._check_segment_memory(segment_memory, b, attention_mask, document_ids, cache)
            attention_mask = None  # all ones: checked
        start = 0 if cache is None else cache.length
        if start + t > self.max_seq_len:
            raise ConfigError(f"a sequence of {start + t} tokens is longer than model.max_seq_len "
                              f"({self.max_seq_len})")
        if token_type_ids is not None and not self.opts.type_vocab_size:
            raise ConfigError("the batch has token_type_ids (sentence pairs), but the model has no segment "
                              "embeddings: set model.type_vocab_size: 2 (--set model.type_vocab_size=2)")
        if cache is not None:
            if document_ids is not None:
                raise ConfigError("document_ids (packed documents) cannot be used with a KV cache: decode one "
                                  "text per row")
            if attention_mask is not None and attention_mask.shape[1] != start + t:
                raise ConfigError(f"with a KV cache, attention_mask covers every token so far: expected "
                                  f"{start + t} columns ({start} cached + {t} new), got {attention_mask.shape[1]}")
        key_padding_mask = attention_mask.bool() if attention_mask is not None else None
        unpadded = None
        # The all() check costs one device sync; without padding there is nothing to skip. With a cache, the cached
        # keys keep the padded (B, T) layout so that each call appends to them, and a decoding step's one token per
        # row leaves nothing to skip.
        if (key_padding_mask is not None and cache is None and self.opts.unpad and not torch.compiler.is_compiling()
                and not bool(key_padding_mask.all())):
            unpadded = Unpadded(key_padding_mask)
        positions = torch.arange(start, start + t, device=input_ids.device)  # (T,), broadcast over the batch
        if key_padding_mask is not None and self.opts.positions != "rope":
            # An added position counts the real tokens before it, so a left-padded prompt starts at position 0, as
            # it does alone (RoPE needs no such care: its scores depend on the positions' differences only).
            positions = (key_padding_mask.long().cumsum(1) - 1).clamp(min=0)[:, start:]
        if unpadded is not None:
            input_ids, positions = unpadded.select(input_ids), unpadded.select(positions.expand(b, t))
            if token_type_ids is not None:
                token_type_ids = unpadded.select(token_type_ids)
        x = self.tok_emb(input_ids)
        if token_type_ids is not None:
            x = x + self.type_emb(token_type_ids)
        elif self.opts.default_token_type is not None:
            x = x + self.type_emb.weight[self.opts.default_token_type]
        if self.opts.positions == "learned":
            x = x + self.pos_emb(positions)
        elif self.opts.positions == "sinusoidal":
            x = x + self.pos_table[positions].to(x.dtype)
        if self.opts.embedding_norm:
            x = self.emb_norm(x)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            slots = None if cache is None else (cache.self_attn[i], cache.cross_attn[i])
            previous = None if segment_memory is None else segment_memory.states[i]
            y = block(x, key_padding_mask, document_ids, unpadded, slots, memory, memory_mask, previous)
            if segment_memory is not None:
                segment_memory.keep(i, x)
            x = y
        x = self.norm(x)
        return x if unpadded is None else unpadded.pad(x)

    @staticmethod
    def _check_segment_memory(segment_memory: SegmentMemory, batch: int, attention_mask, document_ids, cache) -> None:
        """Refuse what segment recurrence cannot read: the memory holds whole rows of unpadded streams."""
        if cache is not None or document_ids is not None:
            raise ConfigError("a segment memory (segment recurrence) cannot be combined with a KV cache or "
                              "document_ids: pass segments of one stream per row, without a cache")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ConfigError("segment recurrence reads consecutive segments of streams without padding, but the "
                              "attention_mask has zeros: pack the text into full segments (or leave out the mask)")
        held = segment_memory.states[0]
        if held is not None and held.shape[0] != batch:
            raise ConfigError(f"the segment memory holds {held.shape[0]} streams, the batch has {batch} rows: each "
                              "row must continue the stream of the same row in the previous call (start a new "
                              "memory with new_segment_memory() for another batch)")

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The language-model head, soft-capped to (-cap, cap) with ``logit_softcap``."""
        logits = self.lm_head(self.lm_transform(hidden) if self.opts.lm_head_transform else hidden)
        cap = self.opts.logit_softcap
        return logits if cap is None else cap * torch.tanh(logits / cap)

    def outputs(self, hidden, attention_mask, heads, **computed) -> dict:
        """The dict of a forward pass with ``heads``: ``computed`` outputs by name, ``"hidden"``, ``"lm"``, or the
        task heads on ``hidden``."""
        outputs = {}
        for name in heads:
            if name in computed:
                outputs[name] = computed[name]
            elif name == "hidden":
                outputs[name] = hidden
            elif name == "lm":
                outputs[name] = self.lm_logits(hidden)
            else:
                outputs[name] = self.heads[name](hidden, attention_mask)
        return outputs

    def forward(self, input_ids, attention_mask=None, *, token_type_ids=None, document_ids=None, heads=None,
                cache: KVCache | None = None, decoder_input_ids=None, decoder_attention_mask=None,
                segment_memory: SegmentMemory | None = None):
        """(B, T) ids -> (B, T, vocab) logits; with ``heads``, a dict of the named heads' outputs. With ``cache``
        (``new_cache()``), ``input_ids`` are the new tokens only; with ``segment_memory``
        (``new_segment_memory()``, or the one of an enclosing ``segment_memory_scope``), the next segment of each
        row's stream (see ``hidden_states``)."""
        if decoder_input_ids is not None or decoder_attention_mask is not None:
            raise ConfigError("the batch has decoder_input_ids (a source and a target, from a sequence-to-sequence "
                              "objective or pairs data), but model transformer reads one sequence: use the "
                              "encoder-decoder model (model.name: encoder_decoder)")
        if segment_memory is None:
            segment_memory = self._scoped_segment_memory
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids, document_ids, cache=cache,
                                    segment_memory=segment_memory)
        if heads is None:
            return self.lm_logits(hidden)
        return self.outputs(hidden, attention_mask, heads)


def shapes(options: TransformerOptions, ctx) -> tuple[int, int]:
    """(vocab_size, max_seq_len): the run's negotiated shapes (``ctx.shapes``), unless the options fix them."""
    vocab_size = options.vocab_size or ctx.shapes.vocab_size
    max_seq_len = options.max_seq_len or ctx.shapes.max_seq_len
    if vocab_size is None or max_seq_len is None:
        raise ConfigError("model: vocab_size and max_seq_len must be set when the run has no tokenizer or data "
                          "to take them from.")
    return vocab_size, max_seq_len


def build(options: TransformerOptions, ctx) -> Transformer:
    """The transformer for the run's negotiated shapes (``ctx.shapes``), unless the options fix them."""
    return Transformer(options, ctx.attention, *shapes(options, ctx))
