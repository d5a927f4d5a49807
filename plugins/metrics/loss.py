"""Mean loss per item over the evaluation set."""

from __future__ import annotations


class MeanLoss:
    name = "loss"

    def reset(self) -> None:
        self.loss_sum = 0.0
        self.items = 0

    def update(self, result) -> None:
        self.loss_sum += float(result.loss_sum)
        self.items += result.num_items

    def mean(self) -> float:
        return self.loss_sum / max(1, self.items)

    def compute(self) -> dict[str, float]:
        return {"loss": self.mean()}


def build(options, ctx) -> MeanLoss:
    metric = MeanLoss()
    metric.reset()
    return metric
