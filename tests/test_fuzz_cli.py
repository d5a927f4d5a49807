"""Fuzzing the config and command-line surface: whatever a user writes in a config file, in ``--set`` or as
``--run-dir``, ``hookformer train`` exits with 0 or 2, prints no traceback and leaves no empty run directory behind.

The number of examples is bounded (HOOKFORMER_FUZZ_EXAMPLES, default 30) so that CI runs it on every change."""

import copy
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from hookformer.core.cli import main
from hookformer.core.config import TrainConfig, validate
from hookformer.core.errors import HookformerError
from hookformer.registry.catalog import Catalog

EXAMPLES = int(os.environ.get("HOOKFORMER_FUZZ_EXAMPLES", "30"))
CORPUS = "\n\n".join(f"Document {i}: the quick brown fox jumps over the lazy dog. " * 4 for i in range(12))

BASE = {
    "data": {"name": "text", "paths": ["corpus.txt"], "block_size": 16},
    "tokenizer": {"name": "byte"},
    "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16},
    "attention": {"name": "sdpa"},
    "objective": {"name": "clm"},
    "optimizer": {"name": "adamw"},
    "scheduler": {"name": "cosine", "warmup_steps": 1},
    "metrics": ["loss"],
    "hooks": [],
    "train": {"max_steps": 1, "batch_size": 2, "eval_every": 1, "eval_batches": 1, "checkpoint_every": 1,
              "sample_tokens": 0, "progress": False, "device": "cpu"},
}
#: Fields left alone: valid values of these start long work (compilation, processes, a long run) rather than test
#: input handling, or name paths outside the scratch folder.
EXPENSIVE = {"train.compile", "train.distributed", "train.max_steps", "data.num_proc", "data.cache_dir",
             "tokenizer.model_file", "data.paths"}


def _fields() -> list[str]:
    catalog = Catalog.load()
    stages = {"data": "data", "tokenizer": "tokenizer", "model": "model", "attention": "attention",
              "objective": "objective", "optimizer": "optimizer", "scheduler": "scheduler"}
    names = [f"{section}.{field}" for section, stage in stages.items()
             for field in catalog.get(stage, BASE[section]["name"]).options_model().model_fields]
    names += [f"train.{field}" for field in TrainConfig.model_fields]
    return sorted(name for name in names if name not in EXPENSIVE) + ["metrics", "hooks", "cleaning"]


FIELDS = _fields()
SECTIONS = [*BASE, "cleaning", "nonsense"]
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"), max_size=12)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(0, 1), st.sampled_from([-(2**70), 2**70, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True), TEXT,
    st.lists(st.one_of(st.integers(-2, 2), TEXT), max_size=3),
    st.dictionaries(TEXT, st.integers(-2, 2), max_size=2),
)


@st.composite
def user_input(draw) -> tuple[dict, list[str], str]:
    """(config written to the YAML file, --set assignments, run directory name)."""
    config = copy.deepcopy(BASE)
    for field, value in draw(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=2)):
        section, _, key = field.partition(".")
        if key:
            config[section][key] = value
        else:
            config[section] = value
    if draw(st.integers(0, 3)) == 0:  # a whole section of the wrong shape
        config[draw(st.sampled_from(SECTIONS))] = draw(VALUES)
    assignment = st.one_of(
        st.builds(lambda field, value: f"{field}={yaml.safe_dump(value, default_flow_style=True).strip()}",
                  st.sampled_from(FIELDS), VALUES),
        st.text(max_size=30).filter(lambda text: "/" not in text),
    )
    run_dir = draw(st.one_of(st.just("run"), st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"),
                                                     min_size=1, max_size=300)))
    return config, draw(st.lists(assignment, max_size=1)), run_dir


def _starts_long_work(config: dict, overrides: list[str]) -> bool:
    """A valid config that asks for an absurd amount of work (2**70 layers, a batch of 2**31, 5e16 sample tokens...):
    a question of resources, not of input handling, and beyond any test's time."""
    from hookformer.core.config import apply_override

    try:
        raw = config
        for assignment in overrides:
            raw = apply_override(raw, assignment)
        valid = validate(raw, Catalog.load())
    except HookformerError:
        return False
    return any(abs(number) > 10**6 for number in _integers(valid.dump()))


def _integers(value) -> list[int]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [number for item in value for number in _integers(item)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def _empty_folders(root: Path) -> list[Path]:
    return [Path(folder) for folder, dirs, files in os.walk(root) if not dirs and not files]


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(user_input())
@example((BASE, [], "run"))  # the unchanged config trains: the success path is always among the examples
def test_any_user_input_exits_0_or_2_without_traceback_or_empty_run_directory(capsys, user_input):
    capsys.readouterr()  # capsys is shared by the examples: start each with nothing captured
    config, overrides, run_dir = user_input
    assume(not _starts_long_work(config, overrides))
    with tempfile.TemporaryDirectory() as scratch, pytest.MonkeyPatch.context() as patch:
        patch.chdir(scratch)
        patch.setenv("HOOKFORMER_CACHE", str(Path(scratch) / "cache"))
        Path("corpus.txt").write_text(CORPUS, encoding="utf-8")
        Path("config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        Path("runs").mkdir()
        args = ["train", "config.yaml", "--run-dir", str(Path("runs") / run_dir)]
        for assignment in overrides:
            args += ["--set", assignment]
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        err = capsys.readouterr().err
        event(f"exit code {code}")  # --hypothesis-show-statistics: how many examples trained
        assert "Traceback" not in err, err
        assert code in (0, 2), err
        assert not [p for p in _empty_folders(Path("runs")) if p != Path("runs")], err
