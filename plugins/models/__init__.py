"""Built-in models."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("model", "transformer", "pre-norm Transformer on the attention stage; causal (GPT-style decoder) "
                 "by default, bidirectional with causal: false", factory=f"{_HERE}.transformer:build",
                 options=f"{_HERE}.transformer:TransformerOptions"),
        PartSpec("model", "encoder_decoder", "encoder-decoder Transformer (original Transformer, BART, T5-style): "
                 "a bidirectional encoder and a causal decoder whose blocks cross-attend to it, on the attention "
                 "stage; reads input_ids (source) and decoder_input_ids (target)",
                 factory=f"{_HERE}.encoder_decoder:build", options=f"{_HERE}.encoder_decoder:EncoderDecoderOptions"),
        # Hugging Face families (hookformer import/export) map onto this model part, so they register with it.
        PartSpec("family", "gpt2", "Hugging Face GPT2LMHeadModel <-> transformer with its default options",
                 factory="hookformer.plugins.families.gpt2:build"),
        PartSpec("family", "llama", "Hugging Face LlamaForCausalLM / MistralForCausalLM (no sliding window) <-> "
                 "transformer with rope, rmsnorm, swiglu, grouped-query attention, no biases",
                 factory="hookformer.plugins.families.llama:build"),
        PartSpec("family", "qwen3", "Hugging Face Qwen3ForCausalLM (no sliding window) <-> transformer as for llama, "
                 "with qk_norm", factory="hookformer.plugins.families.qwen3:build"),
        PartSpec("family", "bert", "Hugging Face BertForMaskedLM <-> transformer with post-norm blocks, an embedding "
                 "norm, exact GELU, segment embeddings and the masked-LM head transform",
                 factory="hookformer.plugins.families.bert:build_masked_lm"),
        PartSpec("family", "bert_model", "Hugging Face BertModel <-> transformer as for bert, with the pooler "
                 "instead of the masked-LM head", factory="hookformer.plugins.families.bert:build_model"),
    ]
