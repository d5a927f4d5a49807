"""The hook specs as the plugin API: one assembly path for every command, build wrappers around any part, run events
for hook parts listed in a config, the config hook, and the refusals that keep a run reproducible from its config.

The example plugins of ``examples/hookformer-run-hooks`` (a wrapper that freezes all but the last block, a
TensorBoard logger) are pip-installed for real and used only through hookformer's public API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hookformer.core import evaluate as evaluate_module
from hookformer.core.assemble import Assembly
from hookformer.core.capabilities import CheckedKernel
from hookformer.core.config import compose, validate
from hookformer.core.errors import ConfigError, PluginError
from hookformer.core.generate import load_trained
from hookformer.core.hookspecs import hookimpl
from hookformer.core.loop import Run
from hookformer.core.params import check_optimizer
from hookformer.registry.catalog import Catalog

RUN_HOOKS = Path(__file__).resolve().parents[1] / "examples" / "hookformer-run-hooks"


def raw_config(docs_corpus: Path, **sections) -> dict:
    train = {"max_steps": 4, "batch_size": 4, "eval_every": 2, "eval_batches": 2, "log_every": 1,
             "checkpoint_every": 2, "sample_tokens": 0, "progress": False, "device": "cpu",
             **sections.pop("train", {})}
    return {
        "data": {"name": "text", "paths": [str(docs_corpus)], "block_size": 32},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 2, "n_head": 2, "d_model": 32},
        "scheduler": {"name": "constant", "warmup_steps": 0},
        "hooks": [],
        "train": train,
        **sections,
    }


def config_of(tmp_path: Path, raw: dict, catalog=None):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return validate(compose(path, []), catalog or Catalog.load())


@contextlib.contextmanager
def installed(env: dict):
    """The site folder of a ``pip_install`` environment on this process's sys.path, as an installed package is."""
    site = env["PYTHONPATH"].split(os.pathsep)[0]
    sys.path.insert(0, site)
    try:
        yield
    finally:
        sys.path.remove(site)


@pytest.fixture(scope="module")
def run_hooks_catalog(pip_install):
    """The catalog with the example package really installed."""
    with installed(pip_install(RUN_HOOKS)):
        yield Catalog.load()


class Recorder:
    """Records the run events it receives, with the view's step, and every part built after it is registered."""

    def __init__(self):
        self.events: list[tuple] = []
        self.built: list[tuple[str, str]] = []

    @hookimpl
    def hookformer_run_start(self, run):
        self.events.append(("run_start", run.step))

    @hookimpl
    def hookformer_step_end(self, run, record):
        self.events.append(("step_end", run.step, record["step"]))

    @hookimpl
    def hookformer_eval_end(self, run, record):
        self.events.append(("eval_end", run.step, record["step"]))
        with pytest.raises(dataclasses.FrozenInstanceError):
            run.step = 0  # a view, not the run

    @hookimpl
    def hookformer_checkpoint_saved(self, run, path):
        self.events.append(("checkpoint_saved", run.step, Path(path).name))

    @hookimpl
    def hookformer_run_end(self, run, summary):
        self.events.append(("run_end", run.step, summary["step"]))

    @hookimpl(wrapper=True)
    def hookformer_build(self, stage, section):
        part = yield
        self.built.append((stage, section))
        return part


# --- one assembly path ------------------------------------------------------------------------------------------


def test_run_events_arrive_in_order_with_a_read_only_view_of_the_run(tmp_path, docs_corpus):
    run = Run(config_of(tmp_path, raw_config(docs_corpus)), tmp_path / "run")
    recorder = Recorder()
    run.assembly.register(recorder)
    run.train()
    assert recorder.events == [
        ("run_start", 0),
        ("step_end", 1, 1), ("step_end", 2, 2), ("eval_end", 2, 2), ("checkpoint_saved", 2, "step_000002"),
        ("step_end", 3, 3), ("step_end", 4, 4), ("eval_end", 4, 4), ("checkpoint_saved", 4, "step_000004"),
        ("run_end", 4, 4),
    ]


