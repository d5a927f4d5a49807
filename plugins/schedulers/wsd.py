"""Warmup-stable-decay: linear warmup, the peak learning rate for most of the run, then a short decay to
``min_lr_ratio`` over the last ``decay_fraction`` of the steps. A run's stable phase does not depend on its length, so
one long run can be branched into decays at several lengths (Hägele et al. 2024, "Scaling Laws and Compute-Optimal
Training Beyond Fixed Training Durations", where the 1-sqrt shape did best)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hookformer.plugins.schedulers.warmup import DECAY_SHAPES, DecayOptions, lambda_schedule, warmup_then


class WSDOptions(DecayOptions):
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="learning rate at the end of the decay, as a share "
                                "of the peak")
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="share of the run's steps (train.max_steps) "
                                  "that the final decay takes; at least one step, and never the warmup's")
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = Field(
        "1-sqrt", description="the decay: linear, cosine (half a period), or 1-sqrt (1 - sqrt(progress))")


def build(options: WSDOptions, ctx):
    after_warmup = max(1, ctx.total_steps - options.warmup_steps)
    decay_steps = max(1, round(options.decay_fraction * ctx.total_steps))
    # warmup_then's progress runs 0 -> 1 over the steps after the warmup; the decay takes the last part of it.
    stable = max(0.0, 1.0 - decay_steps / after_warmup)
    shape, floor = DECAY_SHAPES[options.decay_shape], options.min_lr_ratio

    def stable_then_decay(progress: float) -> float:
        return 1.0 if progress < stable else shape((progress - stable) / (1.0 - stable), floor)

    return lambda_schedule(ctx.optimizer, warmup_then(options, ctx.total_steps, stable_then_decay))
