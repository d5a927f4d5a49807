"""Warmup, then cosine decay to ``min_lr_ratio`` of the peak."""

from hookformer.plugins.schedulers.warmup import cosine_decay, lambda_schedule, warmup_then


def build(options, ctx):
    floor = options.min_lr_ratio
    return lambda_schedule(ctx.optimizer,
                           warmup_then(options, ctx.total_steps, lambda progress: cosine_decay(progress, floor)))
