"""benchmarks/time_to_quality.py: its ablations and its --default-run mode (figures are measured by running it, never
asserted here)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from time_to_quality import ABLATIONS, changed, recipe  # noqa: E402


def lookup(layer: dict, key: str):
    for name in key.split("."):
        layer = layer[name]
    return layer


@pytest.mark.parametrize("label,changes", ABLATIONS, ids=[label for label, _ in ABLATIONS])
def test_an_ablation_changes_only_the_ideas_its_row_names_and_keeps_the_others(label, changes):
    """A row's dotted key leaves out an idea the speedrun recipe sets; its ``key=value`` sets one."""
    from hookformer.core.config import load_yaml

    speedrun = recipe("speedrun")
    ablated = changed(speedrun, changes)
    assert speedrun == recipe("speedrun")  # the recipe itself is left as it was
    left_out = [change for change in changes if "=" not in change]
    for key in left_out:
        lookup(speedrun, key)  # the idea is one the recipe sets (a KeyError here: the row turns back nothing)
        with pytest.raises(KeyError):
            lookup(ablated, key)
    set_ = dict(change.split("=", 1) for change in changes if "=" in change)
    for key, value in set_.items():
        assert lookup(ablated, key) == load_yaml(value)
    touched = set(left_out) | set(set_)
    for section, options in speedrun.items():
        for option, value in options.items() if section not in touched else ():
            if f"{section}.{option}" not in touched:
                assert ablated[section][option] == value


@pytest.mark.slow
def test_the_default_run_mode_gives_classic_gpt_its_steps_and_the_other_contenders_its_wall_time(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "time_to_quality.py"), "--default-run", "--quick",
                           "--threads", "1", "--ablation", "untied -> tied head"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in done.stdout.splitlines()
            if line.startswith("| 1 |")]
    assert [row[1] for row in rows] == ["classic_gpt", "default run", "default run + speedrun",
                                        "classic_gpt + speedrun, untied -> tied head"]
    classic, default, speedrun, tied = rows
    assert classic[3] == "20" and classic[5] == "1.00"  # classic_gpt sets the time with its --quick steps
    for row in (default, speedrun, tied):
        assert 1 <= int(row[3]) and float(row[6]) > 0 and float(row[5]) > 0
    params = {row[1]: int(row[2].replace(",", "")) for row in rows}
    # speedrun over the default run adds only its untied head (ReLU^2 has SwiGLU's parameter count, the soft-cap none)
    assert params["default run + speedrun"] - params["default run"] == 2048 * 192
    # tied, speedrun over classic_gpt has no more parameters than it (no learned positions), nor has the default run
    assert max(params["classic_gpt + speedrun, untied -> tied head"], params["default run"]) <= params["classic_gpt"]


def test_every_default_run_ablation_row_composes_to_another_run_than_speedrun_over_the_classic_recipe():
    """The rows turn an idea back to classic_gpt's choice; none may compose to the unablated recipe."""
    from time_to_quality import CLASSIC, default_run_recipes, hookformer_raw

    rows = default_run_recipes(ABLATIONS)[3:]
    unablated = hookformer_raw(recipe(CLASSIC), recipe("speedrun"), max_steps=1)
    for label, layers in rows:
        assert hookformer_raw(*layers, max_steps=1) != unablated, label
