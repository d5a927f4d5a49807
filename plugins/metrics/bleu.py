"""Metric ``bleu``: corpus BLEU of the generated validation texts, computed by `sacrebleu` (its own default
settings unless the options change them), so the value equals ``sacrebleu.corpus_bleu`` on the same strings
(0-100)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from sacrebleu.metrics import BLEU

from hookformer.plugins.metrics.generated import GenerationOptions, TextMetric, reference_streams


class BLEUOptions(GenerationOptions):
    tokenize: Literal["13a", "none", "intl", "char", "zh", "ja-mecab", "ko-mecab", "flores101", "flores200"] = Field(
        "13a", description="sacrebleu's tokenizer (13a: its default, for English-like text)")
    lowercase: bool = Field(False, description="compare lowercased texts")


class BLEUMetric(TextMetric):
    keys = ("bleu",)

    def __init__(self, options: BLEUOptions):
        super().__init__(options)
        self._bleu = BLEU(tokenize=options.tokenize, lowercase=options.lowercase)

    def score(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        return {"bleu": float(self._bleu.corpus_score(predictions, reference_streams(references)).score)}


def build(options: BLEUOptions, ctx) -> BLEUMetric:
    return BLEUMetric(options)
