"""Scheduler conformance: the rates it sets are the ones it reports, never negative or NaN, and a state_dict saved
halfway resumes the same rates."""

from __future__ import annotations

import math
from typing import Callable

import torch


def _lrs(optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def check_scheduler(build: Callable[[torch.optim.Optimizer, int], object], *, total_steps: int = 20,
                    lrs: tuple[float, ...] = (1e-3, 1e-2)) -> None:
    """AssertionError naming what differs unless the scheduler that ``build(optimizer, total_steps)`` makes over an
    optimizer whose groups have the peak rates ``lrs`` sets finite, non-negative rates that ``get_last_lr()``
    reports at every step, and resumes the same rates from a state_dict saved halfway into fresh parts."""

    def optimizer() -> torch.optim.Optimizer:
        return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])

    def run(opt, scheduler, count: int) -> list[list[float]]:
        seen = []
        for step in range(count):
            opt.step()
            scheduler.step()
            last = list(scheduler.get_last_lr())
            assert last == _lrs(opt), f"step {step + 1}: get_last_lr() {last} differs from the groups' lr {_lrs(opt)}"
            assert all(math.isfinite(lr) and lr >= 0 for lr in last), f"step {step + 1}: learning rates {last}"
            seen.append(last)
        return seen

    opt = optimizer()
    scheduler = build(opt, total_steps)
    assert list(scheduler.get_last_lr()) == _lrs(opt), \
        f"before any step get_last_lr() {scheduler.get_last_lr()} differs from the groups' lr {_lrs(opt)}"
    full = run(opt, scheduler, total_steps)
    half = total_steps // 2
    first_opt = optimizer()
    first = build(first_opt, total_steps)
    run(first_opt, first, half)
    resumed_opt = optimizer()
    resumed = build(resumed_opt, total_steps)
    resumed_opt.load_state_dict(first_opt.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert list(resumed.get_last_lr()) == full[half - 1], \
        f"after load_state_dict the rates are {resumed.get_last_lr()}, not {full[half - 1]} (step {half})"
    rest = run(resumed_opt, resumed, total_steps - half)
    assert rest == full[half:], f"resumed at step {half}, the rates are {rest}, not {full[half:]}"
