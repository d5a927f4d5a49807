"""Config composition and validation: defaults <- YAML <- --set, every problem reported at once with its path."""

import pytest
from hookformer.core.config import apply_override, compose, merge, read_yaml, validate
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
