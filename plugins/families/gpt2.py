"""Family ``gpt2``: ``GPT2LMHeadModel``, the transformer part's defaults (learned positions, pre-norm LayerNorm,
tanh GELU, biases, tied embeddings)."""

from __future__ import annotations

from hookformer.core.interop import Family, Rule, expect, require
from hookformer.plugins.families import TRANSFORMER, transformer_geometry

_BLOCK = "transformer.h.{i}."
RULES = (
    Rule(("transformer.wte.weight",), "tok_emb.weight"),
    Rule(("transformer.wpe.weight",), "pos_emb.weight"),
    *(Rule((f"{_BLOCK}{hf}.{kind}",), f"blocks.{{i}}.{ours}.{kind}",
           "transpose" if conv and kind == "weight" else "copy")
      for hf, ours, conv in (("ln_1", "norm1", False), ("attn.c_attn", "attn.qkv", True),
                             ("attn.c_proj", "attn.proj", True), ("ln_2", "norm2", False),
                             ("mlp.c_fc", "mlp.fc", True), ("mlp.c_proj", "mlp.proj", True))
      for kind in ("weight", "bias")),
    Rule(("transformer.ln_f.weight",), "norm.weight"),
    Rule(("transformer.ln_f.bias",), "norm.bias"),
    Rule(("lm_head.weight",), "lm_head.weight"),
)
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")


def options(config: dict) -> dict:
    require(config, "gpt2", "activation_function", _TANH_GELU, "its MLP uses the tanh approximation of GELU")
    require(config, "gpt2", "scale_attn_weights", (True,), "attention scores are scaled by 1/sqrt(head_dim)")
    require(config, "gpt2", "scale_attn_by_inverse_layer_idx", (False,), "no per-layer score scaling")
    require(config, "gpt2", "add_cross_attention", (False,), "no cross-attention")
    width = config["n_embd"]
    return dict(n_layer=config["n_layer"], n_head=config["n_head"], d_model=width,
                d_ff=config.get("n_inner") or 4 * width, dropout=config.get("resid_pdrop", 0.0),
                norm_eps=config.get("layer_norm_epsilon", 1e-5), tie_embeddings=config.get("tie_word_embeddings", True),
                vocab_size=config["vocab_size"], max_seq_len=config["n_positions"])


def hf_config(opts, vocab_size: int, max_seq_len: int) -> dict:
    expect("gpt2", opts, causal=True, positions="learned", norm="layernorm", mlp="gelu", bias=True, qk_norm=False,
           logit_softcap=None, type_vocab_size=0, pooler=False, kv_heads=opts.n_head,
           norm_position="pre", embedding_norm=False, lm_head_transform=False,
           default_token_type=None)
    return dict(vocab_size=vocab_size, n_positions=max_seq_len, n_embd=opts.d_model, n_layer=opts.n_layer,
                n_head=opts.n_head, n_inner=opts.d_ff or 4 * opts.d_model, activation_function="gelu_new",
                layer_norm_epsilon=opts.norm_eps, resid_pdrop=opts.dropout, embd_pdrop=opts.dropout,
                attn_pdrop=opts.dropout, tie_word_embeddings=opts.tie_embeddings)


FAMILY = Family("gpt2", ("gpt2",), ("GPT2LMHeadModel",), RULES, options, hf_config,
                ignored=(_BLOCK + "attn.bias", _BLOCK + "attn.masked_bias"), base_prefix="transformer.",
                objective="clm", geometry=transformer_geometry, **TRANSFORMER)


def build(options, ctx) -> Family:
    return FAMILY
