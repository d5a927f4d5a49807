"""SQuAD's exact match and F1 over the predicted answer texts (``ObjectiveResult.predictions`` against
``references``), as the official evaluation script of SQuAD v2.0 computes them (it gives v1.1's figures on
questions that have answers).

Both compare normalized answers: lowercased, punctuation removed, the articles a, an and the removed, whitespace
collapsed. Exact match is 1 when the normalized texts are equal; F1 is the harmonic mean of precision and recall of
their words (as a bag: a repeated word counts as often as it occurs in both). Each question scores its best over its
reference answers. A reference that normalizes to nothing is left out; a question with none left has no answer, and
only the empty prediction scores on it (1, else 0), as the official script does for unanswerable questions. Values
are means over questions, in [0, 1] (the official script prints them times 100).
"""

from __future__ import annotations

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation, articles and extra whitespace (the official ``normalize_answer``)."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(reference: str, prediction: str) -> int:
    """1 when the normalized texts are equal, else 0."""
    return int(normalize_answer(reference) == normalize_answer(prediction))


def f1(reference: str, prediction: str) -> float:
    """Word-overlap F1 of the normalized texts; with an empty side, 1 if both are empty, else 0."""
    reference_words, predicted_words = normalize_answer(reference).split(), normalize_answer(prediction).split()
    if not reference_words or not predicted_words:
        return float(reference_words == predicted_words)
    same = sum((collections.Counter(reference_words) & collections.Counter(predicted_words)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_words), same / len(reference_words)
    return 2 * precision * recall / (precision + recall)


def question_scores(prediction: str, references: list[str]) -> tuple[int, float]:
    """(exact match, F1) of one question: the best over its references that normalize to something, or against the
    empty answer when none does."""
    references = [reference for reference in references if normalize_answer(reference)] or [""]
    return (max(exact_match(reference, prediction) for reference in references),
            max(f1(reference, prediction) for reference in references))


class SquadMetric:
    """Means of :func:`question_scores` over the questions of every result that has predictions."""

    def reset(self) -> None:
        self.exact = 0
        self.f1 = 0.0
        self.questions = 0

    def update(self, result) -> None:
        if result.predictions is None or result.references is None:
            return
        for prediction, references in zip(result.predictions, result.references, strict=True):
            exact, overlap = question_scores(prediction, references)
            self.exact += exact
            self.f1 += overlap
            self.questions += 1

    def compute(self) -> dict[str, float]:
        return {"squad_exact_match": self.exact / max(1, self.questions),
                "squad_f1": self.f1 / max(1, self.questions)}


def build(options, ctx) -> SquadMetric:
    metric = SquadMetric()
    metric.reset()
    return metric
