"""Families ``bert`` (``BertForMaskedLM``: the encoder and its masked-LM head) and ``bert_model`` (``BertModel``: the
encoder and its pooler): the transformer with post-norm blocks, an embedding norm, segment embeddings and exact
GELU. BertForPreTraining (both heads and next-sentence prediction) is not expressed."""

from __future__ import annotations

from functools import partial

from hookformer.core.errors import ConfigError
from hookformer.core.interop import Family, Rule, expect, require
from hookformer.plugins.families import TRANSFORMER, transformer_geometry

_GELU = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu"}
_SUBLAYERS = (("attention.output.dense", "attn.proj"), ("attention.output.LayerNorm", "norm1"),
              ("intermediate.dense", "mlp.fc"), ("output.dense", "mlp.proj"), ("output.LayerNorm", "norm2"))


def encoder_rules(prefix: str) -> tuple[Rule, ...]:
    embeddings, layer = f"{prefix}embeddings.", f"{prefix}encoder.layer.{{i}}."
    return (
        Rule((f"{embeddings}word_embeddings.weight",), "tok_emb.weight"),
        Rule((f"{embeddings}position_embeddings.weight",), "pos_emb.weight"),
        Rule((f"{embeddings}token_type_embeddings.weight",), "type_emb.weight"),
        *(Rule((f"{embeddings}LayerNorm.{kind}",), f"emb_norm.{kind}") for kind in ("weight", "bias")),
        *(Rule(tuple(f"{layer}attention.self.{n}.{kind}" for n in ("query", "key", "value")),
               f"blocks.{{i}}.attn.qkv.{kind}", "fuse_qkv") for kind in ("weight", "bias")),
        *(Rule((f"{layer}{hf}.{kind}",), f"blocks.{{i}}.{ours}.{kind}")
          for hf, ours in _SUBLAYERS for kind in ("weight", "bias")),
    )


MLM_RULES = (
    *encoder_rules("bert."),
    *(Rule((f"cls.predictions.transform.{hf}.{kind}",), f"lm_transform.{ours}.{kind}")
      for hf, ours in (("dense", "dense"), ("LayerNorm", "norm")) for kind in ("weight", "bias")),
    Rule(("cls.predictions.bias",), "lm_head.bias"),
    Rule(("cls.predictions.decoder.weight",), "lm_head.weight"),
)
MODEL_RULES = (*encoder_rules(""), *(Rule((f"pooler.dense.{kind}",), f"heads.pooled.dense.{kind}")
                                     for kind in ("weight", "bias")))


def options(config: dict, masked_lm: bool) -> dict:
    require(config, "bert", "hidden_act", tuple(_GELU), "its MLP is a GELU")
    require(config, "bert", "position_embedding_type", ("absolute",), "learned absolute positions")
    require(config, "bert", "is_decoder", (False,), "an encoder")
    require(config, "bert", "add_cross_attention", (False,), "no cross-attention")
    return dict(n_layer=config["num_hidden_layers"], n_head=config["num_attention_heads"],
                d_model=config["hidden_size"], d_ff=config["intermediate_size"],
                dropout=config.get("hidden_dropout_prob", 0.0), causal=False,
                mlp=_GELU[config.get("hidden_act", "gelu")], norm_eps=config.get("layer_norm_eps", 1e-12),
                norm_position="post", embedding_norm=True, type_vocab_size=config.get("type_vocab_size", 2),
                default_token_type=0, pooler=not masked_lm, lm_head_transform=masked_lm,
                tie_embeddings=config.get("tie_word_embeddings", True), vocab_size=config["vocab_size"],
                max_seq_len=config["max_position_embeddings"])


def hf_config(opts, vocab_size: int, max_seq_len: int, masked_lm: bool) -> dict:
    expect("bert" if masked_lm else "bert_model", opts, causal=False, positions="learned", norm="layernorm",
           bias=True, qk_norm=False, logit_softcap=None, norm_position="post", embedding_norm=True,
           pooler=not masked_lm, lm_head_transform=masked_lm, default_token_type=0, kv_heads=opts.n_head)
    if opts.mlp not in ("gelu", "gelu_exact") or not opts.type_vocab_size:
        raise ConfigError(f"BERT needs mlp gelu or gelu_exact (has {opts.mlp!r}) and type_vocab_size > 0 (has "
                          f"{opts.type_vocab_size})")
    return dict(vocab_size=vocab_size, max_position_embeddings=max_seq_len, hidden_size=opts.d_model,
                num_hidden_layers=opts.n_layer, num_attention_heads=opts.n_head,
                intermediate_size=opts.d_ff or 4 * opts.d_model,
                hidden_act="gelu" if opts.mlp == "gelu_exact" else "gelu_pytorch_tanh",
                layer_norm_eps=opts.norm_eps, type_vocab_size=opts.type_vocab_size, hidden_dropout_prob=opts.dropout,
                attention_probs_dropout_prob=opts.dropout, tie_word_embeddings=opts.tie_embeddings)


MASKED_LM = Family("bert", ("bert",), ("BertForMaskedLM",), MLM_RULES, partial(options, masked_lm=True),
                   partial(hf_config, masked_lm=True), ignored=("cls.predictions.decoder.bias",),  # = predictions.bias
                   objective="mlm", geometry=transformer_geometry, **TRANSFORMER)
MODEL = Family("bert_model", ("bert",), ("BertModel",), MODEL_RULES, partial(options, masked_lm=False),
               partial(hf_config, masked_lm=False), objective="mlm", geometry=transformer_geometry, **TRANSFORMER)


def build_masked_lm(options, ctx) -> Family:
    return MASKED_LM


def build_model(options, ctx) -> Family:
    return MODEL
