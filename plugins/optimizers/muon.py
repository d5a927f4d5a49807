"""Muon for the hidden weight matrices, AdamW for everything else, in one optimizer (one state_dict, one set of
param_groups that schedules scale and checkpoints save).

Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/) replaces a matrix's momentum by the nearest
semi-orthogonal matrix, found with a few Newton-Schulz iterations; it suits the 2-D weights inside the blocks. The
embeddings, the output layers (language-model head, task heads), norms and biases keep AdamW."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
from pydantic import ConfigDict, Field
from torch.optim.adamw import adamw as functional_adamw

from hookformer.core.params import with_weight_decay
from hookformer.core.parts import PartOptions
from hookformer.plugins.optimizers.adamw import Beta

#: The quintic Newton-Schulz coefficients of Keller Jordan's Muon (also torch.optim.Muon's).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


class MuonOptions(PartOptions):
    model_config = ConfigDict(allow_inf_nan=False)

    lr: float = Field(0.02, gt=0.0, description="peak learning rate of the Muon matrices")
    adam_lr: float = Field(1e-3, gt=0.0, description="peak learning rate of the parameters AdamW trains "
                           "(embeddings, output layers, norms, biases); train.head_lr still sets the task heads'")
    momentum: float = Field(0.95, ge=0.0, lt=1.0, description="Muon momentum")
    nesterov: bool = Field(True, description="Nesterov momentum for Muon")
    ns_steps: int = Field(5, gt=0, lt=100, description="Newton-Schulz iterations that orthogonalize the momentum")
    adjust_lr: Literal["original", "match_rms_adamw"] = Field(
        "original", description="scale of a matrix's update: original, sqrt(max(1, rows / columns)) (Keller "
        "Jordan's); match_rms_adamw, 0.2 * sqrt(max(rows, columns)), an update of AdamW's size (Moonshot's), so "
        "that lr and weight_decay tuned for AdamW carry over")
    weight_decay: float = Field(0.0, ge=0.0, description="decoupled weight decay on linear weights, Muon's and "
                                "AdamW's (an untied head); never on norms, biases and embeddings")
    betas: tuple[Beta, Beta] = Field((0.9, 0.95), description="AdamW betas, each in [0, 1)")
    eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon")
    adamw_names: tuple[str, ...] = Field(("lm_head.", "heads."), description="2-D weights whose parameter name "
                                         "starts with one of these stay on AdamW: the output layers")


def orthogonalize(matrix: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz iteration towards U V^T of ``matrix`` = U S V^T: singular values end near 1 (the quintic trades
    exactness, roughly 0.5 to 1.5, for speed). In bfloat16, as the reference does; on the wide orientation, so that
    the Gram matrix is the small one."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.bfloat16()
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's range
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b G + c G^2) x
    return x.T if tall else x


def update_scale(shape: torch.Size, adjust_lr: str) -> float:
    rows, columns = shape
    return 0.2 * math.sqrt(max(rows, columns)) if adjust_lr == "match_rms_adamw" else math.sqrt(max(1, rows / columns))


class MuonAdamW(torch.optim.Optimizer):
    """Groups with ``"muon": True`` (2-D weights) take Muon's update, the others AdamW's. Muon: momentum buffer
    B = mu B + (1 - mu) g (as a lerp), the update NS(nesterov ? lerp(g, B, mu) : B), decoupled weight decay
    p *= 1 - lr * wd, then p -= lr * scale * update. AdamW: torch's own functional AdamW."""

    def __init__(self, groups, *, momentum: float, nesterov: bool, ns_steps: int, adjust_lr: str,
                 betas: tuple[float, float], eps: float):
        super().__init__(groups, dict(momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, adjust_lr=adjust_lr,
                                      betas=betas, eps=eps, weight_decay=0.0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            (self._muon if group["muon"] else self._adamw)(group, params)
        return loss

    def _muon(self, group: dict, params: list[torch.Tensor]) -> None:
        momentum, lr = group["momentum"], group["lr"]
        for param in params:
            state = self.state[param]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(param)
            buffer = state["momentum_buffer"]
            buffer.lerp_(param.grad, 1 - momentum)
            direction = param.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
            update = orthogonalize(direction, group["ns_steps"])
            param.mul_(1 - lr * group["weight_decay"])
            param.add_(update.to(param.dtype), alpha=-lr * update_scale(param.shape, group["adjust_lr"]))

    def _adamw(self, group: dict, params: list[torch.Tensor]) -> None:
        for param in params:
            state = self.state[param]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(param)
                state["exp_avg_sq"] = torch.zeros_like(param)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        functional_adamw(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                         [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                         amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                         weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


def split_groups(groups, model: nn.Module, options: MuonOptions) -> list[dict]:
    """Each of the engine's groups split in two: its hidden 2-D linear weights (the engine's ``"decay"`` group, less
    the output layers named in ``adamw_names``) for Muon, the rest for AdamW. A group's own ``"lr"`` (the task
    heads' ``train.head_lr``) wins over the options' learning rates."""
    names = {id(p): name for name, p in model.named_parameters()}

    def takes_muon(group: dict, param: torch.Tensor) -> bool:
        return group["decay"] and param.ndim == 2 and not names[id(param)].startswith(options.adamw_names)

    split = []
    for group in groups:
        for muon, lr in ((True, options.lr), (False, options.adam_lr)):
            params = [p for p in group["params"] if takes_muon(group, p) == muon]
            if params:
                split.append({**group, "params": params, "muon": muon, "lr": group.get("lr", lr)})
    return split


def build(options: MuonOptions, ctx) -> MuonAdamW:
    groups = split_groups(with_weight_decay(ctx.param_groups, options.weight_decay), ctx.model, options)
    return MuonAdamW(groups, momentum=options.momentum, nesterov=options.nesterov, ns_steps=options.ns_steps,
                     adjust_lr=options.adjust_lr, betas=options.betas, eps=options.eps)
