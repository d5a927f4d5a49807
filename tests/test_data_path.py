"""One data path for every data part: the engine's cleaning chain (``hookformer.core.cleaning``) cleans the texts of
``labeled`` and ``prompt_response`` as it does those of ``text``; map-style and streaming share one tokenize / cut /
pack path (``plugins/data/tokens.py``), and every option of ``text`` is honoured in both modes or refused in the one
that cannot honour it. Real files, real `datasets`, the real byte tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from hookformer.core.cleaning import CleaningChain
from hookformer.core.config import compose, validate
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
    cleaners = steps(catalog, ("whitespace", {}), ("length_filter", {"min_chars": 3}))
    source = build(catalog, "labeled", tmp_path, cleaners, **files, max_length=48)
    tables = source.prepare(tok)
    assert rows(tables["train"], tok) == [f"Ｓample text {i}second text {i}" for i in range(6)]
    assert source.report["examples"] == {"train": 6, "validation": 4}
    length = source.report["cleaning"][1]
    assert length["documents"]["removed"] == 1 and length["examples"] == ["x"]


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


# -- one tokenize / cut / pack path ----------------------------------------------------------------------------------

def test_max_document_tokens_cuts_streamed_documents_as_the_shared_token_path_does(catalog, tmp_path, tok):
    docs = [f"document {i}: " + "lorem ipsum " * (i % 5) for i in range(40)]
    path = tmp_path / "a.txt"
    path.write_text("\n\n".join(docs), encoding="utf-8")
    entry = catalog.get("data", "text")
    options = entry.options_model()(paths=[str(path)], block_size=8, val_fraction=0.2, streaming=True,
                                    shuffle_buffer=1, max_document_tokens=5)
    stream = entry.build(options, BuildContext(run_dir=tmp_path, seed=0)).prepare(tok)["train"]
    # A buffer of one block hands the blocks out in reading order: the training documents' pieces, in file order.
    expected = []
    for doc in docs:
        if not held_out(doc, 0.2):
            ids = tok.encode(doc)
            expected += [t for start in range(0, len(ids), 5) for t in [*ids[start:start + 5], tok.special.eos]]
    n_blocks = 20
    assert len(expected) >= n_blocks * 8
    got = stream.next_batch(n_blocks)["input_ids"]
    assert got.flatten().tolist() == expected[:n_blocks * 8]


# -- every option of `text`, in both modes: honoured, or refused -----------------------------------------------------

LONG = "lorem ipsum dolor sit amet " * 3


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder: paragraphs of two lines in a.txt (four of them too short for the cleaning step below), markdown
    paragraphs in c.md, and JSON Lines records with a second text field, some holding bytes that are not UTF-8."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    paragraphs = [f"doc {i} {LONG}\nsecond line of doc {i} {LONG}" for i in range(60)] + ["tiny"] * 4
    (folder / "a.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    (folder / "c.md").write_text("\n\n".join(f"markdown {i} {LONG}" for i in range(20)), encoding="utf-8")
    lines = [json.dumps({"text": f"record {i} {LONG}", "body": f"body of record {i} {LONG}"}).encode()
             for i in range(30)]
    lines[3] = lines[3].replace(b"record 3", b"record \xff 3")
    (folder / "b.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def prepared(catalog, corpus: Path, tmp_path: Path, tok, streaming: bool, **options):
    base = {"paths": [str(corpus)], "block_size": 16, "val_fraction": 0.2, "streaming": streaming}
    source = build(catalog, "text", tmp_path, steps(catalog, ("length_filter", {"min_chars": 10})),
                   **{**base, **options})
    return source, source.prepare(tok)


def train_blocks(data: dict) -> torch.Tensor:
    train = data["train"]
    return train.next_batch(8)["input_ids"] if hasattr(train, "next_batch") else train


def validation_table(data: dict) -> dict:
    validation = data["validation"]
    return validation if isinstance(validation, dict) else {"input_ids": validation}


def validation_text(data: dict, tok) -> str:
    return tok.decode(validation_table(data)["input_ids"].flatten().tolist())


def validation_documents(source) -> int:
    report = source.report
    return report["validation"]["documents"] if "validation" in report else report["documents"]["validation"]


def longest_piece(table: dict, eos: int) -> int:
    """The most tokens between two end-of-document tokens in the consecutive validation blocks."""
    ends = np.flatnonzero(table["input_ids"].flatten().numpy() == eos)
    return int(np.diff(ends).max()) - 1


# option -> (value, check(source, data, base_source, base_data, tok, tmp_path)); the same check in both modes.
HONOURED = {
    "paths": (lambda corpus: [str(corpus / "a.txt")],
              lambda s, d, bs, bd, tok, tmp: all(text.startswith(("doc", "second")) for text in s.texts())),
    # Read as text, b.jsonl is one paragraph: held out or not, so look in both splits.
    "format": ("text", lambda s, d, bs, bd, tok, tmp: '{"text"' in "".join(s.texts()) + validation_text(d, tok)),
    "text_field": ("body", lambda s, d, bs, bd, tok, tmp: any(text.startswith("body of") for text in s.texts())),
    "folder_suffixes": ([".md"], lambda s, d, bs, bd, tok, tmp: all(t.startswith("markdown") for t in s.texts())),
    "sample_by": ("line", lambda s, d, bs, bd, tok, tmp: any(t.startswith("second line") for t in s.texts())
                  and not any(t.startswith("second line") for t in bs.texts())),
    "invalid_utf8": ("skip", lambda s, d, bs, bd, tok, tmp: not any("\ufffd" in t for t in s.texts())
                     and any("\ufffd" in t for t in bs.texts())),
    "block_size": (8, lambda s, d, bs, bd, tok, tmp: train_blocks(d).shape[1] == 8),
    "val_fraction": (0.45, lambda s, d, bs, bd, tok, tmp: validation_documents(s) > validation_documents(bs)),
    "max_document_tokens": (6, lambda s, d, bs, bd, tok, tmp: longest_piece(validation_table(d), tok.special.eos)
                            <= 6 < longest_piece(validation_table(bd), tok.special.eos)),
    "document_mask": (True, lambda s, d, bs, bd, tok, tmp: "document_ids" in validation_table(d)),
    "report_examples": (1, lambda s, d, bs, bd, tok, tmp: len(s.report["cleaning"][0]["examples"]) == 1
                        and len(bs.report["cleaning"][0]["examples"]) == 3),
    "cache_dir": (lambda corpus: str(corpus.parent / "elsewhere"),
                  lambda s, d, bs, bd, tok, tmp: any((tmp / "elsewhere").rglob("*.jsonl"))),
    "num_proc": (2, lambda s, d, bs, bd, tok, tmp: torch.equal(train_blocks(d), train_blocks(bd))),
    "shuffle_buffer": (1, lambda s, d, bs, bd, tok, tmp: [len(d["train"].state_dict()["buffer"])
                                                          for _ in [d["train"].next_batch(4)]] == [1]),
    "validation_blocks": (2, lambda s, d, bs, bd, tok, tmp: len(validation_table(d)["input_ids"]) == 2),
}
#: The options each mode refuses: (option, streaming).
REFUSED = {("num_proc", True), ("shuffle_buffer", False), ("validation_blocks", False)}


def test_the_options_table_covers_every_option_of_the_text_part(catalog):
    options = set(catalog.get("data", "text").options_model().model_fields) - {"streaming"}
    assert options == set(HONOURED)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize("option", sorted(HONOURED))
def test_every_text_option_is_honoured_or_refused_in_each_mode(catalog, corpus, tmp_path, tok, option, streaming):
    value, check = HONOURED[option]
    value = value(corpus) if callable(value) else value
    if (option, streaming) in REFUSED:
        with pytest.raises(pydantic.ValidationError, match=rf"data\.{option}: {value!r} would have no effect"):
            prepared(catalog, corpus, tmp_path, tok, streaming, **{option: value})
        return
    base_source, base_data = prepared(catalog, corpus, tmp_path, tok, streaming)
    source, data = prepared(catalog, corpus, tmp_path, tok, streaming, **{option: value})
    assert check(source, data, base_source, base_data, tok, tmp_path)


def test_a_refused_option_is_a_config_error_at_validation_naming_the_option_and_the_mode(catalog, corpus):
    raw = {**compose(None, []), "callbacks": [],
           "data": {"name": "text", "paths": [str(corpus)], "streaming": True, "num_proc": 2}}
    with pytest.raises(ConfigError, match=r"data: .*data\.num_proc: 2 would have no effect: streaming .*"
                                          r"data\.streaming: false"):
        validate(raw, catalog)


@pytest.mark.parametrize("part,options,refused", [
    ("sentences", {"max_document_tokens": 64}, "data.max_document_tokens: 64"),
    ("sentences", {"document_mask": True}, "data.document_mask: True"),
    ("sentences", {"source": {"name": "text", "paths": ["x.txt"], "streaming": True}}, "cannot stream"),
    ("prompt_response", {"paths": ["x.jsonl"], "num_proc": 2}, "data.num_proc: 2"),
    ("prompt_response", {"paths": ["x.jsonl"], "max_document_tokens": 64}, "data.max_document_tokens: 64"),
    ("prompt_response", {"paths": ["x.jsonl"], "document_mask": True}, "data.document_mask: True"),
])
def test_the_other_parts_refuse_the_data_options_they_cannot_honour(catalog, part, options, refused):
    with pytest.raises(pydantic.ValidationError, match=re.escape(refused)):
        catalog.get("data", part).options_model()(**options)
