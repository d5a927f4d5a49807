"""Share of sequences whose every scored position is predicted right.

A row of the targets is one sequence; with (B,) targets each row is one item, so exact match equals accuracy. Rows
without any scored position (all padding) are not counted. Ignored positions never make a row wrong.
"""

from __future__ import annotations

from hookformer.plugins.metrics.scored import rows


class ExactMatch:
    def reset(self) -> None:
        self.exact = 0
        self.sequences = 0

    def update(self, result) -> None:
        if result.logits is None or result.targets is None:
            return
        predictions, targets, scored = rows(result)
        counted = scored.any(dim=1)
        all_right = ((predictions == targets) | ~scored).all(dim=1)
        self.exact += int((all_right & counted).sum())
        self.sequences += int(counted.sum())

    def compute(self) -> dict[str, float]:
        return {"exact_match": self.exact / max(1, self.sequences)}


def build(options, ctx) -> ExactMatch:
    metric = ExactMatch()
    metric.reset()
    return metric
