"""Sentence permutation: a span of a document's sentences is shuffled, and the model predicts each sentence's
original position (0 = it came first) at that sentence's first token.

The data part ``sentences`` with ``task: permutation`` makes the examples: the batch field
``sentence_order_labels`` holds the original index at each sentence's first token and -100 elsewhere. The head
``sentence_order`` is a linear token classifier over ``max_sentences`` classes, scored at those positions only.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.core.objective import batch_field
from hookformer.core.parts import ObjectiveResult, PartOptions
from hookformer.plugins.objectives.baselines import label_prior

IGNORE = -100
LABELS = "sentence_order_labels"


class SentenceOrderOptions(PartOptions):
    max_sentences: int | None = Field(None, ge=2, description="classes of the head, the most sentences in a span; "
                                      "null: the data part's max_sentences")


class TokenClassifier(nn.Module):
    """Head ``(hidden, attention_mask) -> (B, T, classes)``."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.classifier = nn.Linear(width, classes)

    def forward(self, hidden, attention_mask=None):
        return self.classifier(hidden)


class SentenceOrder:
    """Cross-entropy of the original position at every sentence start; one item per sentence. Implements the
    shared-forward extension."""

    loss_unit = "sentence"

    heads = ("sentence_order",)

    def __init__(self, max_sentences: int):
        self.max_sentences = max_sentences


    def score(self, outputs: dict, batch: dict) -> ObjectiveResult:
        labels = batch_field(batch, LABELS, "sentence_order",
                                     "use data.name: sentences with task: permutation")
        logits = outputs["sentence_order"]
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum")
        return ObjectiveResult(loss_sum, int((labels != IGNORE).sum()), logits=logits, targets=labels,
                               ignore_index=IGNORE)

    def baseline(self, train, validation: dict) -> dict[str, float]:
        return label_prior(train, validation, LABELS, self.max_sentences)


def build(options: SentenceOrderOptions, ctx) -> SentenceOrder:
    in_data = getattr(ctx.data, "max_sentences", None)
    classes = options.max_sentences or in_data
    if classes is None:
        raise ConfigError("objective sentence_order: the data part does not say how many sentences a span holds; "
                          "set objective.max_sentences, or use data.name: sentences with task: permutation.")
    if in_data is not None and classes < in_data:
        raise ConfigError(f"objective.max_sentences ({classes}) is below data.max_sentences ({in_data}): the head "
                          f"needs a class for every position in a span; leave it null to follow the data.")
    ctx.model.add_head("sentence_order", TokenClassifier(ctx.model.d_model, classes))
    return SentenceOrder(classes)
