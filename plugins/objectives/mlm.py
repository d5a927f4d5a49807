"""Masked language modeling (BERT): predict a random 15% of the tokens from the rest of the sequence.

Of the selected tokens, 80% are replaced by the mask token, 10% by a random regular token and 10% are left as they
are; special and padding tokens are never selected, and the loss covers the selected positions only. Use it with a
bidirectional model (``model.causal: false``). Training masks come from the run's seeded RNG (so a resumed run masks
exactly as the uninterrupted one); evaluation masks come from a fixed seed, so every evaluation scores the same task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from hookformer.core.parts import ObjectiveResult, PartOptions
from hookformer.plugins.objectives.baselines import unigram_val_loss

IGNORE = -100


class MLMOptions(PartOptions):
    mask_prob: float = Field(0.15, gt=0.0, lt=1.0, description="share of regular tokens selected for prediction")
    replace_with_mask: float = Field(0.8, ge=0.0, le=1.0, description="share of selected tokens set to the mask token")
    replace_with_random: float = Field(0.1, ge=0.0, le=1.0, description="share set to a random regular token")
    eval_seed: int = Field(0, description="seed of the masks used in evaluation")

    @model_validator(mode="after")
    def _shares_fit(self):
        if self.replace_with_mask + self.replace_with_random > 1.0:
            raise ValueError("replace_with_mask + replace_with_random must be at most 1 (the rest stays unchanged)")
        return self


class MaskedLM:
    """Implements the shared-forward extension: ``transform`` masks the inputs and keeps the targets in the batch
    field ``mlm_targets``, ``score`` reads the language-model logits."""

    heads = ("lm",)

    def __init__(self, options: MLMOptions, vocab_size: int, special_ids: set[int], mask_id: int):
        self.options = options
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.special = torch.tensor(sorted(special_ids))
        self.regular = torch.tensor([i for i in range(vocab_size) if i not in special_ids])

    def mask(self, input_ids: torch.Tensor, attention_mask=None, generator: torch.Generator | None = None):
        """(inputs, targets): ``inputs`` with the selected tokens replaced; ``targets`` holds the original id at
        selected positions and ``IGNORE`` elsewhere."""
        device = input_ids.device

        def uniform():
            return torch.rand(input_ids.shape, generator=generator).to(device)

        candidates = ~torch.isin(input_ids, self.special.to(device))
        if attention_mask is not None:
            candidates &= attention_mask.bool()
        selected = (uniform() < self.options.mask_prob) & candidates
        how = uniform()
        to_mask = selected & (how < self.options.replace_with_mask)
        to_random = selected & ~to_mask & (how < self.options.replace_with_mask + self.options.replace_with_random)
        random_ids = self.regular[torch.randint(len(self.regular), input_ids.shape, generator=generator)].to(device)
        inputs = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        inputs = torch.where(to_random, random_ids, inputs)
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


def build(options: MLMOptions, ctx) -> MaskedLM:
    tokenizer = ctx.tokenizer
    return MaskedLM(options, tokenizer.vocab_size, tokenizer.special.ids(), tokenizer.special.mask)
