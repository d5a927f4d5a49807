"""Config composition and validation: defaults <- YAML <- --set, every problem reported at once with its path."""

import types
import typing

import pytest
import yaml
from pydantic import ValidationError

from hookformer.core.config import (apply_override, compose, default_recipe, merge, read_yaml, validate,
                                    validate_options)
from hookformer.core.errors import ConfigError
from hookformer.registry.catalog import Catalog


@pytest.fixture(scope="module")
def catalog():
    return Catalog.load()


def problems(raw, catalog) -> str:
    with pytest.raises(ConfigError) as info:
        validate(raw, catalog)
    return str(info.value)


def test_the_default_recipe_is_valid_and_its_dump_validates_to_the_same_config(catalog):
    config = validate(compose(None, []), catalog)
    assert config.parts["model"].name == "transformer"
    assert validate(config.dump(), catalog).dump() == config.dump()


def test_set_overrides_parse_values_as_yaml_and_reach_nested_fields(catalog):
    raw = compose(None, ["optimizer.lr=3e-4", "train.bf16=true", "attention.name=naive", "metrics=[loss]"])
    config = validate(raw, catalog)
    assert config.parts["optimizer"].options.lr == pytest.approx(3e-4)
    assert config.train.bf16 is True
    assert config.parts["attention"].name == "naive"
    assert [m.name for m in config.metrics] == ["loss"]


def test_changing_a_part_name_drops_the_previous_parts_options(catalog):
    raw = compose(None, ["tokenizer.name=byte"])
    assert raw["tokenizer"] == {"name": "byte"}
    assert validate(raw, catalog).parts["tokenizer"].name == "byte"


def test_merge_keeps_options_when_the_part_stays_the_same():
    merged = merge({"model": {"name": "transformer", "n_layer": 4, "d_model": 64}}, {"model": {"n_layer": 2}})
    assert merged["model"] == {"name": "transformer", "n_layer": 2, "d_model": 64}


def test_all_problems_are_reported_at_once_with_field_paths(catalog):
    raw = compose(None, ["optimizer.lrr=1", "train.max_steps=abc", "model.name=transfomer", "trian.seed=1",
                         "scheduler.warmup_steps=-5"])
    message = problems(raw, catalog)
    assert "5 problems" in message
    assert "optimizer.lrr: unknown option" in message
    assert "train.max_steps: Input should be a valid integer" in message and "'abc'" in message
    assert 'unknown model part "transfomer". Did you mean "transformer"?' in message
    assert 'trian: unknown section (did you mean "train"?)' in message
    assert "scheduler.warmup_steps: Input should be greater than or equal to 0" in message


def test_an_unknown_part_name_lists_the_stage_names(catalog):
    message = problems(compose(None, ["attention.name=flash"]), catalog)
    assert "Registered attention parts: auto, naive, sdpa, triton_flash" in message


def test_a_missing_section_and_a_part_without_name_are_reported(catalog):
    raw = compose(None, [])
    del raw["objective"]
    raw["optimizer"] = {"lr": 0.1}
    message = problems(raw, catalog)
    assert "objective: missing; choose one of: " in message and ", clm, " in message
    assert "optimizer.name: missing" in message


def test_yaml_syntax_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: transformer\n  n_layer: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line \d+"):
        read_yaml(path)


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml(path)


def test_a_malformed_set_is_refused():
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        apply_override({}, "optimizer.lr")


def _scalar_type(annotation):
    """bool, int, float or str when a field holds one of them (or None), else None."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (bool, int, float, str) else None


#: Values of another type that lax validation would have coerced into a field of each type.
COERCIBLE = {bool: [1, 0, "true", "yes"], int: [True, "3", 2.0], float: ["0.5", True], str: [5, True]}


def test_no_option_of_any_built_in_part_coerces_a_value_of_another_type(catalog):
    checked = 0
    for stage, entries in catalog.stages().items():
        for name, entry in entries.items():
            if entry.origin.distribution != "hookformer":
                continue
            model = entry.options_model()
            for field, info in model.model_fields.items():
                for wrong in COERCIBLE.get(_scalar_type(info.annotation), []):
                    with pytest.raises(ValidationError) as raised:
                        validate_options(model, {field: wrong}, {"catalog": catalog})
                    assert any(error["loc"][:1] == (field,) for error in raised.value.errors()), \
                        f"{stage}/{name}.{field} accepted {wrong!r}"
                    checked += 1
    assert checked > 100


def test_the_train_section_and_the_command_line_are_as_strict(catalog):
    for field, wrong in [("max_steps", True), ("bf16", 1), ("seed", "7"), ("clip_grad_norm", "1.0")]:
        with pytest.raises(ConfigError, match=f"train.{field}"):
            validate(merge(default_recipe(), {"train": {field: wrong}}), catalog)
    # YAML 1.2 numbers: 3e-4 is a float (YAML 1.1 would make it the string "3e-4")
    raw = apply_override(apply_override(default_recipe(), "optimizer.lr=3e-4"), "train.max_steps=1e3")
    assert raw["optimizer"]["lr"] == 3e-4
    with pytest.raises(ConfigError, match="train.max_steps"):  # 1000.0 is a float, not a count
        validate(raw, catalog)


def test_plugins_show_writes_option_types_as_a_reader_would():
    from typing import Annotated, Literal

    from pydantic import Field

    from hookformer.core.cli import type_name

    assert type_name(tuple[Annotated[float, Field(ge=0)], float]) == "tuple[float (>= 0), float]"
    assert type_name(Literal["bpe", "unigram"] | None) == "'bpe' | 'unigram' | None"
    assert type_name(list[dict[str, int]]) == "list[dict[str, int]]"


def test_a_run_from_pretrained_weights_takes_the_fine_tuning_sections_a_run_from_scratch_does_not(tmp_path, catalog):
    """default_run.yaml's ``fine_tuning:`` (AdamW, linear decay) replaces its Muon and WSD for ``train.init_from``; a
    config's own sections still win, and its own ``fine_tuning:`` applies the same way."""
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    (pretrained / "config.yaml").write_text(yaml.safe_dump(validate(default_recipe(), catalog).dump()))
    scratch = validate(compose(None, []), catalog)
    assert (scratch.parts["optimizer"].name, scratch.parts["scheduler"].name) == ("muon", "wsd")
    tuned = validate(compose(None, [f"train.init_from={pretrained}"]), catalog)
    assert (tuned.parts["optimizer"].name, tuned.parts["scheduler"].name) == ("adamw", "linear")
    assert tuned.parts["model"].dump() == scratch.parts["model"].dump()  # the pretrained run's model
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({"optimizer": {"name": "sgd", "lr": 0.1},
                                   "fine_tuning": {"scheduler": {"name": "constant"}}}))
    for pretrained_weights, scheduler in ((False, "wsd"), (True, "constant")):
        overrides = [f"train.init_from={pretrained}"] if pretrained_weights else []
        config = validate(compose(own, overrides), catalog)
        assert (config.parts["optimizer"].name, config.parts["scheduler"].name) == ("sgd", scheduler)
    own.write_text(yaml.safe_dump({"fine_tuning": ["optimizer"]}))
    with pytest.raises(ConfigError, match="fine_tuning: must hold a mapping"):
        compose(own, [])
