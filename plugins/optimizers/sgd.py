"""torch.optim.SGD."""

from __future__ import annotations

import torch
from pydantic import ConfigDict, Field

from hookformer.core.params import with_weight_decay
from hookformer.core.parts import PartOptions


class SGDOptions(PartOptions):
    model_config = ConfigDict(allow_inf_nan=False)

    lr: float = Field(0.1, gt=0.0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0.0, description="momentum factor")
    nesterov: bool = Field(False, description="Nesterov momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay on linear weights")
    decay_norms_biases_embeddings: bool = Field(False, description="also decay norms, biases and embeddings")


def build(options: SGDOptions, ctx) -> torch.optim.SGD:
    groups = with_weight_decay(ctx.param_groups, options.weight_decay, options.decay_norms_biases_embeddings)
    return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum, nesterov=options.nesterov)
