"""Sentence-pair objectives on ``[cls] A [sep] B [sep]`` examples: one classifier over the pair, two tasks.

- ``sop``, sentence-order prediction (ALBERT): A and B are consecutive spans of one document; label 1 when they
  were swapped. Reads the batch field ``sop_labels``.
- ``nsp``, next-sentence prediction (BERT): label 1 when B comes from another document. Reads ``nsp_labels``.

The data part ``sentences`` makes both (``task: sop`` or ``task: nsp``). The head (named like the objective) is a
linear classifier over the model's ``"pooled"`` head output when the model has one (``model.pooler: true``; that
pooler is shared, not copied), else over the hidden state of the first token (``[cls]``).
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
import torch.nn.functional as F

from hookformer.core.objective import batch_field
from hookformer.core.parts import ObjectiveResult, PartOptions
from hookformer.plugins.objectives.baselines import label_prior

Task = Literal["sop", "nsp"]


class SentencePairOptions(PartOptions):
    """The sentence-pair objectives have no options."""


class PairClassifier(nn.Module):
    """Head ``(hidden, attention_mask) -> (B, classes)`` logits over the pooled output or the first token."""

    def __init__(self, width: int, classes: int, pooler: nn.Module | None):
        super().__init__()
        # In a tuple, the model's own pooler is called but not registered again (its weights stay in one place).
        self._pooler = (pooler,) if pooler is not None else ()
        self.classifier = nn.Linear(width, classes)

    def forward(self, hidden, attention_mask=None):
        pooled = self._pooler[0](hidden, attention_mask) if self._pooler else hidden[:, 0]
        return self.classifier(pooled)


class SentencePair:
    """Cross-entropy of the pair classifier; one item per example. Implements the shared-forward extension."""

    loss_unit = "pair"

    def __init__(self, task: Task):
        self.task = task
        self.heads = (task,)
        self.labels_field = f"{task}_labels"


    def score(self, outputs: dict, batch: dict) -> ObjectiveResult:
        labels = batch_field(batch, self.labels_field, self.task,
                                     f"use data.name: sentences with task: {self.task}")
        logits = outputs[self.task]
        loss_sum = F.cross_entropy(logits.float(), labels, reduction="sum")
        return ObjectiveResult(loss_sum, len(labels), logits=logits, targets=labels)

    def baseline(self, train, validation: dict) -> dict[str, float]:
        return label_prior(train, validation, self.labels_field, 2)


def attach(task: Task, ctx) -> SentencePair:
    model = ctx.model
    heads = getattr(model, "heads", {})  # the attached heads (an nn.ModuleDict in the transformer)
    pooler = heads["pooled"] if "pooled" in heads else None
    model.add_head(task, PairClassifier(model.d_model, 2, pooler))
    return SentencePair(task)


def build_sop(options: SentencePairOptions, ctx) -> SentencePair:
    return attach("sop", ctx)


def build_nsp(options: SentencePairOptions, ctx) -> SentencePair:
    return attach("nsp", ctx)