def test_a_build_wrapper_sees_every_part_of_every_stage_nested_ones_included(tmp_path, docs_corpus):
    objective = {"name": "combined", "objectives": [{"name": "clm"}]}
    config = config_of(tmp_path, raw_config(docs_corpus, objective=objective, cleaning=["whitespace"]))
    assembly = Assembly(config, tmp_path / "run")
    recorder = Recorder()
    assembly.register(recorder)
    assembly.prepare_data()
    assembly.scheduler()
    assembly.metrics()
    assert recorder.built == [
        ("cleaner", "cleaning.0"), ("data", "data"), ("tokenizer", "tokenizer"), ("attention", "attention"),
        ("model", "model"), ("objective", "objective.objectives.0"), ("objective", "objective"),
        ("optimizer", "optimizer"), ("scheduler", "scheduler"),
        *[("metric", f"metrics.{i}") for i in range(len(config.metrics))],
    ]


def test_evaluate_and_generate_build_the_model_on_the_capability_checked_kernel(tmp_path, docs_corpus, monkeypatch):
    config = config_of(tmp_path, raw_config(docs_corpus))
    Run(config, tmp_path / "run").train()
    _, model = load_trained(tmp_path / "run", config)
    assert all(isinstance(block.attn.attention, CheckedKernel) for block in model.blocks)

    scored = []
    real = evaluate_module.evaluate
    monkeypatch.setattr(evaluate_module, "evaluate",
                        lambda model, *a, **k: scored.append(model) or real(model, *a, **k))
    evaluate_module.evaluate_checkpoint(config, tmp_path / "run", tmp_path / "run" / "checkpoints" / "step_000004",
                                        max_examples=8)
    assert scored and all(isinstance(block.attn.attention, CheckedKernel) for block in scored[0].blocks)


def test_checkpoints_store_the_model_shapes_and_a_resumed_or_fine_tuned_model_takes_them(tmp_path, docs_corpus):
    Run(config_of(tmp_path, raw_config(docs_corpus)), tmp_path / "run").train()
    manifest = json.loads((tmp_path / "run" / "checkpoints" / "step_000004" / "manifest.json").read_text())
    assert manifest["shapes"] == {"vocab_size": 263, "max_seq_len": 32}
    # Fine-tuning on data cut into shorter blocks still builds the pretrained position table.
    raw = raw_config(docs_corpus, train={"init_from": str(tmp_path / "run")})
    raw["data"]["block_size"] = 16
    finetuned = Run(config_of(tmp_path, raw), tmp_path / "finetuned")
    assert finetuned.model.max_seq_len == 32 and finetuned.data.block_size == 16


def test_the_engine_refuses_data_longer_than_the_model_and_a_vocabulary_smaller_than_the_tokenizers(tmp_path,
                                                                                                      docs_corpus):
    short = {"name": "transformer", "n_layer": 1, "max_seq_len": 16}
    too_long = config_of(tmp_path, raw_config(docs_corpus, model=short))
    assembly = Assembly(too_long, tmp_path / "a")
    assembly.prepare_data()
    with pytest.raises(ConfigError, match='model part "transformer" takes sequences of at most 16 tokens, but the '
                                          'data part "text" gives 32'):
        assembly.model()
    small = config_of(tmp_path, raw_config(docs_corpus, model={"name": "transformer", "n_layer": 1, "vocab_size": 100}))
    assembly = Assembly(small, tmp_path / "b")
    assembly.prepare_data()
    with pytest.raises(ConfigError, match=r"scores 100 ids, fewer than the tokenizer's vocabulary \(263\)"):
        assembly.model()


def test_cleaning_with_a_data_part_that_does_not_apply_it_is_refused(tmp_path, docs_corpus):
    class Uncleaned:
        """A wrapper that hides the data part's declaration, as a third-party part that never cleans would."""

        @hookimpl(wrapper=True)
        def hookformer_build(self, stage):
            part = yield
            return type("Plain", (), {"block_size": part.block_size})() if stage == "data" else part

    assembly = Assembly(config_of(tmp_path, raw_config(docs_corpus, cleaning=["whitespace"])), tmp_path / "run")
    assembly.register(Uncleaned())
    with pytest.raises(ConfigError, match=r'cleaning: lists 1 step\(s\), but the data part "text" .* does not apply'):
        assembly.data()


