"""exp(mean token loss)."""

from __future__ import annotations

import math

from hookformer.plugins.metrics.loss import MeanLoss


class Perplexity(MeanLoss):
    def compute(self) -> dict[str, float]:
        return {"perplexity": math.exp(min(self.mean(), 700.0))}


def build(options, ctx) -> Perplexity:
    metric = Perplexity()
    metric.reset()
    return metric
