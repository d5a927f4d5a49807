"""Optimizer conformance: built from the engine's parameter groups, and resumable: a state_dict saved halfway and
loaded into a freshly built optimizer continues exactly as the uninterrupted run."""

from __future__ import annotations

from typing import Callable

import torch

from hookformer.core import params

#: ``build(model) -> optimizer``: the optimizer part built over ``param_groups(model)``, as a run builds it.
BuildOptimizer = Callable[[torch.nn.Module], torch.optim.Optimizer]


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    """A loss that reaches every trainable parameter and changes with the step: the sum of squares of the
    parameters against a seeded target."""
    generator = torch.Generator().manual_seed(step)
    return sum(((p - torch.randn(p.shape, generator=generator)) ** 2).sum()
               for p in model.parameters() if p.requires_grad)


def _train(model: torch.nn.Module, optimizer, steps: range) -> None:
    for step in steps:
        optimizer.zero_grad(set_to_none=True)
        _loss(model, step).backward()
        optimizer.step()


def check_optimizer(build: BuildOptimizer, make_model: Callable[[], torch.nn.Module], *, steps: int = 6,
                    name: str = "optimizer") -> None:
    """AssertionError naming what differs unless the optimizer that ``build`` makes holds every trainable parameter
    of the model once (``hookformer.core.params.check_optimizer``), changes them, and resumes exactly: ``steps``
    steps give bit-identical parameters to ``steps // 2``, then state_dict saved and loaded into a fresh model and
    optimizer, then the rest. ``make_model`` returns the same model (same weights) on every call."""
    model = make_model()
    optimizer = build(model)
    try:
        params.check_optimizer(optimizer, model, None, name)
    except Exception as exc:  # the engine's ConfigError, as a test failure
        raise AssertionError(str(exc)) from None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, optimizer, range(steps))
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, f"{steps} steps leave parameters unchanged: {', '.join(unchanged[:3])}"
    half = steps // 2
    first = make_model()
    first_optimizer = build(first)
    _train(first, first_optimizer, range(half))
    model_state, optimizer_state = first.state_dict(), first_optimizer.state_dict()
    resumed = make_model()
    resumed.load_state_dict(model_state)
    resumed_optimizer = build(resumed)
    resumed_optimizer.load_state_dict(optimizer_state)
    _train(resumed, resumed_optimizer, range(half, steps))
    expected = {n: p.detach() for n, p in model.named_parameters()}
    for n, p in resumed.named_parameters():
        got = p.detach()
        assert torch.equal(got, expected[n]), (f"resuming from the state_dict after {half} of {steps} steps gives "
                                               f"other parameters ({n}, max difference "
                                               f"{float((got - expected[n]).abs().max())})")
