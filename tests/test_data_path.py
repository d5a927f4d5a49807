"""One data path for every data part: the engine's cleaning chain (``hookformer.core.cleaning``) cleans the texts of
``labeled`` and ``prompt_response`` as it does those of ``text``; map-style and streaming share one tokenize / cut /
pack path (``plugins/data/tokens.py``), and every option of ``text`` is honoured in both modes or refused in the one
that cannot honour it. Real files, real `datasets`, the real byte tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from hookformer.core.cleaning import CleaningChain
from hookformer.core.errors import ConfigError, DataError
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.labeled import LabeledSource
from hookformer.plugins.data.pipeline import PackedSource
from hookformer.plugins.data.prompt_response import PromptResponseSource
from hookformer.plugins.data.sentences import SentenceSource
from hookformer.plugins.data.streaming import StreamingSource, held_out


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def steps(catalog, *specs) -> list:
    """Built cleaning steps from (name, options) pairs, as ``BuildContext.cleaners`` holds them."""
    return [catalog.get("cleaner", name).build(catalog.get("cleaner", name).options_model()(**options), None)
            for name, options in specs]


def build(catalog, part: str, tmp_path: Path, cleaners=(), **options):
    entry = catalog.get("data", part)
    return entry.build(entry.options_model()(**options),
                       BuildContext(run_dir=tmp_path / "run", seed=0, cleaners=list(cleaners)))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def rows(table: dict, tok) -> list[str]:
    """The text of each example of an examples table (special tokens and padding left out)."""
    specials = {tok.special.pad, tok.special.eos, tok.special.cls, tok.special.sep}
    return [tok.decode([t for t in row.tolist() if t not in specials]) for row in table["input_ids"]]


# -- the cleaning chain over records ---------------------------------------------------------------------------------

def test_clean_records_drops_a_record_when_any_field_is_removed_and_counts_every_field(catalog):
    chain = CleaningChain(steps(catalog, ("whitespace", {}), ("length_filter", {"min_chars": 3})))
    kept, (prompts, responses) = chain.clean_records([["a  long prompt", "ok", "third  one"],
                                                      ["fine", "answer", "no"]])
    assert kept.tolist() == [0] and prompts == ["a long prompt"] and responses == ["fine"]
    whitespace, length = chain.report()
    assert whitespace["documents"] == {"in": 6, "kept": 6, "removed": 0, "changed": 2}
    assert length["documents"] == {"in": 6, "kept": 4, "removed": 2, "changed": 0}


def test_clean_records_that_leave_no_whole_record_is_a_data_error_naming_the_step(catalog):
    chain = CleaningChain(steps(catalog, ("whitespace", {}), ("length_filter", {"min_chars": 5})))
    with pytest.raises(DataError, match=r"every record.*cleaning\.1 \(length_filter\)"):
        chain.clean_records([["long enough", "also long"], ["no", "nope"]])  # every response is too short


# -- prompt_response -------------------------------------------------------------------------------------------------

PAIRS = [{"prompt": f"Question  number {i}?", "response": f"Answer\t\tnumber {i}.  "} for i in range(8)]


def test_prompt_response_cleaning_that_removes_every_record_is_an_error_not_a_silent_run(catalog, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    with pytest.raises(DataError, match=r"cleaning removed every record.*cleaning\.0 \(length_filter\)"):
        build(catalog, "prompt_response", tmp_path, steps(catalog, ("length_filter", {"min_chars": 100000})),
              paths=[str(path)])


def test_a_whitespace_step_changes_the_prompt_response_examples_and_the_report_counts_both_fields(
        catalog, tmp_path, tok):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    source = build(catalog, "prompt_response", tmp_path, steps(catalog, ("whitespace", {})), paths=[str(path)],
                   block_size=64, val_fraction=0.25)
    tables = source.prepare(tok)
    texts = sorted(text for split in tables.values() for text in rows(split, tok))
    assert texts == sorted(f"Question number {i}?\nAnswer number {i}." for i in range(8))
    (entry,) = source.report["cleaning"]
    assert entry["step"] == "whitespace"
    assert entry["documents"] == {"in": 16, "kept": 16, "removed": 0, "changed": 16}


def test_prompt_response_drops_a_record_when_a_step_removes_its_prompt_or_its_response(catalog, tmp_path, tok):
    records = PAIRS + [{"prompt": "Hi", "response": "A long enough answer"},
                       {"prompt": "A long enough prompt", "response": "Yo"}]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    source = build(catalog, "prompt_response", tmp_path, steps(catalog, ("length_filter", {"min_chars": 5})),
                   paths=[str(path)], block_size=64, val_fraction=0.25)
    assert sum(source.report["records"].values()) == len(PAIRS)
    assert source.report["cleaning"][0]["documents"]["removed"] == 2
    assert source.report["cleaning"][0]["examples"] == ["Hi", "Yo"]


# -- labeled ---------------------------------------------------------------------------------------------------------

def labeled_files(tmp_path: Path, pairs: bool = False) -> dict:
    def records(n: int, offset: int) -> list[dict]:
        out = [{"text": f"Ｓample  text {i}", "label": "even" if i % 2 else "odd"} for i in range(offset, offset + n)]
        return [{**record, "other": f"second  text {i}"} for i, record in enumerate(out)] if pairs else out
    return {"train_files": [str(write_jsonl(tmp_path / "train.jsonl", records(6, 0)))],
            "validation_files": [str(write_jsonl(tmp_path / "validation.jsonl", records(4, 6)))],
            **({"text_pair_field": "other"} if pairs else {})}


def test_nfkc_and_whitespace_steps_change_the_labeled_training_examples_and_are_reported(catalog, tmp_path, tok):
    source = build(catalog, "labeled", tmp_path, steps(catalog, ("nfkc", {}), ("whitespace", {})),
                   **labeled_files(tmp_path), max_length=32)
    tables = source.prepare(tok)
    assert rows(tables["train"], tok) == [f"Sample text {i}" for i in range(6)]  # fullwidth S and double space gone
    assert rows(tables["validation"], tok) == [f"Sample text {i}" for i in range(6, 10)]
    nfkc, whitespace = source.report["cleaning"]
    assert nfkc["documents"] == {"in": 10, "kept": 10, "removed": 0, "changed": 10}
    assert whitespace["documents"] == {"in": 10, "kept": 10, "removed": 0, "changed": 10}


def test_labeled_pairs_are_cleaned_and_a_record_goes_when_its_pair_is_removed(catalog, tmp_path, tok):
    files = labeled_files(tmp_path, pairs=True)
    train = Path(files["train_files"][0])
    write_jsonl(train, [*map(json.loads, train.read_text().splitlines()), {"text": "kept  text", "label": "odd",
                                                                            "other": "x"}])
    source = build(catalog, "labeled", tmp_path, steps(catalog, ("whitespace", {}), ("length_filter", {"min_chars": 3})),
                   **files, max_length=48)
    tables = source.prepare(tok)
    assert rows(tables["train"], tok) == [f"Ｓample text {i}second text {i}" for i in range(6)]
    assert source.report["examples"] == {"train": 6, "validation": 4}
    assert source.report["cleaning"][1]["documents"]["removed"] == 1 and source.report["cleaning"][1]["examples"] == ["x"]


def test_cleaning_that_removes_every_validation_record_is_a_data_error_naming_the_step(catalog, tmp_path):
    files = labeled_files(tmp_path, pairs=True)  # the validation pairs repeat "second text 0..3" of the training file
    with pytest.raises(DataError, match=r"every validation record.*cleaning\.1 \(exact_dedup\)"):
        build(catalog, "labeled", tmp_path, steps(catalog, ("whitespace", {}), ("exact_dedup", {})), **files)


def test_token_classification_with_cleaning_is_a_config_error_naming_cleaning_and_the_task(catalog, tmp_path):
    path = write_jsonl(tmp_path / "tags.jsonl", [{"tokens": ["Ada", "wrote"], "tags": ["B-PER", "O"]}] * 4)
    with pytest.raises(ConfigError, match=r"cleaning.*token_classification"):
        build(catalog, "labeled", tmp_path, steps(catalog, ("whitespace", {})), task="token_classification",
              train_files=[str(path)])


@pytest.mark.parametrize("source", [PackedSource, StreamingSource, SentenceSource, LabeledSource,
                                    PromptResponseSource])
def test_every_built_in_data_source_declares_that_it_applies_cleaning(source):
    assert source.applies_cleaning is True
