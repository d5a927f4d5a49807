"""Data conformance: ``prepare`` gives examples tables (or a training BatchStream), the same again when the part is
built again (how a resumed run gets its data back), and a stream resumes exactly where its state_dict was taken."""

from __future__ import annotations

from typing import Callable

import torch

from hookformer.core.parts import Tokenizer
from hookformer.core.sampler import as_table


def _table(split, name: str) -> dict:
    """The split as an examples table, checked: a dict of tensors with the same first dimension, long input_ids."""
    assert isinstance(split, (dict, torch.Tensor)), f"{name}: expected an examples table, got {type(split).__name__}"
    try:
        table = as_table(split)
    except ValueError as exc:
        raise AssertionError(f"{name}: {exc}") from None
    ids = table["input_ids"]
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.long and ids.dim() == 2, \
        f"{name}: input_ids must be a (N, T) int64 tensor, got {getattr(ids, 'dtype', type(ids))} " \
        f"{tuple(getattr(ids, 'shape', ()))}"
    assert len(ids) > 0, f"{name}: no examples"
    return table


def _assert_same(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys(), f"{what}: fields {sorted(got)} != {sorted(expected)}"
    for field in expected:
        assert torch.equal(got[field], expected[field]), f"{what}: field {field} differs"


def _is_stream(split) -> bool:
    return all(hasattr(split, method) for method in ("next_batch", "state_dict", "load_state_dict"))


def check_data(source, tokenizer: Tokenizer, rebuild: Callable[[], object] | None = None, *, batch_size: int = 2,
               taken: int = 3, resumed: int = 3) -> None:
    """AssertionError naming what differs unless ``source`` (a built data part) follows the DataSource protocol with
    ``tokenizer``. ``rebuild`` builds the part again with the same options (default: ``source`` itself); its
    prepared tables must be identical, and a training stream loaded with the state of one that gave ``taken``
    batches of ``batch_size`` must give the same next ``resumed`` batches."""
    assert isinstance(source.block_size, int) and source.block_size > 1, f"block_size is {source.block_size!r}"
    assert isinstance(source.report, dict), f"report must be a dict, got {type(source.report).__name__}"
    splits = source.prepare(tokenizer)
    assert set(splits) == {"train", "validation"}, f"prepare() gives splits {sorted(splits)}, not train and validation"
    validation = _table(splits["validation"], "validation")
    again = (rebuild or (lambda: source))().prepare(tokenizer)
    _assert_same(_table(again["validation"], "validation"), validation, "validation prepared again")
    vocab = tokenizer.vocab_size
    assert 0 <= int(validation["input_ids"].min()) and int(validation["input_ids"].max()) < vocab, \
        f"validation input_ids outside the tokenizer's [0, {vocab})"
    if not _is_stream(splits["train"]):
        _assert_same(_table(again["train"], "train"), _table(splits["train"], "train"), "train prepared again")
        return
    stream = splits["train"]
    for _ in range(taken):
        _table(stream.next_batch(batch_size), "next_batch")
    state = stream.state_dict()
    expected = [_table(stream.next_batch(batch_size), "next_batch") for _ in range(resumed)]
    assert all(len(batch["input_ids"]) == batch_size for batch in expected), \
        f"next_batch({batch_size}) gives another number of rows"
    fresh = again["train"]
    fresh.load_state_dict(state)
    for i, batch in enumerate(expected):
        _assert_same(fresh.next_batch(batch_size), batch, f"batch {taken + i + 1} after load_state_dict")
