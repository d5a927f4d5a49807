"""Parameter groups shared by the built-in optimizers: weight decay on matrices only, and the task heads' own
learning rate (``train.head_lr``)."""

from __future__ import annotations

import torch.nn as nn

#: Parameters whose name starts with this belong to a task head (see the Model protocol in hookformer.core.parts).
HEAD_PREFIX = "heads."


def decay_groups(model: nn.Module, weight_decay: float, decay_norms_biases_embeddings: bool,
                 head_lr: float | None = None) -> list[dict]:
    """Two groups: weights of linear layers (decayed) and everything else: norms, biases, embeddings (not decayed,
    unless ``decay_norms_biases_embeddings``). With ``head_lr``, four: those two for the backbone, then the same two
    for the task heads (``heads.*``) with ``"lr": head_lr`` (a schedule scales each group's own lr). Tied parameters
    appear once; frozen ones (``requires_grad`` false) not at all."""
    no_decay_ids: set[int] = set()
    if not decay_norms_biases_embeddings:
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if not isinstance(module, nn.Linear) or name == "bias":
                    no_decay_ids.add(id(param))
    split_heads = head_lr is not None
    groups = {(head, decay): [] for head in (False, True) for decay in (True, False)}
    for name, param in model.named_parameters():  # each parameter once, under its first name
        if param.requires_grad:
            groups[(split_heads and name.startswith(HEAD_PREFIX), id(param) not in no_decay_ids)].append(param)
    backbone = [{"params": groups[(False, True)], "weight_decay": weight_decay},
                {"params": groups[(False, False)], "weight_decay": 0.0}]
    if not split_heads:
        return backbone
    return backbone + [{"params": groups[(True, True)], "weight_decay": weight_decay, "lr": head_lr},
                       {"params": groups[(True, False)], "weight_decay": 0.0, "lr": head_lr}]
