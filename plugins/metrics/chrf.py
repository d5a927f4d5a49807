"""Metric ``chrf``: corpus chrF (character n-gram F-score; chrF++ with ``word_order: 2``) of the generated
validation texts, computed by `sacrebleu`, so the value equals ``sacrebleu.corpus_chrf`` on the same strings
(0-100)."""

from __future__ import annotations

from pydantic import Field
from sacrebleu.metrics import CHRF

from hookformer.plugins.metrics.generated import GenerationOptions, TextMetric, reference_streams


class CHRFOptions(GenerationOptions):
    word_order: int = Field(0, ge=0, le=6, description="word n-gram order (0: chrF, 2: chrF++)")
    lowercase: bool = Field(False, description="compare lowercased texts")


class CHRFMetric(TextMetric):
    keys = ("chrf",)

    def __init__(self, options: CHRFOptions):
        super().__init__(options)
        self._chrf = CHRF(word_order=options.word_order, lowercase=options.lowercase)

    def score(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        return {"chrf": float(self._chrf.corpus_score(predictions, reference_streams(references)).score)}


def build(options: CHRFOptions, ctx) -> CHRFMetric:
    return CHRFMetric(options)
