"""Resumable data order, map-style and streaming: after resume the next batches are the uninterrupted run's, at the
BatchStream level and through `hookformer train --resume`. Streaming mode: epochs, the shuffle buffer, validation
held out by hash, errors; document ids of packed blocks. Real files, real `datasets` streams, the real byte
tokenizer."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CrashAtStep
from hookformer.core.cli import main
from hookformer.core.config import compose, validate
from hookformer.core.errors import ConfigError, DataError
from hookformer.core.loop import Run
from hookformer.core.parts import BuildContext
from hookformer.core.sampler import TableStream
from hookformer.plugins.data.streaming import held_out
from hookformer.registry.catalog import Catalog


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def document(file: int, index: int) -> str:
    return f"<f{file} d{index}> " + "lorem ipsum dolor " * (index % 4 + 1)


@pytest.fixture
def corpus(tmp_path) -> dict[str, list[str]]:
    """Four text files of 30 paragraphs and a JSONL file of 20 records; every document different."""
    files = {}
    for file in range(4):
        path = tmp_path / "corpus" / f"part{file}.txt"
        path.parent.mkdir(exist_ok=True)
        files[str(path)] = [document(file, i) for i in range(30)]
        path.write_text("\n\n".join(files[str(path)]), encoding="utf-8")
    path = tmp_path / "corpus" / "extra.jsonl"
    files[str(path)] = [document(9, i) for i in range(20)]
    path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(files[str(path)])))
    return files


def source(catalog, corpus, seed: int = 0, cleaners=(), **options):
    entry = catalog.get("data", "text")
    options = {"paths": list(corpus), "block_size": 16, "val_fraction": 0.2, "streaming": True, **options}
    if options["streaming"]:  # a streaming option: map-style refuses it
        options.setdefault("shuffle_buffer", 8)
    return entry.build(entry.options_model()(**options), BuildContext(run_dir=Path("."), seed=seed,
                                                                      cleaners=list(cleaners)))


def checkpointed(state: dict) -> dict:
    """``state`` after a trip through a checkpoint file (torch.save, then torch.load with weights_only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same_batches(expected: list[dict], actual: list[dict]) -> None:
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        assert want.keys() == got.keys()
        for name in want:
            assert torch.equal(want[name], got[name]), name


def documents_of(ids: list[int], tok) -> list[str]:
    """The documents of a token stream: the text between end-of-document tokens (a last unfinished one dropped)."""
    docs, current = [], []
    for token in ids:
        if token == tok.special.eos:
            docs.append(tok.decode(current))
            current = []
        else:
            current.append(token)
    return docs


class DropRepeats:
    """A stateful cleaning step: removes documents it has seen before, and can save and restore what it saw."""

    stateful = True

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, texts: list[str]) -> list[str | None]:
        kept = []
        for text in texts:
            kept.append(None if text in self.seen else text)
            self.seen.add(text)
        return kept

    def fingerprint(self) -> str:
        return "drop-repeats"

    def state_dict(self) -> dict:
        return {"seen": sorted(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.seen = set(state["seen"])


# -- resume at the BatchStream level ----------------------------------------------------------------------------

def test_map_style_order_resumed_from_its_state_gives_the_next_8_batches_of_the_uninterrupted_run(catalog, corpus,
                                                                                                 tok):
    table = source(catalog, corpus, streaming=False, document_mask=True).prepare(tok)["train"]
    stream = TableStream(table, seed=5)
    for _ in range(len(table["input_ids"]) // 6 + 1):  # into the second epoch
        stream.next_batch(6)
    state = checkpointed(stream.state_dict())
    expected = [stream.next_batch(6) for _ in range(8)]
    resumed = TableStream(table, seed=5)
    resumed.load_state_dict(state)
    assert_same_batches(expected, [resumed.next_batch(6) for _ in range(8)])
    assert stream.sampler.epoch >= 1


@pytest.mark.parametrize("batches_before", [0, 3, 120], ids=["at-start", "buffer-filled", "after-an-epoch"])
def test_streaming_resumed_from_its_state_gives_the_next_8_batches_of_the_uninterrupted_run(catalog, corpus, tok,
                                                                                            tmp_path, batches_before):
    # Every file twice: the stateful cleaning step removes the copies, so its state matters on resume.
    copies = {}
    for path in corpus:
        copy = tmp_path / "copies" / Path(path).name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(Path(path).read_bytes())
        copies[str(copy)] = corpus[path]

    def stream():
        return source(catalog, {**corpus, **copies}, seed=3, cleaners=[DropRepeats()],
                      document_mask=True).prepare(tok)["train"]

    first = stream()
    for _ in range(batches_before):
        first.next_batch(4)
    state = checkpointed(first.state_dict())
    expected = [first.next_batch(4) for _ in range(8)]
    second = stream()
    second.load_state_dict(state)
    assert_same_batches(expected, [second.next_batch(4) for _ in range(8)])

    # Resuming a resumed stream is exact too, and so is the epoch count.
    state = checkpointed(second.state_dict())
    expected = [second.next_batch(4) for _ in range(8)]
    third = stream()
    third.load_state_dict(state)
    assert_same_batches(expected, [third.next_batch(4) for _ in range(8)])
    assert third.epoch == second.epoch
    if batches_before == 120:
        assert first.epoch >= 1


def test_a_stream_state_from_other_data_options_is_refused(catalog, corpus, tok):
    state = source(catalog, corpus).prepare(tok)["train"].state_dict()
    other = source(catalog, corpus, shuffle_buffer=4).prepare(tok)["train"]
    with pytest.raises(ValueError, match="the corpus files, the data options or the tokenizer changed"):
        other.load_state_dict(state)


def test_the_data_position_in_a_checkpoint_is_bounded_by_the_shuffle_buffer_not_by_the_corpus_read(catalog, corpus,
                                                                                                   tok):
    stream = source(catalog, corpus, shuffle_buffer=32).prepare(tok)["train"]
    sizes = []
    for batches in (10, 200):  # the second reads the corpus several times over
        for _ in range(batches):
            stream.next_batch(4)
        buffer = io.BytesIO()
        torch.save(stream.state_dict(), buffer)
        sizes.append(len(buffer.getvalue()))
    assert stream.epoch >= 2
    buffer_bytes = 32 * 16 * 4
    assert all(size < buffer_bytes + 16_000 for size in sizes), sizes


# -- streaming: order, epochs, validation -----------------------------------------------------------------------

def test_streaming_runs_epochs_each_with_every_training_document_once_in_a_new_file_order(catalog, corpus, tok):
    everything = [doc for docs in corpus.values() for doc in docs]
    held = {doc for doc in everything if held_out(doc, 0.2)}
    training = [doc for doc in everything if doc not in held]
    assert 5 < len(held) < 50

    stream = source(catalog, corpus, shuffle_buffer=1).prepare(tok)["train"]  # a buffer of 1 keeps reading order
    ids = torch.cat([stream.next_batch(32)["input_ids"].flatten() for _ in range(40)]).tolist()
    docs = documents_of(ids, tok)
    assert len(docs) > 3 * len(training)
    epochs = [docs[i * len(training):(i + 1) * len(training)] for i in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(training)  # every training document once, no held-out one
    assert epochs[0] != epochs[1] != epochs[2]

    def file_order(epoch: list[str]) -> list[str]:
        return list(dict.fromkeys(doc.split()[0][:3] for doc in epoch))  # "<f2 d7>" -> "<f2"

    assert file_order(epochs[0]) != file_order(epochs[1])


def test_the_shuffle_buffer_draws_blocks_out_of_reading_order(catalog, corpus, tok):
    def blocks(buffer: int) -> list[tuple]:
        stream = source(catalog, corpus, shuffle_buffer=buffer, seed=1).prepare(tok)["train"]
        return [tuple(row) for row in stream.next_batch(40)["input_ids"].tolist()]

    in_order, shuffled = blocks(1), blocks(16)
    assert shuffled != in_order
    stream = source(catalog, corpus, shuffle_buffer=1, seed=1).prepare(tok)["train"]
    read_so_far = Counter(tuple(row) for row in stream.next_batch(56)["input_ids"].tolist())
    assert not Counter(shuffled) - read_so_far  # drawn from the first 40 + 16 blocks in reading order


def test_streaming_validation_is_held_out_by_hash_the_same_for_every_seed_and_capped(catalog, corpus, tok):
    splits = [source(catalog, corpus, seed=seed, validation_blocks=3).prepare(tok)["validation"]
              for seed in (0, 1)]
    assert torch.equal(splits[0]["input_ids"], splits[1]["input_ids"])
    assert splits[0]["input_ids"].shape == (3, 16)
    everything = [doc for docs in corpus.values() for doc in docs]
    held = [doc for doc in everything if held_out(doc, 0.2)]
    uncapped = source(catalog, corpus, validation_blocks=10_000)
    validation = uncapped.prepare(tok)["validation"]["input_ids"]
    assert documents_of(validation.flatten().tolist(), tok) == held[:len(documents_of(validation.flatten().tolist(),
                                                                                      tok))]
    assert uncapped.report["validation"]["documents"] == len(held)
    assert uncapped.report["validation"]["whole_corpus_read"]


def test_texts_are_the_training_documents_cleaned_in_file_order_text_files_then_jsonl(catalog, corpus):
    class Upper:
        stateful = False

        def __call__(self, texts):
            return [None if "d3>" in text else text.upper() for text in texts]

        def fingerprint(self):
            return "upper"

    expected = [doc.upper() for docs in corpus.values() for doc in docs if "d3>" not in doc]
    expected = [doc for doc in expected if not held_out(doc, 0.2)]
    assert list(source(catalog, corpus, cleaners=[Upper()]).texts()) == expected


def test_streaming_skips_documents_with_invalid_utf8_under_skip(catalog, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"\n\n".join([f"good document {i}".encode() for i in range(20)] + [b"bad \xff here"]))
    texts = list(source(catalog, {str(path): []}, invalid_utf8="skip", val_fraction=0.01).texts())
    assert not any("bad" in text for text in texts) and len(texts) >= 19


# -- streaming: errors -----------------------------------------------------------------------------------------

def test_a_streamed_jsonl_record_without_the_text_field_names_file_and_line(catalog, tmp_path, tok):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=rf'{path}, line 2: the record has no field "text"'):
        source(catalog, {str(path): []}).prepare(tok)


def test_malformed_streamed_jsonl_names_file_and_line(catalog, tmp_path, tok):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "cut\n')
    with pytest.raises(DataError, match=rf"{path}, line 2: not valid JSON"):
        source(catalog, {str(path): []}).prepare(tok)


def test_too_few_held_out_tokens_for_a_validation_block_says_what_to_change(catalog, tmp_path, tok):
    path = tmp_path / "a.txt"
    path.write_text("\n\n".join(f"doc {i}" for i in range(30)))
    with pytest.raises(DataError, match="fewer than one block of data.block_size=16.*data.val_fraction"):
        source(catalog, {str(path): []}, val_fraction=0.01).prepare(tok)


def test_a_stateful_cleaning_step_without_state_is_refused_in_streaming_mode(catalog, corpus):
    class Forgetful:
        stateful = True

        def __call__(self, texts):
            return texts

        def fingerprint(self):
            return "forgetful"

    with pytest.raises(ConfigError, match='data.streaming: the cleaning step "Forgetful" keeps state'):
        source(catalog, corpus, cleaners=[Forgetful()])


# -- document ids ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_document_ids_number_the_documents_of_each_packed_block_from_zero(catalog, corpus, tok, streaming):
    splits = source(catalog, corpus, streaming=streaming, document_mask=True).prepare(tok)
    train = splits["train"] if not streaming else splits["train"].next_batch(32)
    for table in (train, splits["validation"]):
        ids, docs = table["input_ids"], table["document_ids"]
        assert docs.shape == ids.shape and (docs[:, 0] == 0).all()
        ends = ids == tok.special.eos
        # the document index grows by one right after each end-of-document token, and only there
        assert torch.equal(docs[:, 1:] - docs[:, :-1], ends[:, :-1].to(docs.dtype))
        assert ends.any()


# -- end to end -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [{}, {"streaming": True, "shuffle_buffer": 16}], ids=["map-style", "streaming"])
def test_a_resumed_run_reproduces_the_uninterrupted_losses_with_document_masks(tmp_path, corpus, data):
    config = {
        "data": {"name": "text", "paths": list(corpus), "block_size": 32, "val_fraction": 0.2, "document_mask": True,
                 **data},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 32, "dropout": 0.1},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "train": {"max_steps": 8, "batch_size": 4, "eval_every": 4, "eval_batches": 2, "log_every": 1,
                  "checkpoint_every": 4, "sample_tokens": 0, "progress": False, "device": "cpu"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "full")]) == 0
    crashed = Run(validate(compose(path, []), Catalog.load()), tmp_path / "crashed")
    crashed.assembly.register(CrashAtStep(6))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert main(["train", "--resume", str(tmp_path / "crashed")]) == 0

    def records(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    full, resumed = records("full"), records("crashed")
    assert [(r["step"], r["loss"]) for r in resumed if "loss" in r] == \
        [(r["step"], r["loss"]) for r in full if "loss" in r]
    assert [r["val_loss"] for r in resumed if "val_loss" in r] == [r["val_loss"] for r in full if "val_loss" in r]
    assert len([r for r in full if "loss" in r]) == 8
