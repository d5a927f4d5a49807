"""End-to-end runs through the command line: outputs, exact resume, and bad input that leaves nothing damaged."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import CrashAtStep
from hookformer.core.cli import main
from hookformer.core.config import compose, validate
from hookformer.core.loop import Run
from hookformer.registry.catalog import Catalog


def tiny_config(tmp_path: Path, docs_corpus: Path, **train) -> Path:
    config = {
        "data": {"name": "text", "paths": [str(docs_corpus)], "block_size": 32},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 32, "dropout": 0.1},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "train": {"max_steps": 8, "batch_size": 4, "eval_every": 4, "eval_batches": 2, "log_every": 1,
                  "checkpoint_every": 4, "sample_tokens": 16, "progress": False, "device": "cpu", **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_config_metrics_checkpoints_samples_and_a_loss_plot(tmp_path, docs_corpus, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(tiny_config(tmp_path, docs_corpus)), "--run-dir", str(run_dir)]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["n_layer"] == 1 and saved["optimizer"]["name"] == "muon"  # defaults filled in
    history = records(run_dir)
    assert [r["step"] for r in history if "loss" in r] == list(range(1, 9))
    evals = [r for r in history if "val_loss" in r]
    assert [r["step"] for r in evals] == [4, 8]
    assert {"val_perplexity", "val_accuracy"} <= set(evals[0])
    assert "unigram_val_loss" in history[0]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000008"
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    samples = (run_dir / "samples.txt").read_text()
    assert "--- greedy ---" in samples and "--- sampled" in samples
    assert json.loads((run_dir / "data_report.json").read_text())
    assert "run finished" in capsys.readouterr().out

    # `generate` rebuilds the model from the run's checkpoint alone and continues the same way greedy sampling did.
    assert main(["generate", str(run_dir), "--prompt", "The ", "--greedy", "--tokens", "16"]) == 0
    greedy = samples.split("--- greedy ---\n", 1)[1].split("\n--- sampled", 1)[0]
    assert capsys.readouterr().out == greedy + "\n"



def test_a_resumed_run_reproduces_the_uninterrupted_losses_exactly(tmp_path, docs_corpus):
    config_path = tiny_config(tmp_path, docs_corpus)
    assert main(["train", str(config_path), "--run-dir", str(tmp_path / "full")]) == 0

    config = validate(compose(config_path, []), Catalog.load())
    crashed = Run(config, tmp_path / "crashed")
    crashed.assembly.register(CrashAtStep(6))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert main(["train", "--resume", str(tmp_path / "crashed")]) == 0

    full, resumed = records(tmp_path / "full"), records(tmp_path / "crashed")
    assert [(r["step"], r["loss"]) for r in resumed if "loss" in r] == \
        [(r["step"], r["loss"]) for r in full if "loss" in r]
    assert [r["val_loss"] for r in resumed if "val_loss" in r] == [r["val_loss"] for r in full if "val_loss" in r]


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_bad_config_exits_2_with_every_problem_and_no_traceback(tmp_path, docs_corpus, capsys):
    code, err = run_cli(capsys, "train", str(tiny_config(tmp_path, docs_corpus)), "--run-dir", str(tmp_path / "r"),
                        "--set", "optimizer.lr=fast", "--set", "model.wdith=3")
    assert code == 2
    assert "optimizer.lr" in err and "model.wdith: unknown option" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("problem,expected", [
    ("missing", "does-not-exist.txt"),
    ("empty", "empty"),
    ("block", "block_size"),
])
def test_bad_data_exits_2_and_leaves_no_run_directory(tmp_path, docs_corpus, capsys, problem, expected):
    overrides = {
        "missing": ["data.paths=[" + str(tmp_path / "does-not-exist.txt") + "]"],
        "empty": ["data.paths=[" + str(tmp_path / "empty.txt") + "]"],
        "block": ["data.block_size=100000"],
    }[problem]
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    args = ["train", str(tiny_config(tmp_path, docs_corpus)), "--run-dir", str(tmp_path / "r")]
    for override in overrides:
        args += ["--set", override]
    code, err = run_cli(capsys, *args)
    assert code == 2 and expected in err
    assert not (tmp_path / "r").exists()


def test_an_existing_run_directory_is_never_overwritten_or_damaged(tmp_path, docs_corpus, capsys):
    run_dir = tmp_path / "run"
    config_path = tiny_config(tmp_path, docs_corpus, max_steps=2, eval_every=2, checkpoint_every=2, sample_tokens=0)
    assert main(["train", str(config_path), "--run-dir", str(run_dir)]) == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    code, err = run_cli(capsys, "train", str(config_path), "--run-dir", str(run_dir))
    assert code == 2 and "already exists" in err and "--resume" in err
    code, err = run_cli(capsys, "train", "--resume", str(run_dir), "--set", "model.n_layer=3")
    assert code == 2 and ("do not fit the model" in err or "do not match the model" in err), err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_debug_raises_the_error_with_its_traceback(tmp_path, docs_corpus):
    from hookformer.core.errors import DataError

    with pytest.raises(DataError, match="block_size"):
        main(["train", str(tiny_config(tmp_path, docs_corpus)), "--run-dir", str(tmp_path / "r"), "--debug",
              "--set", "data.block_size=100000"])


def test_resuming_with_overrides_continues_the_run_and_records_them_in_its_config(tmp_path, docs_corpus):
    run_dir = tmp_path / "run"
    config_path = tiny_config(tmp_path, docs_corpus, max_steps=2, eval_every=2, checkpoint_every=2, sample_tokens=0)
    assert main(["train", str(config_path), "--run-dir", str(run_dir)]) == 0
    assert main(["train", "--resume", str(run_dir), "--set", "train.max_steps=4"]) == 0
    assert [r["step"] for r in records(run_dir) if "loss" in r] == [1, 2, 3, 4]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 4


def test_evaluate_scores_the_checkpoint_as_the_run_did_and_writes_nothing_into_the_run(tmp_path, docs_corpus, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(tiny_config(tmp_path, docs_corpus)), "--run-dir", str(run_dir)]) == 0
    last_eval = [r for r in records(run_dir) if "val_loss" in r][-1]
    before = sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    capsys.readouterr()
    output = tmp_path / "eval.json"
    # The run evaluated eval_batches (2) x batch_size (4) examples: the same ones give the same figures.
    assert main(["evaluate", str(run_dir), "--examples", "8", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["step"] == 8 and results["examples"] == 8
    for key in ("val_loss", "val_perplexity", "val_accuracy"):
        assert results[key] == pytest.approx(last_eval[key], rel=1e-6), key
    assert "unigram_val_loss" in results and "val_loss" in capsys.readouterr().out
    assert sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*")) == before


def test_evaluate_names_a_missing_best_checkpoint_with_exit_2(tmp_path, docs_corpus, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(tiny_config(tmp_path, docs_corpus, max_steps=2)), "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--checkpoint", "best"]) == 2
    assert "has no best checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_a_compiled_run_trains_like_the_eager_one_resumes_exactly_and_saves_plain_weights(tmp_path, docs_corpus, capsys):
    def losses(run_dir):
        return [(r["step"], r["loss"]) for r in records(run_dir) if "loss" in r]

    eager_path = tiny_config(tmp_path, docs_corpus)
    no_dropout = ["--set", "model.dropout=0"]  # compiled dropout draws other masks than eager dropout
    assert main(["train", str(eager_path), "--run-dir", str(tmp_path / "eager"), *no_dropout]) == 0
    config_path = tiny_config(tmp_path, docs_corpus, compile=True)
    assert main(["train", str(config_path), "--run-dir", str(tmp_path / "full"), *no_dropout]) == 0
    eager, full = losses(tmp_path / "eager"), losses(tmp_path / "full")
    assert [step for step, _ in full] == list(range(1, 9))
    assert [loss for _, loss in full] == pytest.approx([loss for _, loss in eager], rel=1e-4)

    config = validate(compose(config_path, ["model.dropout=0"]), Catalog.load())
    crashed = Run(config, tmp_path / "crashed")
    crashed.assembly.register(CrashAtStep(6))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert main(["train", "--resume", str(tmp_path / "crashed")]) == 0
    assert losses(tmp_path / "crashed") == full

    # The checkpoint names the plain module's parameters: `generate` loads it into an uncompiled model.
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "full"), "--prompt", "The ", "--greedy", "--tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("The ")
