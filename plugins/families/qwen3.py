"""Family ``qwen3``: ``Qwen3ForCausalLM`` (without a sliding window): a Llama-style decoder (family ``llama``'s
mapping) with QK-norm, an RMSNorm over each head's queries and keys before RoPE (the transformer's ``qk_norm``).
Its weights are per coordinate of a head, so they are permuted into the transformer's RoPE pair order as the q and k
rows are (transform ``rope_pairs``)."""

from __future__ import annotations

from hookformer.core.errors import ConfigError
from hookformer.core.interop import Family, Rule
from hookformer.plugins.families import TRANSFORMER, transformer_geometry
from hookformer.plugins.families.llama import RULES as LLAMA_RULES
from hookformer.plugins.families.llama import rope_decoder_config, rope_decoder_options

_ATTN = "model.layers.{i}.self_attn."
RULES = (
    *LLAMA_RULES,
    Rule((f"{_ATTN}q_norm.weight",), "blocks.{i}.attn.q_norm.weight", "rope_pairs"),
    Rule((f"{_ATTN}k_norm.weight",), "blocks.{i}.attn.k_norm.weight", "rope_pairs"),
)
#: What Qwen3Config reads a config.json without them as (head_dim is not hidden_size / num_attention_heads there).
_DEFAULT_HEAD_DIM = 128
_DEFAULT_MAX_WINDOW_LAYERS = 28
_DEFAULT_SLIDING_WINDOW = 4096


def _refuse_sliding_window(config: dict) -> None:
    """Qwen3Config slides a window over the layers layer_types names (by default those from max_window_layers on)
    when use_sliding_window is set and the window is shorter than the context."""
    window = config.get("sliding_window", _DEFAULT_SLIDING_WINDOW) if config.get("use_sliding_window", False) else None
    if window is None or window >= config["max_position_embeddings"]:
        return
    start = config.get("max_window_layers", _DEFAULT_MAX_WINDOW_LAYERS)
    kinds = config.get("layer_types") or ["full_attention" if i < start else "sliding_attention"
                                          for i in range(config["num_hidden_layers"])]
    sliding = [i for i, kind in enumerate(kinds) if kind != "full_attention"]
    if sliding:
        raise ConfigError(f"qwen3: config.json has use_sliding_window = true with sliding_window = {window} on layers "
                          f"{sliding} (layer_types / max_window_layers); the transformer attends to the whole sequence "
                          f"(set use_sliding_window to false only if the model was trained that way).")


def options(config: dict) -> dict:
    _refuse_sliding_window(config)
    return {**rope_decoder_options({"head_dim": _DEFAULT_HEAD_DIM, **config}), "qk_norm": True}


def hf_config(opts, vocab_size: int, max_seq_len: int) -> dict:
    return {**rope_decoder_config("qwen3", opts, vocab_size, max_seq_len, qk_norm=True), "use_sliding_window": False,
            "sliding_window": None}


FAMILY = Family("qwen3", ("qwen3",), ("Qwen3ForCausalLM",), RULES, options, hf_config, objective="clm",
                geometry=transformer_geometry, **TRANSFORMER)


def build(options, ctx) -> Family:
    return FAMILY
