"""Warmup, then linear decay to ``min_lr_ratio`` of the peak."""

from hookformer.plugins.schedulers.warmup import lambda_schedule, linear_decay, warmup_then


def build(options, ctx):
    floor = options.min_lr_ratio
    return lambda_schedule(ctx.optimizer,
                           warmup_then(options, ctx.total_steps, lambda progress: linear_decay(progress, floor)))
