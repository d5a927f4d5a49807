"""Objective ``text_infilling`` (BART): denoising pretraining of an encoder-decoder that reconstructs the whole text.

Of each block's tokens, ``mask_ratio`` (30%) are masked in spans whose lengths are drawn from a Poisson distribution
(``poisson_lambda`` 3); each span, however long, becomes one mask token (the tokenizer's ``mask``), and a span of
length 0 inserts a mask token, so the model also learns how many tokens are missing. The spans are placed at
distinct positions between the kept tokens, so two spans are never adjacent. With ``permute_sentences`` the sentences
(token runs ending in a token whose text ends with ``.``, ``!``, ``?`` or a newline) are shuffled first. The target
is the original block. The loss, label smoothing and accuracy are ``seq2seq``'s.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.plugins.objectives.seq2seq import Denoising, Seq2SeqOptions, require_encoder_decoder

_SENTENCE_ENDS = (".", "!", "?", "\n")


class TextInfillingOptions(Seq2SeqOptions):
    mask_ratio: float = Field(0.3, gt=0.0, lt=1.0, description="share of each block's tokens masked")
    poisson_lambda: float = Field(3.0, gt=0.0, le=1000.0, description="mean length of a masked span (Poisson)")
    permute_sentences: bool = Field(False, description="shuffle the sentences of each block before masking")
    eval_seed: int = Field(0, description="seed of the corruption used in evaluation")


def span_lengths(total: int, poisson_lambda: float, rng: np.random.Generator) -> list[int]:
    """Poisson lengths drawn until they cover ``total`` tokens, the last one cut so that they sum to ``total``."""
    lengths, covered = [], 0
    while covered < total:
        lengths.append(int(rng.poisson(poisson_lambda)))
        covered += lengths[-1]
    lengths[-1] -= covered - total
    return lengths


def text_infilling(tokens: list[int], mask_id: int, mask_ratio: float, poisson_lambda: float,
                   rng: np.random.Generator) -> list[int]:
    """The corrupted source of ``tokens`` (see the module docstring)."""
    masked = round(len(tokens) * mask_ratio)
    if masked == 0:
        return list(tokens)
    lengths = span_lengths(masked, poisson_lambda, rng)
    gaps = len(tokens) - masked + 1  # places for a span: before, between and after the kept tokens
    if len(lengths) > gaps:  # more spans than places: the extra ones join the last placed span
        lengths = [*lengths[:gaps - 1], sum(lengths[gaps - 1:])]
    starts = dict(zip(sorted(rng.choice(gaps, len(lengths), replace=False).tolist()), lengths))
    source, position = [], 0
    for gap in range(gaps):
        if gap in starts:
            source.append(mask_id)
            position += starts[gap]
        if position < len(tokens):
            source.append(tokens[position])
            position += 1
    return source


def sentence_permutation(tokens: list[int], sentence_ends: frozenset[int], rng: np.random.Generator) -> list[int]:
    """``tokens`` with its sentences (runs ending in a token of ``sentence_ends``, and the rest) shuffled."""
    sentences, current = [], []
    for token in tokens:
        current.append(token)
        if token in sentence_ends:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return [token for index in rng.permutation(len(sentences)) for token in sentences[index]]


class TextInfilling(Denoising):
    name = "text_infilling"

    def __init__(self, options: TextInfillingOptions, special, sentence_ends: frozenset[int]):
        super().__init__(options, special)
        self.options, self.sentence_ends = options, sentence_ends

    def corrupt(self, tokens: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        shuffled = sentence_permutation(tokens, self.sentence_ends, rng) if self.options.permute_sentences else tokens
        return text_infilling(shuffled, self.special.mask, self.options.mask_ratio, self.options.poisson_lambda,
                              rng), list(tokens)


def build(options: TextInfillingOptions, ctx) -> TextInfilling:
    require_encoder_decoder(ctx, "text_infilling")
    tokenizer = ctx.tokenizer
    if not 0 <= tokenizer.special.mask < tokenizer.vocab_size:
        raise ConfigError("objective text_infilling replaces spans with the tokenizer's mask token, and this "
                          f"tokenizer has none (mask id {tokenizer.special.mask}); use tokenizer.name: sentencepiece "
                          f"or byte.")
    sentence_ends = frozenset()
    if options.permute_sentences:
        sentence_ends = frozenset(i for i in range(tokenizer.vocab_size) if i not in tokenizer.special.ids()
                                  and tokenizer.decode([i]).endswith(_SENTENCE_ENDS))
    return TextInfilling(options, tokenizer.special, sentence_ends)
