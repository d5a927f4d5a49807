"""Family ``llama``: ``LlamaForCausalLM`` and ``MistralForCausalLM`` (without a sliding window): RoPE, RMSNorm,
SwiGLU, grouped-query attention, no biases. Hugging Face rotates the halves of each head where the transformer
rotates adjacent pairs, so the q and k rows are permuted (transform ``fuse_qkv_rope``). Qwen2 is refused: its q/k/v
projections alone have biases. Families of Llama-style decoders (qwen3) extend ``RULES``, ``rope_decoder_options``
and ``rope_decoder_config``."""

from __future__ import annotations

from hookformer.core.errors import ConfigError
from hookformer.core.interop import Family, Rule, expect, require
from hookformer.plugins.families import TRANSFORMER, transformer_geometry
from hookformer.plugins.models.transformer import swiglu_width

_LAYER = "model.layers.{i}."
RULES = (
    Rule(("model.embed_tokens.weight",), "tok_emb.weight"),
    Rule((f"{_LAYER}input_layernorm.weight",), "blocks.{i}.norm1.weight"),
    Rule(tuple(f"{_LAYER}self_attn.{p}_proj.weight" for p in "qkv"), "blocks.{i}.attn.qkv.weight", "fuse_qkv_rope"),
    Rule((f"{_LAYER}self_attn.o_proj.weight",), "blocks.{i}.attn.proj.weight"),
    Rule((f"{_LAYER}post_attention_layernorm.weight",), "blocks.{i}.norm2.weight"),
    Rule((f"{_LAYER}mlp.gate_proj.weight",), "blocks.{i}.mlp.gate.weight"),
    Rule((f"{_LAYER}mlp.up_proj.weight",), "blocks.{i}.mlp.fc.weight"),
    Rule((f"{_LAYER}mlp.down_proj.weight",), "blocks.{i}.mlp.proj.weight"),
    Rule(("model.norm.weight",), "norm.weight"),
    Rule(("lm_head.weight",), "lm_head.weight"),
)


def _rope_base(config: dict) -> float:
    """The RoPE base, from ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling`` (earlier)."""
    params = config.get("rope_parameters") or {**(config.get("rope_scaling") or {}),
                                               "rope_theta": config.get("rope_theta", 10000.0)}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        field = "rope_parameters" if config.get("rope_parameters") else "rope_scaling"
        raise ConfigError(f"{config.get('model_type')}: config.json has {field} of type {kind!r}; the transformer's "
                          f"RoPE has no scaling (only the default type is supported).")
    return float(params["rope_theta"])


def rope_decoder_options(config: dict) -> dict:
    """The transformer options of a Llama-style decoder's config.json (RoPE, RMSNorm, SwiGLU, grouped-query attention,
    no attention biases), after the checks every such family shares; a family adds its own checks and options."""
    model_type = config.get("model_type")
    require(config, model_type, "hidden_act", ("silu",), "its MLP is SwiGLU")
    require(config, model_type, "attention_bias", (False,), "no attention biases")
    width, heads = config["hidden_size"], config["num_attention_heads"]
    require(config, model_type, "head_dim", (width // heads,), "head_dim is hidden_size / num_attention_heads")
    return dict(n_layer=config["num_hidden_layers"], n_head=heads,
                n_kv_head=config.get("num_key_value_heads") or heads, d_model=width,
                d_ff=config["intermediate_size"], dropout=config.get("attention_dropout", 0.0), positions="rope",
                rope_base=_rope_base(config), norm="rmsnorm", mlp="swiglu", bias=False,
                norm_eps=config.get("rms_norm_eps", 1e-6), tie_embeddings=config.get("tie_word_embeddings", False),
                vocab_size=config["vocab_size"], max_seq_len=config["max_position_embeddings"])


def rope_decoder_config(family: str, opts, vocab_size: int, max_seq_len: int, *, qk_norm: bool) -> dict:
    """The config.json fields every Llama-style decoder shares, for a model whose options ``family`` expresses."""
    expect(family, opts, causal=True, positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, qk_norm=qk_norm,
           logit_softcap=None, type_vocab_size=0, pooler=False,
           norm_position="pre", embedding_norm=False, lm_head_transform=False,
           default_token_type=None)
    return dict(vocab_size=vocab_size, max_position_embeddings=max_seq_len, hidden_size=opts.d_model,
                intermediate_size=opts.d_ff or swiglu_width(opts.d_model), num_hidden_layers=opts.n_layer,
                num_attention_heads=opts.n_head, num_key_value_heads=opts.kv_heads, head_dim=opts.head_dim,
                hidden_act="silu", rms_norm_eps=opts.norm_eps, attention_bias=False,
                attention_dropout=opts.dropout, tie_word_embeddings=opts.tie_embeddings,
                rope_parameters={"rope_type": "default", "rope_theta": opts.rope_base}, rope_theta=opts.rope_base)


def options(config: dict) -> dict:
    model_type = config.get("model_type")
    if model_type == "qwen2":
        raise ConfigError("llama: model_type 'qwen2' has biases on its q/k/v projections only; the transformer's "
                          "bias option puts biases on every projection or none.")
    require(config, model_type, "mlp_bias", (False,), "no MLP biases")
    window = config.get("sliding_window")
    if window is not None and window < config["max_position_embeddings"]:
        raise ConfigError(f"{model_type}: config.json has sliding_window = {window}; the transformer attends to the "
                          f"whole sequence (set it to null only if the model was trained that way).")
    return rope_decoder_options(config)


def hf_config(opts, vocab_size: int, max_seq_len: int) -> dict:
    return {**rope_decoder_config("llama", opts, vocab_size, max_seq_len, qk_norm=False), "mlp_bias": False}


FAMILY = Family("llama", ("llama", "mistral", "qwen2"),
                ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"), RULES, options, hf_config,
                ignored=(_LAYER + "self_attn.rotary_emb.inv_freq",), objective="clm", geometry=transformer_geometry,
                **TRANSFORMER)


def build(options, ctx) -> Family:
    return FAMILY
