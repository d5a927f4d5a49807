"""torch.optim.AdamW."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import ConfigDict, Field

from hookformer.core.params import with_weight_decay
from hookformer.core.parts import PartOptions


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class AdamWOptions(PartOptions):
    model_config = ConfigDict(allow_inf_nan=False)

    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    betas: tuple[Beta, Beta] = Field((0.9, 0.95), description="Adam betas, each in [0, 1)")
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0, description="decoupled weight decay on linear weights")
    decay_norms_biases_embeddings: bool = Field(False, description="also decay norms, biases and embeddings")
    fused: bool = Field(True, description="one fused kernel for the whole update (CPU and CUDA; several times "
                        "faster than the per-tensor loop); false uses torch's foreach implementation")


def build(options: AdamWOptions, ctx) -> torch.optim.AdamW:
    groups = with_weight_decay(ctx.param_groups, options.weight_decay, options.decay_norms_biases_embeddings)
    return torch.optim.AdamW(groups, lr=options.lr, betas=options.betas, eps=options.eps,
                             fused=options.fused or None)
