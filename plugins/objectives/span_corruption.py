"""Objective ``span_corruption`` (T5): denoising pretraining of an encoder-decoder.

Of each block's tokens, ``noise_density`` (15%) are dropped in spans of ``mean_span_length`` (3) tokens on average:
the source keeps the other tokens with each dropped span replaced by one sentinel token (``<extra_id_0>``,
``<extra_id_1>``, ... in order), and the target lists each sentinel followed by the span it stands for. As in T5's
``random_spans_noise_mask``: the number of noise tokens is round(length x noise_density) (at least 1, at most
length - 1), the number of spans round(noise tokens / mean_span_length) (at least 1), both the noise and the kept
tokens are cut into that many non-empty spans at random, and the kept and noise spans alternate, starting with kept
tokens (so a block always ends with noise). Example: ``Thank you for inviting me to your party last week`` -> source
``Thank you <extra_id_0> me to your party <extra_id_1>``, target ``<extra_id_0> for inviting <extra_id_1> last
week``.

The sentinels are real entries of the tokenizer's vocabulary (each must encode as one token): sentencepiece makes
them with ``tokenizer.sentinel_tokens``. The loss, label smoothing and accuracy are ``seq2seq``'s.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.plugins.objectives.seq2seq import Denoising, Seq2SeqOptions, require_encoder_decoder

SENTINEL = "<extra_id_{}>"


class SpanCorruptionOptions(Seq2SeqOptions):
    noise_density: float = Field(0.15, gt=0.0, lt=1.0, description="share of each block's tokens dropped into "
                                 "spans")
    mean_span_length: float = Field(3.0, ge=1.0, le=1000.0, description="mean length of a dropped span, in tokens")
    eval_seed: int = Field(0, description="seed of the corruption used in evaluation")


def random_segmentation(total: int, segments: int, rng: np.random.Generator) -> np.ndarray:
    """``segments`` positive lengths summing to ``total``, every such split equally likely."""
    cuts = np.sort(rng.choice(np.arange(1, total), segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a sequence of ``length`` >= 2 tokens."""
    noise = min(max(round(length * noise_density), 1), length - 1)
    spans = max(1, round(noise / mean_span_length))
    return noise, min(spans, noise, length - noise)


def noise_mask(length: int, noise_density: float, mean_span_length: float, rng: np.random.Generator) -> np.ndarray:
    """A bool mask of ``length`` >= 2 positions, True on the noise spans (see the module docstring)."""
    noise, spans = span_counts(length, noise_density, mean_span_length)
    noise_lengths = random_segmentation(noise, spans, rng)
    kept_lengths = random_segmentation(length - noise, spans, rng)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
    return np.repeat(np.tile([False, True], spans), interleaved)


def span_corruption(tokens: list[int], sentinels: list[int], noise_density: float, mean_span_length: float,
                    rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(source, target) of ``tokens`` (see the module docstring). A sequence shorter than two tokens has nothing to
    corrupt: it is the source, with an empty target."""
    if len(tokens) < 2:
        return list(tokens), []
    mask = noise_mask(len(tokens), noise_density, mean_span_length, rng)
    source, target, span = [], [], -1
    for position, (token, noisy) in enumerate(zip(tokens, mask)):
        if noisy and (position == 0 or not mask[position - 1]):
            span += 1
            source.append(sentinels[span])
            target.append(sentinels[span])
        (target if noisy else source).append(token)
    return source, target


def sentinel_ids(tokenizer, count: int) -> list[int]:
    """The ids of ``<extra_id_0>`` ... ``<extra_id_{count-1}>``; ConfigError when the tokenizer does not have them as
    single tokens."""
    ids = []
    for i in range(count):
        encoded = tokenizer.encode(SENTINEL.format(i))
        if len(encoded) != 1 or encoded[0] == tokenizer.special.unk:
            raise ConfigError(f"objective span_corruption needs {count} sentinel tokens (<extra_id_0> ... "
                              f"<extra_id_{count - 1}>) as single entries of the tokenizer's vocabulary, and "
                              f"{SENTINEL.format(i)} is not one. With tokenizer.name: sentencepiece set "
                              f"tokenizer.sentinel_tokens: {count} (or more) and train a new tokenizer.")
        ids.append(encoded[0])
    return ids


class SpanCorruption(Denoising):
    name = "span_corruption"

    def __init__(self, options: SpanCorruptionOptions, special, sentinels: list[int]):
        super().__init__(options, special)
        self.options, self.sentinels = options, sentinels

    def corrupt(self, tokens: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        return span_corruption(tokens, self.sentinels, self.options.noise_density, self.options.mean_span_length,
                               rng)


def build(options: SpanCorruptionOptions, ctx) -> SpanCorruption:
    require_encoder_decoder(ctx, "span_corruption")
    # The most spans a block can have decides how many sentinels are needed.
    block = ctx.data.block_size if ctx.data is not None else ctx.model.max_seq_len
    _, spans = span_counts(max(block - 1, 2), options.noise_density, options.mean_span_length)
    return SpanCorruption(options, ctx.tokenizer.special, sentinel_ids(ctx.tokenizer, spans))
