"""Precision, recall and F1 of single-label classification, averaged over classes (macro, micro or weighted).

Per class c, over every scored position of the evaluation: precision = TP / predicted c, recall = TP / actual c,
F1 = 2 TP / (predicted c + actual c), with 0 where a denominator is 0 (scikit-learn's ``zero_division=0``).

- ``macro``: the unweighted mean over the classes that occur among the targets or the predictions, as
  scikit-learn's ``precision_recall_fscore_support(labels=None)``. A class that is neither a target nor predicted
  anywhere in the evaluation has no precision or recall to speak of and is left out, so the value does not depend
  on how many classes the output layer has (a language model's head has one per vocabulary entry). A class that
  is predicted but never a target counts with precision, recall and F1 0, and one that is a target but never
  predicted likewise.
- ``micro``: the ratios of the summed counts. With one label per position every prediction is a TP of its class or
  a FP of another, so precision = recall = F1 = accuracy.
- ``weighted``: the mean of the per-class values weighted by each class's number of targets.

Only three counts per class are kept (TP, predicted, actual), summed over ``update`` calls, so memory does not grow
with the evaluation set.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.metrics.scored import flat, precision_recall_f1


class F1Options(PartOptions):
    average: Literal["macro", "micro", "weighted"] = Field(
        "macro", description="macro: mean over the classes seen in targets or predictions, reported as f1, "
                             "precision, recall; micro: from summed counts (equals accuracy), reported as f1_micro, "
                             "precision_micro, recall_micro; weighted: mean weighted by each class's target count, "
                             "reported as f1_weighted, ...")


class F1:
    def __init__(self, average: str):
        self.average = average

    def reset(self) -> None:
        self.counts = None  # (3, C): TP, predicted and actual per class

    def update(self, result) -> None:
        if result.logits is None or result.targets is None:
            return
        predictions, targets = flat(result)
        classes = result.logits.shape[-1]
        counts = torch.stack([torch.bincount(targets[predictions == targets], minlength=classes),
                              torch.bincount(predictions, minlength=classes),
                              torch.bincount(targets, minlength=classes)])
        self.counts = counts if self.counts is None else self.counts + counts

    def compute(self) -> dict[str, float]:
        if self.counts is None or not self.counts.any():  # nothing scored
            return self._named(0.0, 0.0, 0.0)
        tp, predicted, actual = self.counts.cpu()
        if self.average == "micro":
            precision, recall, f1 = precision_recall_f1(tp.sum(), predicted.sum(), actual.sum())
        else:
            per_class = precision_recall_f1(tp, predicted, actual)
            if self.average == "macro":
                seen = (predicted + actual) > 0
                precision, recall, f1 = (values[seen].mean() for values in per_class)
            else:
                weights = actual.double() / actual.sum()
                precision, recall, f1 = ((values * weights).sum() for values in per_class)
        return self._named(float(f1), float(precision), float(recall))

    def _named(self, f1: float, precision: float, recall: float) -> dict[str, float]:
        """macro: ``f1``, ``precision``, ``recall``; the other averages add their name (``f1_micro``...), so one run
        can report several."""
        suffix = "" if self.average == "macro" else f"_{self.average}"
        return {f"f1{suffix}": f1, f"precision{suffix}": precision, f"recall{suffix}": recall}


def build(options: F1Options, ctx) -> F1:
    metric = F1(options.average)
    metric.reset()
    return metric
