"""Scores of models that ignore their input, shared by the built-in objectives (see ``Objective.baseline``)."""

from __future__ import annotations

import torch


def unigram_val_loss(train: dict | object, validation: dict, vocab_size: int) -> dict[str, float]:
    """Validation loss per predicted token of the best model that ignores context: the training set's token
    frequencies (add-one smoothed). Empty for a streamed training set, which cannot be counted up front."""
    if not isinstance(train, dict):
        return {}
    counts = torch.bincount(_real_tokens(train).flatten(), minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    targets = _real_tokens({name: tensor[:, 1:] for name, tensor in validation.items() if tensor.dim() == 2})
    return {"unigram_val_loss": float(-log_probs[targets].mean())}


def _real_tokens(table: dict) -> torch.Tensor:
    ids = table["input_ids"]
    mask = table.get("attention_mask")
    return ids[mask.bool()] if mask is not None else ids.flatten()


def label_prior(train: dict | object, validation: dict, field: str, num_classes: int) -> dict[str, float]:
    """The best classifier that ignores its input, for the labels in ``field`` (-100: not a label): the loss of
    predicting the training set's label frequencies (add-one smoothed) on the validation labels, and the accuracy
    of always predicting the training set's most frequent label. Empty for a streamed training set."""
    if not isinstance(train, dict):
        return {}
    train_labels, val_labels = (table[field][table[field] >= 0] for table in (train, validation))
    counts = torch.bincount(train_labels, minlength=num_classes).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    return {"prior_val_loss": float(-log_probs[val_labels].mean()),
            "majority_val_accuracy": float((val_labels == counts.argmax()).double().mean())}
