"""Metric ``rouge``: ROUGE-1, ROUGE-2 and ROUGE-L F-measures of the generated validation texts, computed by
`rouge-score` (``RougeScorer``; with several references, its ``score_multi``, the best reference), averaged over the
examples (0-1)."""

from __future__ import annotations

from pydantic import Field
from rouge_score.rouge_scorer import RougeScorer

from hookformer.plugins.metrics.generated import GenerationOptions, TextMetric

TYPES = ("rouge1", "rouge2", "rougeL")


class ROUGEOptions(GenerationOptions):
    use_stemmer: bool = Field(False, description="Porter-stem words before matching (rouge-score's use_stemmer)")


class ROUGEMetric(TextMetric):
    keys = TYPES

    def __init__(self, options: ROUGEOptions):
        super().__init__(options)
        self._scorer = RougeScorer(list(TYPES), use_stemmer=options.use_stemmer)

    def score(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        totals = dict.fromkeys(TYPES, 0.0)
        for prediction, refs in zip(predictions, references):
            scores = self._scorer.score_multi(refs, prediction)
            for kind in TYPES:
                totals[kind] += scores[kind].fmeasure
        return {kind: total / len(predictions) for kind, total in totals.items()}


def build(options: ROUGEOptions, ctx) -> ROUGEMetric:
    return ROUGEMetric(options)
