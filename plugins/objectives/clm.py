"""Causal language modeling: the logits at position t predict the token at t + 1."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from hookformer.core.parts import ObjectiveResult, PartOptions, model_inputs
from hookformer.plugins.objectives.baselines import unigram_val_loss

IGNORE = -100


class CLMOptions(PartOptions):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the cross-entropy")


class CausalLM:
    def __init__(self, options: CLMOptions, vocab_size: int):
        self.label_smoothing = options.label_smoothing
        self.vocab_size = vocab_size

    def __call__(self, model, batch: dict) -> ObjectiveResult:
        input_ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        logits = model(input_ids, **model_inputs(batch))[:, :-1]
        targets = input_ids[:, 1:]
        if attention_mask is not None:
            targets = targets.masked_fill(~attention_mask[:, 1:].bool(), IGNORE)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum", label_smoothing=self.label_smoothing)
        num_items = int((targets != IGNORE).sum())
        return ObjectiveResult(loss_sum, num_items, logits=logits, targets=targets, ignore_index=IGNORE)

    def baseline(self, train, validation: dict) -> dict[str, float]:
        return unigram_val_loss(train, validation, self.vocab_size)


def build(options: CLMOptions, ctx) -> CausalLM:
    return CausalLM(options, ctx.tokenizer.vocab_size)