def test_an_optimizer_that_ignores_the_engine_groups_is_refused_when_heads_have_their_own_lr():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.add_module("heads", torch.nn.ModuleDict({"cls": torch.nn.Linear(2, 2)}))
    check_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, None, "plain")  # no head_lr: fine
    with pytest.raises(ConfigError, match='train.head_lr is 0.5, but optimizer "plain" trains heads.cls.weight'):
        check_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, 0.5, "plain")
    with pytest.raises(ConfigError, match='optimizer "partial" leaves out 2 trainable parameters'):
        check_optimizer(torch.optim.SGD(model[0].parameters(), lr=0.1), model, None, "partial")


def test_the_callbacks_section_of_older_run_directories_is_read_as_hooks(tmp_path, docs_corpus):
    raw = raw_config(docs_corpus)
    del raw["hooks"]
    config = config_of(tmp_path, {**raw, "callbacks": ["loss_curve"]})
    assert [choice.name for choice in config.hooks] == ["loss_curve"] and "callbacks" not in config.dump()


# --- the example hook parts, installed ----------------------------------------------------------------------------


def test_a_build_wrapper_hook_part_trains_only_the_last_block(tmp_path, docs_corpus, run_hooks_catalog):
    raw = raw_config(docs_corpus, hooks=[{"name": "freeze_blocks", "trainable_blocks": 1}])
    run = Run(config_of(tmp_path, raw, run_hooks_catalog), tmp_path / "run")
    before = {name: param.detach().clone() for name, param in run.model.named_parameters()}
    run.train()
    changed = {name for name, param in run.model.named_parameters() if not torch.equal(param, before[name])}
    assert changed and all(name.startswith("blocks.1.") for name in changed)
    assert {name for name in before if name.startswith("blocks.1.")} == changed
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["hooks"] == [{"name": "freeze_blocks", "trainable_blocks": 1, "blocks_attribute": "blocks"}]


def test_the_tensorboard_hook_part_writes_every_metrics_record_as_scalars(tmp_path, docs_corpus, run_hooks_catalog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = config_of(tmp_path, raw_config(docs_corpus, hooks=["tensorboard"]), run_hooks_catalog)
    Run(config, tmp_path / "run").train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "val_loss", "val_perplexity", "val_accuracy"):
        logged = [(r["step"], r[key]) for r in records if key in r and r["step"] > 0]
        scalars = [(event.step, event.value) for event in events.Scalars(key)]
        assert [step for step, _ in scalars] == [step for step, _ in logged]
        assert [value for _, value in scalars] == pytest.approx([value for _, value in logged], rel=1e-6)


# --- distribution plugins: the config hook, and run hooks where they do not belong ------------------------------


@pytest.fixture(scope="module")
def hook_plugins_catalog(pip_install, make_plugin_package):
    """A distribution whose entry point implements hookformer_configure, and registers a hook part whose hook
    implementation takes an argument no spec has."""
    package = make_plugin_package("hookformer-test-hooks", {"test_hooks_plugin": '''
        from hookformer.core.errors import ConfigError
        from hookformer.core.hookspecs import hookimpl
        from hookformer.core.parts import PartSpec


        @hookimpl
        def hookformer_configure(raw):
            if raw.get("train", {}).get("seed") == 13:
                raise ConfigError("train.seed: 13 is refused by test_hooks_plugin")
            raw.setdefault("train", {})["eval_batches"] = 1  # filled in by the plugin


        class Misspelled:
            @hookimpl
            def hookformer_step_end(self, record, tokens):
                pass


        @hookimpl
        def hookformer_parts():
            return [PartSpec("hook", "misspelled", "a hook with an argument no spec has",
                             factory=lambda options, ctx: Misspelled())]
    '''}, {"test_hooks": "test_hooks_plugin"})
    with installed(pip_install(package)):
        yield Catalog.load()


