"""Share of scored items whose argmax prediction equals the target."""

from __future__ import annotations


class Accuracy:
    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, result) -> None:
        if result.logits is None or result.targets is None:
            return
        scored = result.targets != result.ignore_index
        predictions = result.logits.argmax(dim=-1)
        self.correct += int(((predictions == result.targets) & scored).sum())
        self.total += int(scored.sum())

    def compute(self) -> dict[str, float]:
        return {"accuracy": self.correct / max(1, self.total)}


def build(options, ctx) -> Accuracy:
    metric = Accuracy()
    metric.reset()
    return metric
