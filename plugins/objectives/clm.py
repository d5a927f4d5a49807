"""Causal language modeling: the logits at position t predict the token at t + 1.

The same code scores supervised fine-tuning (objective ``sft``): there the targets are the batch's ``labels`` (the
input ids with the positions that are not to be learned, the prompt and padding, set to -100) instead of the input
ids themselves.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from hookformer.core.objective import batch_field
from hookformer.core.parts import ObjectiveResult, PartOptions
from hookformer.plugins.objectives.baselines import unigram_val_loss

IGNORE = -100


class CLMOptions(PartOptions):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the training cross-entropy "
                                   "(evaluation scores the unsmoothed loss)")


class CausalLM:
    """Next-token cross-entropy. With ``labels_field`` the targets are that batch field (-100: not scored), else
    the input ids; padding (``attention_mask`` 0) is never scored. Implements the shared-forward extension."""

    heads = ("lm",)

    def __init__(self, options: CLMOptions, vocab_size: int, labels_field: str | None = None):
        self.label_smoothing = options.label_smoothing
        self.vocab_size = vocab_size
        self.labels_field = labels_field


    def score(self, outputs: dict, batch: dict, training: bool = False) -> ObjectiveResult:
        """The summed cross-entropy; label smoothing applies to training only, so that evaluation reports the
        model's real loss (and perplexity)."""
        logits = outputs["lm"][:, :-1]
        targets = self._labels(batch)[:, 1:]
        attention_mask = batch.get("attention_mask")
        if attention_mask is not None:
            targets = targets.masked_fill(~attention_mask[:, 1:].bool(), IGNORE)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum",
                                   label_smoothing=self.label_smoothing if training else 0.0)
        num_items = int((targets != IGNORE).sum())
        return ObjectiveResult(loss_sum, num_items, logits=logits, targets=targets, ignore_index=IGNORE)

    def _labels(self, batch: dict):
        if self.labels_field is None:
            return batch["input_ids"]
        return batch_field(batch, self.labels_field, "sft", "use data.name: prompt_response, or a data "
                                   "part that marks the tokens to learn in labels")

    def baseline(self, train, validation: dict) -> dict[str, float]:
        """The unigram loss over the scored tokens (all tokens, or the labeled ones)."""
        if self.labels_field is not None:
            train, validation = (_scored(table, self.labels_field) if isinstance(table, dict) else table
                                 for table in (train, validation))
        return unigram_val_loss(train, validation, self.vocab_size)


def _scored(table: dict, labels_field: str) -> dict:
    """An examples table whose tokens are the scored labels, the others masked out (for ``unigram_val_loss``)."""
    labels = table[labels_field]
    return {"input_ids": labels.clamp(min=0), "attention_mask": labels != IGNORE}


def vocabulary(ctx) -> int:
    """The ids the unigram baseline counts: the tokenizer's, or the model's when a run is assembled without one."""
    return ctx.tokenizer.vocab_size if ctx.tokenizer is not None else ctx.model.vocab_size


def build(options: CLMOptions, ctx) -> CausalLM:
    return CausalLM(options, vocabulary(ctx))