def test_the_config_hook_adjusts_or_refuses_the_raw_config_before_validation(tmp_path, docs_corpus,
                                                                             hook_plugins_catalog):
    assert config_of(tmp_path, raw_config(docs_corpus), hook_plugins_catalog).train.eval_batches == 1
    with pytest.raises(ConfigError, match="train.seed: 13 is refused by test_hooks_plugin"):
        config_of(tmp_path, raw_config(docs_corpus, train={"seed": 13}), hook_plugins_catalog)


def test_a_hook_part_whose_implementation_takes_an_unknown_argument_is_refused(tmp_path, docs_corpus,
                                                                              hook_plugins_catalog):
    config = config_of(tmp_path, raw_config(docs_corpus, hooks=["misspelled"]), hook_plugins_catalog)
    with pytest.raises(PluginError, match=r'hook part "misspelled" \(hookformer-test-hooks 0.1.0\) cannot be '
                                          r"registered.*tokens"):
        Assembly(config, tmp_path / "run")


def test_an_entry_point_plugin_that_implements_run_hooks_is_refused(pip_install, make_plugin_package):
    package = make_plugin_package("hookformer-global-hooks", {"global_hooks_plugin": '''
        from hookformer.core.hookspecs import hookimpl


        @hookimpl
        def hookformer_step_end(record):
            print(record)
    '''}, {"global_hooks": "global_hooks_plugin"})
    refused = r'plugin "global_hooks" .* implements hookformer_step_end at the entry point itself.*hook part'
    with installed(pip_install(package)), pytest.raises(PluginError, match=refused):
        Catalog.load()


# --- provenance ----------------------------------------------------------------------------------------------------


def test_the_run_directory_records_which_distribution_provided_every_part(tmp_path, docs_corpus, run_hooks_catalog):
    objective = {"name": "combined", "objectives": [{"name": "clm"}]}
    raw = raw_config(docs_corpus, hooks=["tensorboard"], objective=objective, train={"max_steps": 2})
    Run(config_of(tmp_path, raw, run_hooks_catalog), tmp_path / "run").train()
    recorded = json.loads((tmp_path / "run" / "provenance.json").read_text())["parts"]
    assert recorded["hooks.0"] == {"stage": "hook", "name": "tensorboard", "distribution": "hookformer-run-hooks",
                                   "version": "0.1.0", "entry_point": "run_hooks", "override": False}
    assert recorded["objective.objectives.0"]["name"] == "clm"  # nested parts too
    assert {recorded[s]["distribution"] for s in ("model", "tokenizer", "data", "optimizer")} == {"hookformer"}


def test_a_run_whose_plugin_is_gone_names_the_package_and_generate_needs_only_its_own_sections(
        tmp_path, docs_corpus, run_hooks_catalog, monkeypatch, capsys):
    from hookformer.core.cli import main

    raw = raw_config(docs_corpus, hooks=["tensorboard"], train={"max_steps": 2})
    Run(config_of(tmp_path, raw, run_hooks_catalog), tmp_path / "run").train()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site" not in Path(p).name or "-packages" in p])
    assert "tensorboard" not in Catalog.load().names("hook")  # uninstalled
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--set", "train.max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert 'unknown hook part "tensorboard"' in err and 'pip install "hookformer-run-hooks==0.1.0"' in err
    assert main(["generate", str(tmp_path / "run"), "--tokens", "4", "--greedy"]) == 0  # it emits no run events
    assert 'hook part "tensorboard" of this run is not installed; generate runs without it' in capsys.readouterr().err


def test_a_part_made_with_another_version_is_a_warning(tmp_path, docs_corpus, capsys):
    from hookformer.core.cli import main

    Run(config_of(tmp_path, raw_config(docs_corpus, train={"max_steps": 2})), tmp_path / "run").train()
    path = tmp_path / "run" / "provenance.json"
    recorded = json.loads(path.read_text())
    recorded["parts"]["model"]["version"] = "0.0.1"
    path.write_text(json.dumps(recorded))
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--examples", "4"]) == 0
    assert ('warning: model: part "transformer" was made with hookformer 0.0.1, now 0.1.0 is installed'
            in capsys.readouterr().err)
