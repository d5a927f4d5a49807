"""Learning-rate schedules: the factor of the peak at each step, against the written-out formulas."""

import math

import pytest
import torch
from hookformer.core.parts import BuildContext
from hookformer.plugins.schedulers import cosine, linear, wsd
from hookformer.plugins.schedulers.warmup import DecayOptions
from hookformer.plugins.schedulers.wsd import WSDOptions

PEAK = 0.5


def schedule(module, options, total_steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    return optimizer, module.build(options, BuildContext(run_dir=None, optimizer=optimizer, total_steps=total_steps))


def factors(module, options, total_steps):
    optimizer, scheduler = schedule(module, options, total_steps)
    seen = []
    for _ in range(total_steps + 1):
        seen.append(optimizer.param_groups[0]["lr"] / PEAK)
        optimizer.step()
        scheduler.step()
    return seen


def wsd_formula(step, shape, warmup=10, total=100, decay=20, floor=0.1):
    if step < warmup:
        return (step + 1) / warmup
    if step < total - decay:
        return 1.0
    progress = min(1.0, (step - (total - decay)) / decay)
    return floor + (1 - floor) * {"linear": 1 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress)),
                                  "1-sqrt": 1 - math.sqrt(progress)}[shape]


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_warms_up_holds_the_peak_then_decays_over_the_last_fraction_of_the_steps(shape):
    options = WSDOptions(warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.1, decay_shape=shape)
    seen = factors(wsd, options, 100)
    for step in (0, 4, 9, 10, 50, 79, 80, 85, 90, 99, 100):
        assert seen[step] == pytest.approx(wsd_formula(step, shape)), step
    assert seen[90] < seen[85] < seen[80] == 1.0 and seen[100] == pytest.approx(0.1)


def test_wsd_resumes_from_its_state_dict_with_the_uninterrupted_learning_rates():
    options = WSDOptions(warmup_steps=3, decay_fraction=0.5)
    straight = factors(wsd, options, 12)
    optimizer, scheduler = schedule(wsd, options, 12)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    states = optimizer.state_dict(), scheduler.state_dict()  # what a checkpoint saves
    optimizer, scheduler = schedule(wsd, options, 12)
    optimizer.load_state_dict(states[0])
    scheduler.load_state_dict(states[1])
    resumed = []
    for _ in range(7, 13):
        resumed.append(optimizer.param_groups[0]["lr"] / PEAK)
        optimizer.step()
        scheduler.step()
    assert resumed == straight[7:]


@pytest.mark.parametrize("module, decay", [
    (linear, lambda p: 1 - 0.9 * p), (cosine, lambda p: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))])
def test_linear_and_cosine_warm_up_then_decay_to_min_lr_ratio_at_the_last_step(module, decay):
    seen = factors(module, DecayOptions(warmup_steps=4, min_lr_ratio=0.1), 20)
    expected = [(step + 1) / 4 if step < 4 else decay((step - 4) / 16) for step in range(21)]
    assert seen == pytest.approx(expected)
