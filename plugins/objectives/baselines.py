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
