"""Warmup, then cosine decay to ``min_lr_ratio`` of the peak."""

import math

from hookformer.plugins.schedulers.warmup import lambda_schedule, warmup_then


def build(options, ctx):
    floor = options.min_lr_ratio

    def cosine(progress: float) -> float:
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return lambda_schedule(ctx.optimizer, warmup_then(options, ctx.total_steps, cosine))
