"""Mean loss per item over the evaluation set; for a result made of parts (objective ``combined``), each part's mean
loss too, as ``loss_<part>``."""

from __future__ import annotations


class MeanLoss:
    name = "loss"

    def reset(self) -> None:
        self.sums: dict[str, list] = {}  # key -> [loss_sum, items]

    def update(self, result) -> None:
        self._add("loss", result)
        for part, part_result in (getattr(result, "parts", None) or {}).items():
            self._add(f"loss_{part}", part_result)

    def _add(self, key: str, result) -> None:
        total = self.sums.setdefault(key, [0.0, 0])
        total[0] += float(result.loss_sum)
        total[1] += result.num_items

    def mean(self) -> float:
        loss_sum, items = self.sums.get("loss", (0.0, 0))
        return loss_sum / max(1, items)

    def compute(self) -> dict[str, float]:
        return {key: loss_sum / max(1, items) for key, (loss_sum, items) in self.sums.items()} or {"loss": 0.0}


def build(options, ctx) -> MeanLoss:
    metric = MeanLoss()
    metric.reset()
    return metric
