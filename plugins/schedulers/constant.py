"""Constant learning rate after warmup."""

from hookformer.plugins.schedulers.warmup import lambda_schedule, warmup_then


def build(options, ctx):
    return lambda_schedule(ctx.optimizer, warmup_then(options, ctx.total_steps, lambda progress: 1.0))
