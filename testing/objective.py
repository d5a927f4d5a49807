"""Objective conformance: the result's fields, a loss that is a sum over items, gradient accumulation equal to one
large batch (what the engine's division by the item count relies on), and a deterministic evaluation."""

from __future__ import annotations

import torch

from hookformer.core.loop import accumulate_gradients
from hookformer.core.objective import compute, score, shares_forward, transform
from hookformer.core.parts import ObjectiveResult
from hookformer.core.sampler import table_rows


class _Transformed:
    """The objective scoring batches that are already transformed: the corruption (e.g. MLM masking) is drawn once
    for the whole batch, so that its micro-batches are scored on the same inputs as the batch of 8."""

    def __init__(self, objective):
        self.objective, self.heads = objective, objective.heads

    def score(self, outputs: dict, batch: dict, training: bool) -> ObjectiveResult:
        return score(self.objective, outputs, batch, training)


def _repeated(batch: dict) -> dict:
    return {key: torch.cat([value, value]) for key, value in batch.items()}


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def check_objective(objective, model, batch: dict, *, micro_batches: int = 4, atol: float = 1e-5,
                    rtol: float = 1e-4) -> None:
    """AssertionError naming what differs unless ``objective`` follows the Objective protocol on ``batch`` (a dict
    of tensors with the same first dimension, e.g. 8 rows, divisible by ``micro_batches``) for ``model``.

    Runs in evaluation mode (no dropout) and draws an objective's input corruption (``transform``) once, so that
    every difference comes from the objective's arithmetic."""
    rows = len(batch["input_ids"])
    assert rows % micro_batches == 0, f"the batch has {rows} rows, not a multiple of micro_batches={micro_batches}"
    model.eval()
    with torch.no_grad():  # results only; gradients are compared below
        result = compute(objective, model, batch)
        assert isinstance(result, ObjectiveResult), \
            f"the objective returns {type(result).__name__}, not ObjectiveResult"
        assert isinstance(result.loss_sum, torch.Tensor) and result.loss_sum.dim() == 0, \
            f"loss_sum must be a scalar tensor, got {getattr(result.loss_sum, 'shape', type(result.loss_sum))}"
        assert torch.isfinite(result.loss_sum), f"loss_sum is {float(result.loss_sum)}"
        assert isinstance(result.num_items, int) and result.num_items > 0, \
            f"num_items must be an int > 0, got {result.num_items!r}"
        again = compute(objective, model, batch)
        assert torch.equal(again.loss_sum, result.loss_sum) and again.num_items == result.num_items, \
            f"evaluation is not deterministic: loss_sum {float(result.loss_sum)} then {float(again.loss_sum)}"
        if shares_forward(objective):
            batch, objective = transform(objective, batch, training=False), _Transformed(objective)
        single = compute(objective, model, batch)
        doubled = compute(objective, model, _repeated(batch))
        assert doubled.num_items == 2 * single.num_items, \
            f"num_items of the batch repeated twice is {doubled.num_items}, not 2 x {single.num_items}"
        torch.testing.assert_close(doubled.loss_sum, 2 * single.loss_sum, atol=atol, rtol=rtol,
                                   msg=lambda m: f"loss_sum is not a sum over items: the batch repeated twice gives "
                                                 f"{float(doubled.loss_sum)}, not 2 x {float(single.loss_sum)}. {m}")
    size = rows // micro_batches
    model.zero_grad(set_to_none=True)
    micro = [table_rows(batch, slice(start, start + size)) for start in range(0, rows, size)]
    split = accumulate_gradients(model, objective, micro)
    split_grads = _gradients(model)
    model.zero_grad(set_to_none=True)
    whole = accumulate_gradients(model, objective, [batch])
    whole_grads = _gradients(model)
    model.zero_grad(set_to_none=True)
    assert split[1] == whole[1], f"{micro_batches} micro-batches count {split[1]} items, the whole batch {whole[1]}"
    assert split_grads.keys() == whole_grads.keys(), "micro-batches and the whole batch reach different parameters"
    assert whole_grads, "the objective's loss reaches no parameter of the model"
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, atol=atol, rtol=rtol,
                                   msg=lambda m, n=name: f"gradient accumulation ({micro_batches} x {size}) differs "
                                                         f"from one batch of {rows} at {n}: {m}")
