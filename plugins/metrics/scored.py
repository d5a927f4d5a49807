"""What the classification metrics share: the scored items of an ObjectiveResult and precision / recall / F1 from
counts.

Logits are (B, C) with targets (B,) for sequence classification, or (B, T, C) with targets (B, T) for token
classification; positions whose target is ``ignore_index`` (padding, sub-word continuation pieces) are not scored.
The prediction is the argmax over the last dimension.
"""

from __future__ import annotations

import torch


def rows(result) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predictions, targets, scored), each (R, L): one row per sequence; (B,) targets are B rows of length one."""
    targets = result.targets.reshape(result.targets.shape[0], -1)
    predictions = result.logits.argmax(dim=-1).reshape(targets.shape)
    return predictions, targets, targets != result.ignore_index


def flat(result) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, targets) of the scored positions, 1-D, in row order."""
    predictions, targets, scored = rows(result)
    return predictions[scored], targets[scored]


def precision_recall_f1(correct: torch.Tensor, predicted: torch.Tensor, actual: torch.Tensor):
    """Elementwise precision = correct / predicted, recall = correct / actual, F1 = 2 correct / (predicted + actual).

    A ratio whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``): a class never predicted has precision
    0, a class that never occurs has recall 0, and F1 is 0 where both are 0.
    """
    correct, predicted, actual = (torch.as_tensor(x, dtype=torch.float64) for x in (correct, predicted, actual))

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))

    return ratio(correct, predicted), ratio(correct, actual), ratio(2 * correct, predicted + actual)
