"""Resumable data order and atomic checkpoints."""

import json

import pytest
import torch
from hookformer.core import checkpoint
from hookformer.core.errors import CheckpointError
from hookformer.core.sampler import BlockSampler
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from safetensors.torch import load_file


def test_sampler_visits_every_block_once_per_epoch_and_reshuffles_between_epochs():
    sampler = BlockSampler(10, seed=1)
    first = torch.cat([sampler.next_batch(4) for _ in range(2)] + [sampler.next_batch(2)])
    second = torch.cat([sampler.next_batch(5), sampler.next_batch(5)])
    assert sorted(first.tolist()) == list(range(10)) == sorted(second.tolist())
    assert first.tolist() != second.tolist()


def test_sampler_restored_from_its_state_continues_with_identical_batches():
    sampler = BlockSampler(13, seed=7)
    for _ in range(5):
        sampler.next_batch(4)
    restored = BlockSampler(13, seed=7)
    restored.load_state_dict(sampler.state_dict())
    for _ in range(8):
        assert torch.equal(sampler.next_batch(4), restored.next_batch(4))


def test_sampler_refuses_a_state_taken_on_other_data():
    with pytest.raises(ValueError, match="13 training blocks"):
        BlockSampler(12, seed=7).load_state_dict(BlockSampler(13, seed=7).state_dict())


def small_model(seed):
    torch.manual_seed(seed)
    return Transformer(TransformerOptions(n_layer=1, n_head=2, d_model=16), sdpa_attention, 40, 8)


def test_checkpoint_round_trip_restores_weights_and_state_and_stores_tied_weights_once(tmp_path):
    model = small_model(0)
    path = checkpoint.save(tmp_path, 3, model, {"step": 3, "rng": torch.get_rng_state()}, keep=2)
    assert checkpoint.latest(tmp_path) == path
    assert "lm_head.weight" not in load_file(path / "model.safetensors") or \
        "tok_emb.weight" not in load_file(path / "model.safetensors")
    other = small_model(1)
    state = checkpoint.load(path, other)
    assert state["step"] == 3
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((path / "manifest.json").read_text())["step"] == 3


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model = small_model(0)
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, model, {"step": step}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_000002", "step_000003"]


def test_a_crash_while_writing_a_checkpoint_leaves_the_last_good_one_intact(tmp_path, monkeypatch):
    model = small_model(0)
    good = checkpoint.save(tmp_path, 1, model, {"step": 1}, keep=2)
    before = (good / "model.safetensors").read_bytes()

    def crash_half_way(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError("disk full")  # fault injection: the process dies in the middle of the write

    monkeypatch.setattr(checkpoint.torch, "save", crash_half_way)
    with pytest.raises(CheckpointError, match="disk full.*step_000001, is untouched"):
        checkpoint.save(tmp_path, 2, small_model(5), {"step": 2}, keep=2)
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path) == good
    assert (good / "model.safetensors").read_bytes() == before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")] == []
    assert checkpoint.load(good, small_model(3))["step"] == 1


def test_weights_that_do_not_fit_the_model_are_a_clear_error(tmp_path):
    path = checkpoint.save(tmp_path, 1, small_model(0), {"step": 1}, keep=1)
    torch.manual_seed(0)
    wider = Transformer(TransformerOptions(n_layer=1, n_head=2, d_model=32), sdpa_attention, 40, 8)
    with pytest.raises(CheckpointError, match="do not fit the model|do not match the model"):
        checkpoint.load(path, wider)


def test_resuming_a_run_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        checkpoint.latest(tmp_path)
