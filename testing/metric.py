"""Metric conformance: reset / update / compute against the values the author expects on the author's results."""

from __future__ import annotations

import math

import torch

from hookformer.core.parts import ObjectiveResult


def _close(got: dict, expected: dict, rel_tol: float, what: str) -> None:
    missing = expected.keys() - got.keys()
    assert not missing, f"{what}: compute() lacks {sorted(missing)} (it gives {sorted(got)})"
    for key, value in expected.items():
        assert isinstance(got[key], float), f"{what}: {key} is {type(got[key]).__name__}, not float"
        assert math.isclose(got[key], value, rel_tol=rel_tol, abs_tol=rel_tol), \
            f"{what}: {key} is {got[key]}, expected {value}"


def _measure(metric, results: list[ObjectiveResult]) -> dict:
    metric.reset()
    for result in results:
        metric.update(result)
    return metric.compute()


def _one_batch(results: list[ObjectiveResult]) -> ObjectiveResult:
    """The results as one batch: summed losses and items, rows of logits and targets and the lists of texts
    concatenated."""
    def cat(field: str):
        values = [getattr(r, field) for r in results]
        return None if values[0] is None else torch.cat(values)
    def join(field: str):
        values = [getattr(r, field) for r in results]
        return None if values[0] is None else [text for texts in values for text in texts]
    return ObjectiveResult(sum(r.loss_sum for r in results), sum(r.num_items for r in results), logits=cat("logits"),
                           targets=cat("targets"), ignore_index=results[0].ignore_index,
                           predictions=join("predictions"), references=join("references"))


def check_metric(metric, results: list[ObjectiveResult], expected: dict[str, float], *,
                 order_invariant: bool = True, rel_tol: float = 1e-6) -> None:
    """AssertionError naming the value that differs unless ``metric`` computes ``expected`` (a subset of its keys)
    over ``results``, every time: after reset, after measuring other batches first (reset really resets) and,
    with ``order_invariant``, with the batches in reverse order and as one batch (their rows concatenated: the
    results' logits and targets must then have the same shape but for the first dimension)."""
    _close(_measure(metric, results), expected, rel_tol, "over the results")
    _close(_measure(metric, results), expected, rel_tol, "measured a second time")
    metric.reset()
    for result in results[:1]:
        metric.update(result)
    metric.compute()
    _close(_measure(metric, results), expected, rel_tol, "after reset() following other updates")
    if order_invariant:
        _close(_measure(metric, results[::-1]), expected, rel_tol, "with the results in reverse order")
        _close(_measure(metric, [_one_batch(results)]), expected, rel_tol, "with the results as one batch")
