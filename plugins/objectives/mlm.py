"""Masked language modeling (BERT): predict a random 15% of the tokens from the rest of the sequence.

Of the selected tokens, 80% are replaced by the mask token, 10% by a random regular token and 10% are left as they
are; special and padding tokens are never selected, and the loss covers the selected positions only. Use it with a
bidirectional model (``model.causal: false``). Training masks come from the run's seeded RNG (so a resumed run masks
exactly as the uninterrupted one); evaluation masks come from a fixed seed, so every evaluation scores the same task.

The masking options (whole-word and span masking, MLM as correction with similar words, word boundaries from the
tokenizer's pieces or from ``jieba``) are described in :mod:`hookformer.plugins.objectives.masking`; with their
defaults, masking is BERT's, token by token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hookformer.core.parts import ObjectiveResult
from hookformer.plugins.objectives.baselines import unigram_val_loss
from hookformer.plugins.objectives.masking import (MaskingOptions, SimilarWords, WordBoundaries, select_words,
                                                   similar_words, span_probabilities, word_boundaries, word_firsts)

IGNORE = -100


class MLMOptions(MaskingOptions):
    """The masking options (see hookformer.plugins.objectives.masking)."""


class MaskedLM:
    """Implements the shared-forward extension: ``transform`` masks the inputs and keeps the targets in the batch
    field ``mlm_targets``, ``score`` reads the language-model logits."""

    heads = ("lm",)

    def __init__(self, options: MLMOptions, vocab_size: int, special_ids: set[int], mask_id: int,
                 boundaries: WordBoundaries | None = None, similar: SimilarWords | None = None):
        self.options = options
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.special = torch.tensor(sorted(special_ids))
        self.regular = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
        if options.masking != "token" and boundaries is None:
            raise ValueError(f"masking: {options.masking} needs a word-boundary source")
        if options.replace_with_similar and similar is None:
            raise ValueError("replace_with_similar needs a similar-word source")
        self.boundaries = boundaries
        self.similar = similar
        self.span_lengths = span_probabilities(options)

    def mask(self, input_ids: torch.Tensor, attention_mask=None, generator: torch.Generator | None = None):
        """(inputs, targets): ``inputs`` with the selected tokens replaced; ``targets`` holds the original id at
        selected positions and ``IGNORE`` elsewhere."""
        device, options = input_ids.device, self.options

        def uniform():
            return torch.rand(input_ids.shape, generator=generator).to(device)

        candidates = ~torch.isin(input_ids, self.special.to(device))
        if attention_mask is not None:
            candidates &= attention_mask.bool()
        if options.masking == "token":
            selected = (uniform() < options.mask_prob) & candidates
            firsts = None
        else:
            starts = self.boundaries.word_starts(input_ids) | ~candidates
            starts[:, 1:] |= ~candidates[:, :-1]  # a word ends where padding or a special token begins
            selected = select_words(starts, candidates, options.mask_prob, self.span_lengths, generator).to(device)
            firsts = word_firsts(starts)
        how = uniform()
        if firsts is not None:
            how = how.gather(1, firsts)  # one draw per word: the word is replaced, or kept, as a whole
        shares = torch.tensor([options.replace_with_mask, options.replace_with_similar, options.replace_with_random],
                              device=device).cumsum(0)
        to_mask = selected & (how < shares[0])
        to_similar = selected & ~to_mask & (how < shares[1])
        to_random = selected & ~to_mask & ~to_similar & (how < shares[2])
        random_ids = self.regular[torch.randint(len(self.regular), input_ids.shape, generator=generator)].to(device)
        inputs = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        inputs = torch.where(to_random, random_ids, inputs)
        if self.similar is not None and to_similar.any():
            inputs = inputs.masked_scatter(to_similar, self.similar.similar(input_ids[to_similar], generator))
        return inputs, input_ids.masked_fill(~selected, IGNORE)

    def transform(self, batch: dict, training: bool) -> dict:
        """The batch with masked ``input_ids`` and the targets in ``mlm_targets``."""
        generator = None if training else torch.Generator().manual_seed(self.options.eval_seed)
        inputs, targets = self.mask(batch["input_ids"], batch.get("attention_mask"), generator)
        return {**batch, "input_ids": inputs, "mlm_targets": targets}

    def score(self, outputs: dict, batch: dict) -> ObjectiveResult:
        logits, targets = outputs["lm"], batch["mlm_targets"]
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum")
        return ObjectiveResult(loss_sum, int((targets != IGNORE).sum()), logits=logits, targets=targets,
                               ignore_index=IGNORE)

    def baseline(self, train, validation: dict) -> dict[str, float]:
        return unigram_val_loss(train, validation, self.vocab_size)


def masked_lm(options: MLMOptions, ctx) -> MaskedLM:
    """The masking of ``options`` for the run's tokenizer (and model, for similar words)."""
    tokenizer = ctx.tokenizer
    special = tokenizer.special.ids()
    regular = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in special])
    boundaries = word_boundaries(options.word_boundaries, tokenizer) if options.masking != "token" else None
    similar = similar_words(options, tokenizer, ctx.model, regular)
    return MaskedLM(options, tokenizer.vocab_size, special, tokenizer.special.mask, boundaries, similar)


def build(options: MLMOptions, ctx) -> MaskedLM:
    return masked_lm(options, ctx)
