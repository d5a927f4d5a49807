"""`hookformer train` with segment recurrence: ``train.order: streams`` feeds consecutive segments of contiguous
streams, the loop hands the model one segment memory for training (never for evaluation), a resume continues the
data position exactly with an empty memory, and what cannot work is refused."""

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CrashAtStep
from hookformer.core.cli import main
from hookformer.core.config import compose, validate
from hookformer.core.errors import ConfigError
from hookformer.core.loop import Run
from hookformer.core.objective import compute
from hookformer.registry.catalog import Catalog

BATCH, ACCUM, BLOCK = 2, 2, 32


def config_file(tmp_path: Path, corpus: Path, model: dict | None = None, **train) -> Path:
    config = {
        "data": {"name": "text", "paths": [str(corpus)], "block_size": BLOCK},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 32, "dropout": 0.0,
                  "positions": "rope", "norm": "layernorm", "mlp": "gelu", "qk_norm": False, "bias": True,
                  "memory_length": 8, **(model or {})},
        "optimizer": {"name": "adamw", "lr": 2.0e-3, "weight_decay": 0.1},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "train": {"max_steps": 8, "batch_size": BATCH, "grad_accum_steps": ACCUM, "order": "streams",
                  "eval_every": 4, "eval_batches": 2, "log_every": 1, "checkpoint_every": 4, "sample_tokens": 0,
                  "progress": False, "device": "cpu", **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def make_run(tmp_path: Path, corpus: Path, *overrides: str, name: str = "run", resume: bool = False) -> Run:
    config = validate(compose(config_file(tmp_path, corpus), list(overrides)), Catalog.load())
    return Run(config, tmp_path / name, resume=resume)


def drawn_batches(run: Run) -> list[torch.Tensor]:
    """Record the global batches the run's training stream hands out (the real stream, observed)."""
    seen, draw = [], run.train_stream.next_batch

    def next_batch(n):
        batch = draw(n)
        seen.append(batch["input_ids"].clone())
        return batch

    run.train_stream.next_batch = next_batch
    return seen


def test_streams_training_batches_are_consecutive_segments_of_contiguous_streams(tmp_path, docs_corpus):
    run = make_run(tmp_path, docs_corpus)
    seen = drawn_batches(run)
    for _ in range(3):
        run.train_step()
    assert len(seen) == 3 * ACCUM and all(batch.shape == (BATCH, BLOCK) for batch in seen)
    # Stream i is a contiguous stretch of the packed training tokens; the micro-batches read it in order.
    tokens = run.train_table["input_ids"].flatten()
    per_stream = tokens.numel() // BATCH // BLOCK * BLOCK
    for i in range(BATCH):
        assert torch.equal(torch.cat([batch[i] for batch in seen]), tokens[i * per_stream:][:len(seen) * BLOCK])
    assert run.segment_memory is not None and run.segment_memory.states[0].shape == (BATCH, 8, 32)


def test_the_training_loss_reads_the_memory_of_the_previous_segment_and_evaluation_reads_none(tmp_path,
                                                                                               docs_corpus):
    run = make_run(tmp_path, docs_corpus, "train.grad_accum_steps=1")
    seen = drawn_batches(run)
    before_first = copy.deepcopy(run.model.state_dict())
    run.train_step()
    before_second = copy.deepcopy(run.model.state_dict())
    loss, _ = run.train_step()
    first, second = ({"input_ids": ids} for ids in seen)

    # The loop's step-2 loss is the objective's with the memory the step-1 weights left of segment 1 ...
    model = run.model
    model.train()
    with torch.no_grad():
        model.load_state_dict(before_first)
        memory = model.new_segment_memory()
        with model.segment_memory_scope(memory):
            compute(run.objective, model, first)
        model.load_state_dict(before_second)
        with model.segment_memory_scope(memory):
            remembering = compute(run.objective, model, second)
        forgetting = compute(run.objective, model, second)
    assert loss == pytest.approx(float(remembering.loss_sum) / remembering.num_items, rel=1e-5)
    # ... which differs from the loss of the same weights without it.
    assert abs(float(forgetting.loss_sum) / forgetting.num_items - loss) > 1e-4

    # Evaluation runs without the memory: it neither reads nor extends it, and scores the rows alone.
    held = list(run.segment_memory.states)
    evaluated = run.evaluate()
    assert all(a is b for a, b in zip(run.segment_memory.states, held))
    model.eval()
    with torch.no_grad():
        alone = compute(run.objective, model, {"input_ids": run.val_table["input_ids"][:2 * BATCH]})
    assert evaluated["val_loss"] == pytest.approx(float(alone.loss_sum) / alone.num_items, rel=1e-5)


def test_a_new_memory_starts_where_the_streams_start_over(tmp_path, docs_corpus):
    run = make_run(tmp_path, docs_corpus, "train.grad_accum_steps=1")
    run.train_step()
    memory = run.segment_memory
    num_segments = run.train_stream.num_segments
    run.train_stream.load_state_dict({**run.train_stream.state_dict(), "index": num_segments - 1})
    run.train_step()  # the last segment of every stream: the memory carries on
    assert run.segment_memory is memory and run.train_stream.starts_over
    run.train_step()  # the first segment again: nothing of the end of the streams is remembered
    assert run.segment_memory is not memory


@pytest.mark.slow
def test_a_resumed_run_draws_the_uninterrupted_runs_segments_with_a_new_empty_memory(tmp_path, docs_corpus):
    full = make_run(tmp_path, docs_corpus, name="full")
    full_batches = drawn_batches(full)
    full.train()
    crashed = make_run(tmp_path, docs_corpus, name="crashed")
    crashed.assembly.register(CrashAtStep(6))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    resumed = make_run(tmp_path, docs_corpus, name="crashed", resume=True)
    assert resumed.step == 4 and resumed.segment_memory is None  # the memory is not checkpointed
    resumed_batches = drawn_batches(resumed)
    resumed.train()
    assert len(resumed_batches) == 4 * ACCUM
    assert all(torch.equal(a, b) for a, b in zip(resumed_batches, full_batches[4 * ACCUM:]))

    def losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [record["loss"] for record in map(json.loads, lines) if "loss" in record]

    full_losses, resumed_losses = losses("full"), losses("crashed")
    assert resumed_losses[:4] == full_losses[:4]
    # Step 5 reads segments 9 and 10 without the memory of segment 8 the uninterrupted run had.
    assert resumed_losses[4] != pytest.approx(full_losses[4], rel=1e-6)


@pytest.mark.parametrize("overrides,expected", [
    (["train.order=shuffled"], "model.memory_length is 8 (segment recurrence), but train.order is shuffled"),
    (["data.streaming=true"], "train.order is streams, but the data source streams its batches itself"),
    (["data.document_mask=true"], "the training examples also have document_ids"),
    (["train.compile=true"], "train.order streams cannot be combined with train.compile"),
    (["train.batch_size=100000"], "train.order streams: "),
], ids=["memory-shuffled", "streaming-data", "document-mask", "compile", "too-many-streams"])
def test_what_segment_streams_cannot_train_exits_2_naming_the_fields(tmp_path, docs_corpus, capsys, overrides,
                                                                   expected):
    args = ["train", str(config_file(tmp_path, docs_corpus)), "--run-dir", str(tmp_path / "r")]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_streams_without_a_memory_train_on_consecutive_segments_and_say_the_memory_is_off(tmp_path, docs_corpus,
                                                                                        capsys):
    run = make_run(tmp_path, docs_corpus, "model.memory_length=0")
    assert "model keeps no memory" in capsys.readouterr().err
    run.train_step()
    assert run.segment_memory is None and run.train_stream.index == ACCUM


def test_the_memory_refusal_is_a_config_error_before_the_run_writes_anything(tmp_path, docs_corpus):
    with pytest.raises(ConfigError, match="Set train.order: streams"):
        make_run(tmp_path, docs_corpus, "train.order=shuffled")
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_with_segment_memories_follow_the_single_process_loss_curve(tmp_path, docs_corpus, strategy):
    # Each rank's rows are its own streams with its own memory: the global step equals the single process's.
    from test_distributed import LAUNCHER, hookformer, losses

    (tmp_path / "launch.py").write_text(LAUNCHER, encoding="utf-8")
    config = config_file(tmp_path, docs_corpus, max_steps=4, checkpoint_every=4, eval_every=4)
    curves = {}
    for nproc in (1, 2):
        done = hookformer(tmp_path, "train", str(config), "--run-dir", str(tmp_path / f"on-{nproc}"),
                          "--set", f"train.distributed.strategy={strategy if nproc > 1 else 'none'}",
                          "--set", f"train.batch_size={4 // nproc}", nproc=nproc)
        assert done.returncode == 0, done.stderr
        curves[nproc] = losses(tmp_path / f"on-{nproc}")
    assert [step for step, _ in curves[2]] == [1, 2, 3, 4]
    assert [loss for _, loss in curves[2]] == pytest.approx([loss for _, loss in curves[1]], rel=1e-5)
