"""Sequence classification: one label per sequence, from a pooled summary of the model's hidden states.

The objective attaches the head ``classifier`` (pooling -> dropout -> linear) to the model, so it is trained and
checkpointed with it. ``pooling: auto`` reads the model's ``pooled`` head when it has one (the BERT pooler), else the
first token of a bidirectional encoder (``[cls]``, which sees the whole sequence) and the last real token of a
decoder (the only position that sees the whole sequence). The number of classes comes from the data part's
``label_names``; the batch's ``labels`` (B,) hold class ids.

The model sees each batch without the padding after its longest example (``trim_padding``): the labeled data part
pads every example to ``max_length``, and short texts (SST-2 at 128: about 15 real tokens) would otherwise spend most
of the compute on padding. The cut changes no result: those positions are padding in every row, so no real token
attends to them and nothing scored lies there (token labels on padding are -100).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.core.parts import MODEL_INPUTS, BuildContext, ObjectiveResult, PartOptions, is_decoder, model_inputs

IGNORE = -100
HEAD = "classifier"
#: Trimmed batches keep a multiple of this many positions: few distinct shapes, each a multiple of a vector width.
TRIM_PADDING = 8

Pooling = Literal["auto", "pooled", "first", "last", "mean"]


class ClassificationOptions(PartOptions):
    pooling: Pooling = Field(
        "auto", description="how a sequence becomes one vector: pooled = the model's pooled head (model.pooler); "
        "first = the first token's hidden state; last = the last real token's; mean = the mean over real tokens; "
        "auto = pooled when the model has it, else first for an encoder and last for a decoder")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the pooled vector, before the classifier")
    trim_padding: int | None = Field(
        TRIM_PADDING, ge=1, description="cut each batch after its longest example, keeping a multiple of this many "
        "positions (larger values: fewer distinct shapes, e.g. for torch.compile, which compiles once per shape); "
        "null: the model sees the batch as the data part padded it")


def first_token(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return hidden[:, 0]


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The hidden state of each sequence's last real token (wherever the padding is)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (attention_mask.bool() * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_of_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def linear_head(width: int, num_labels: int) -> nn.Linear:
    """A classifier layer, initialized like the model's own layers (normal, std 0.02; zero bias)."""
    layer = nn.Linear(width, num_labels)
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class SequenceClassifier(nn.Module):
    """``(hidden, attention_mask) -> (B, num_labels)`` logits: pool, dropout, linear. ``pool`` is a function, not a
    module: the ``pooled`` pooling calls the model's own pooler head, whose weights stay registered there."""

    def __init__(self, pool: Callable, width: int, num_labels: int, dropout: float):
        super().__init__()
        self.pool = pool
        self.drop = nn.Dropout(dropout)
        self.out = linear_head(width, num_labels)

    def forward(self, hidden, attention_mask=None):
        return self.out(self.drop(self.pool(hidden, attention_mask)))


def choose_pooling(pooling: Pooling, model) -> Callable:
    """The pooling function for ``model`` (see ClassificationOptions.pooling)."""
    heads = getattr(model, "heads", {})
    if pooling == "auto":
        pooling = "pooled" if "pooled" in heads else "last" if is_decoder(model) else "first"
    if pooling == "pooled":
        if "pooled" not in heads:
            raise ConfigError('objective.pooling is pooled, but the model has no "pooled" head: set model.pooler: '
                              "true, or choose pooling first, last or mean.")
        return heads["pooled"].forward  # a bound method: the pooler's weights are not registered twice
    return {"first": first_token, "last": last_token, "mean": mean_of_tokens}[pooling]


def num_labels_of(ctx: BuildContext, objective: str) -> int:
    """The number of classes of the run's labeled data; a ConfigError when the data part names none."""
    if not ctx.label_names:
        raise ConfigError(f"objective {objective} needs labeled data, but the data part gives no label names "
                          f"(DataSource.label_names): use a labeled data part such as labeled or stdlib_areas.")
    return len(ctx.label_names)


def label_prior_baseline(train, validation: dict, num_labels: int) -> dict[str, float]:
    """What a model that ignores its input scores: always the training set's most frequent label (accuracy), and
    the training label frequencies as its prediction (loss per label, add-one smoothed). Labels equal to
    ``IGNORE`` do not count. Empty for a streamed training set, which cannot be counted up front."""
    if not isinstance(train, dict):
        return {}
    train_labels, val_labels = train["labels"], validation["labels"]
    counts = torch.bincount(train_labels[train_labels != IGNORE], minlength=num_labels).double()
    scored = val_labels[val_labels != IGNORE]
    log_prior = (counts + 1.0).log() - (counts + 1.0).sum().log()
    return {"majority_val_accuracy": float((scored == counts.argmax()).double().mean()),
            "prior_val_loss": float(-log_prior[scored].mean())}


def without_trailing_padding(batch: dict, multiple: int) -> dict:
    """``batch`` cut after its last position that is a real token in some row, rounded up to a multiple of
    ``multiple`` (at most the batch's length): the (B, T) fields the objective and the model read (``input_ids``,
    ``labels``, the model inputs) are cut, the rest is kept as it is. A batch without an attention mask is returned
    as it is. The length is read on the host: one synchronization per batch on a GPU."""
    mask = batch.get("attention_mask")
    if mask is None:
        return batch
    length = mask.shape[1]
    real_columns = mask.bool().any(dim=0).nonzero()
    last = int(real_columns[-1]) + 1 if len(real_columns) else 1
    keep = min(length, -(-last // multiple) * multiple)
    if keep == length:
        return batch
    cut = ("input_ids", "labels", *MODEL_INPUTS)
    return {name: value[:, :keep] if name in cut and value.dim() == 2 and value.shape[1] == length else value
            for name, value in batch.items()}


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> ObjectiveResult:
    """Cross-entropy summed over the labels that are not ``IGNORE``, with logits and targets for the metrics."""
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE, reduction="sum")
    return ObjectiveResult(loss_sum, int((labels != IGNORE).sum()), logits=logits, targets=labels,
                           ignore_index=IGNORE)


class Classification:
    """Cross-entropy of the head ``head``'s logits against the batch's ``labels`` (shared with token
    classification, whose head scores every position), on the batch without its trailing padding (a multiple of
    ``trim_padding`` positions kept; None: not cut)."""

    loss_unit = "example"

    def __init__(self, head: str, num_labels: int, trim_padding: int | None = TRIM_PADDING):
        self.head = head
        self.num_labels = num_labels
        self.trim_padding = trim_padding

    def __call__(self, model, batch: dict) -> ObjectiveResult:
        if self.trim_padding is not None:
            batch = without_trailing_padding(batch, self.trim_padding)
        logits = model(batch["input_ids"], **model_inputs(batch), heads=[self.head])[self.head]
        return summed_cross_entropy(logits, batch["labels"])

    def baseline(self, train, validation: dict) -> dict[str, float]:
        return label_prior_baseline(train, validation, self.num_labels)


def build(options: ClassificationOptions, ctx: BuildContext) -> Classification:
    num_labels = num_labels_of(ctx, "classification")
    pool = choose_pooling(options.pooling, ctx.model)
    ctx.model.add_head(HEAD, SequenceClassifier(pool, ctx.model.d_model, num_labels, options.dropout))
    return Classification(HEAD, num_labels, options.trim_padding)
