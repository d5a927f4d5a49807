"""Parameter groups shared by the built-in optimizers: weight decay on matrices only."""

from __future__ import annotations

import torch.nn as nn


def decay_groups(model: nn.Module, weight_decay: float, decay_norms_biases_embeddings: bool) -> list[dict]:
    """Two groups: weights of linear layers (decayed) and everything else: norms, biases, embeddings (not decayed,
    unless ``decay_norms_biases_embeddings``). Tied parameters appear once."""
    no_decay_ids: set[int] = set()
    if not decay_norms_biases_embeddings:
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if not isinstance(module, nn.Linear) or name == "bias":
                    no_decay_ids.add(id(param))
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if id(param) in no_decay_ids else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
