"""Token classification: one label per token (e.g. named entities, parts of speech).

The objective attaches the head ``token_classifier`` (dropout -> linear at every position). The batch's ``labels``
(B, T) hold a class id where a label is scored (the labeled data part puts it on each word's first sub-word piece)
and -100 everywhere else; the loss and the metrics cover the scored positions only.
"""

from __future__ import annotations

import torch.nn as nn
from pydantic import Field

from hookformer.core.parts import BuildContext, PartOptions
from hookformer.plugins.objectives.classification import Classification, linear_head, num_labels_of

HEAD = "token_classifier"


class TokenClassificationOptions(PartOptions):
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the hidden states, before the classifier")


class TokenClassifier(nn.Module):
    """``(hidden, attention_mask) -> (B, T, num_labels)`` logits."""

    def __init__(self, width: int, num_labels: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.out = linear_head(width, num_labels)

    def forward(self, hidden, attention_mask=None):
        return self.out(self.drop(hidden))


def build(options: TokenClassificationOptions, ctx: BuildContext) -> Classification:
    num_labels = num_labels_of(ctx, "token_classification")
    ctx.model.add_head(HEAD, TokenClassifier(ctx.model.d_model, num_labels, options.dropout))
    return Classification(HEAD, num_labels)
