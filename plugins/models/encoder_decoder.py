"""An encoder-decoder Transformer (the original Transformer, BART, T5) made of the transformer model's Block: a
bidirectional encoder reads the source, a causal decoder whose blocks add a cross-attention sub-layer over the
encoder's output writes the target. Cross-attention is a call to the attention stage (T_q != T_k, not causal, the
source's padding mask), so every kernel whose capabilities cover that call serves it.

Parameter names: the decoder's are the transformer's (``tok_emb``, ``pos_emb``, ``blocks.N.*`` with
``blocks.N.cross_norm`` and ``blocks.N.cross_attn.{q,kv,proj}``, ``norm``, ``lm_head``, task heads ``heads.*``),
the encoder's sit under ``encoder.`` (its ``encoder.tok_emb`` is the decoder's with ``share_embeddings``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.plugins.models.transformer import KVCache, Transformer, TransformerOptions, shapes


class EncoderDecoderOptions(TransformerOptions):
    n_layer: int = Field(4, gt=0, description="decoder blocks (each: self-attention, cross-attention, MLP)")
    n_encoder_layer: int | None = Field(None, gt=0, description="encoder blocks; null means n_layer")
    share_embeddings: bool = Field(True, description="one token embedding for the source and the target (with "
                                   "tie_embeddings also the output projection: the original Transformer's three-way "
                                   "sharing); false gives the encoder an embedding of its own")
    max_seq_len: int | None = Field(None, gt=0, description="longest source and longest target (the positions of "
                                    "each stack); null means the data block size")
    causal: Literal[True] = Field(True, description="fixed: the encoder is bidirectional, the decoder causal")
    type_vocab_size: Literal[0] = Field(0, description="fixed at 0: no segment embeddings")
    pooler: Literal[False] = Field(False, description="fixed at false: sentence-level heads read the decoder's "
                                   "hidden states (add_head)")

    def transformer_options(self, **changes) -> TransformerOptions:
        """These options as the transformer's, with ``changes``."""
        own = set(type(self).model_fields) - set(TransformerOptions.model_fields)
        return TransformerOptions(**{**self.model_dump(exclude=own), **changes})


class EncoderDecoder(Transformer):
    """The decoder (this module: a causal transformer whose blocks have cross-attention) and its ``encoder`` (a
    bidirectional transformer without an output projection), both with ``max_seq_len`` positions.

    ``causal`` is true: the decoder writes the target left to right, so text generation applies
    (:func:`hookformer.core.parts.is_decoder`); ``encoder_decoder`` is true: a call needs a source
    (``input_ids`` or ``encoder_hidden``) besides the target (``decoder_input_ids``)."""

    OUTPUTS = ("hidden", "lm", "encoder_hidden")
    encoder_decoder = True

    def __init__(self, opts: EncoderDecoderOptions, attention, vocab_size: int, max_seq_len: int):
        super().__init__(opts, attention, vocab_size, max_seq_len, cross_attention=True)
        encoder = opts.transformer_options(n_layer=opts.n_encoder_layer or opts.n_layer, causal=False)
        self.encoder = Transformer(encoder, attention, vocab_size, max_seq_len, lm_head=False)
        if opts.share_embeddings:
            self.encoder.tok_emb = self.tok_emb

    def encode(self, input_ids, attention_mask=None):
        """The encoder's hidden states (B, S, d_model) for the source ``input_ids`` (B, S); zeros on padding when
        the encoder skips it (``unpad``). Generation encodes once and passes them as ``encoder_hidden``."""
        return self.encoder.hidden_states(input_ids, attention_mask)

    def forward(self, input_ids=None, attention_mask=None, *, decoder_input_ids=None, decoder_attention_mask=None,
                token_type_ids=None, document_ids=None, heads=None, cache: KVCache | None = None,
                encoder_hidden=None):
        """Decoder logits (B, T_dec, vocab) for the source ``input_ids`` (B, S) with its ``attention_mask`` and the
        teacher-forced target ``decoder_input_ids`` (B, T_dec) with ``decoder_attention_mask``. With ``heads``, a
        dict: ``"lm"``, ``"hidden"`` (the decoder's hidden states), ``"encoder_hidden"``, task heads (on the
        decoder's hidden states and ``decoder_attention_mask``).

        ``encoder_hidden`` (from ``encode``) skips the encoder. With ``cache`` (``new_cache()``) the decoder ids are
        the new target tokens only and ``decoder_attention_mask`` covers every target token so far; the first call
        keeps the source's cross-attention keys and values and padding mask in the cache, and later calls read them
        from it (the source arguments may then be left out; ``cache.reorder`` selects their rows too)."""
        if decoder_input_ids is None:
            raise ConfigError("model encoder_decoder needs decoder_input_ids (the target, starting with bos) besides "
                              "input_ids (the source): use a sequence-to-sequence objective and pairs data")
        if token_type_ids is not None or document_ids is not None:
            raise ConfigError("model encoder_decoder takes no token_type_ids or document_ids (segments and packed "
                              "documents): the source and the target are separate sequences; turn them off in the "
                              "data section")
        memory = memory_mask = None
        if cache is not None and cache.has_memory:
            memory_mask = cache.memory_mask
        else:
            if encoder_hidden is not None:
                memory = encoder_hidden
            elif input_ids is not None:
                memory = self.encode(input_ids, attention_mask)
            else:
                raise ConfigError("model encoder_decoder needs the source: input_ids, or encoder_hidden from "
                                  "model.encode (or a cache that holds them)")
            memory_mask = attention_mask.bool() if attention_mask is not None else None
            if cache is not None:
                cache.memory_mask = memory_mask
        hidden = self.hidden_states(decoder_input_ids, decoder_attention_mask, cache=cache, memory=memory,
                                    memory_mask=memory_mask)
        if heads is None:
            return self.lm_logits(hidden)
        if "encoder_hidden" in heads and memory is None:
            raise ConfigError('the "encoder_hidden" output is not kept in a KV cache: ask for it on the first cached '
                              "call, or call model.encode")
        return self.outputs(hidden, decoder_attention_mask, heads, encoder_hidden=memory)


def build(options: EncoderDecoderOptions, ctx) -> EncoderDecoder:
    """The encoder-decoder for the run's negotiated shapes: ``max_seq_len`` bounds the source and the target."""
    return EncoderDecoder(options, ctx.attention, *shapes(options, ctx))
