"""Options and the warmup-then-decay shape shared by the built-in schedules."""

from __future__ import annotations

import math
from typing import Callable

import torch
from pydantic import Field

from hookformer.core.parts import PartOptions


class WarmupOptions(PartOptions):
    warmup_steps: int = Field(0, ge=0, description="steps of linear warmup from 0 to the peak learning rate")


class DecayOptions(WarmupOptions):
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final learning rate as a share of the peak")


def linear_decay(progress: float, floor: float) -> float:
    return 1.0 - (1.0 - floor) * progress


def cosine_decay(progress: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def one_minus_sqrt_decay(progress: float, floor: float) -> float:
    return floor + (1.0 - floor) * (1.0 - math.sqrt(progress))


#: Shapes of a decay from the peak (progress 0) to ``floor`` of it (progress 1).
DECAY_SHAPES: dict[str, Callable[[float, float], float]] = {
    "linear": linear_decay, "cosine": cosine_decay, "1-sqrt": one_minus_sqrt_decay}


def warmup_then(options: WarmupOptions, total_steps: int, decay: Callable[[float], float]):
    """A LambdaLR factor: linear warmup, then ``decay(progress)`` with progress going 0 -> 1 until ``total_steps``."""
    warmup = options.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        span = max(1, total_steps - warmup)
        return decay(min(1.0, (step - warmup) / span))

    return factor


def lambda_schedule(optimizer, factor) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
