"""Data parts ``pairs`` (source/target pairs from local files) and ``code_summaries`` (the built-in seq2seq demo)."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.code_summaries import (CodeSummariesOptions, definitions, first_sentence, most_frequent,
                                                   name_words, split_by_module)
from hookformer.plugins.data.code_summaries import build as build_code_summaries
from hookformer.plugins.data.pairs import PairsOptions
from hookformer.plugins.data.pairs import build as build_pairs
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.testing import check_data

TOKENIZER = ByteTokenizer()
SPECIAL = TOKENIZER.special
RECORDS = [("guten Morgen", "good morning"), ("danke", "thank you"), ("ja", "yes"), ("nein", "no")]


def write(path: Path, records=RECORDS, fields=("source", "target")) -> Path:
    rows = [dict(zip(fields, record)) for record in records]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        delimiter = "\t" if path.suffix == ".tsv" else ","
        path.write_text("\n".join(delimiter.join(row) for row in [fields, *records]) + "\n")
    return path


def build(path: Path, tmp_path: Path, **options):
    options = PairsOptions(paths=[str(path)], cache_dir=str(tmp_path / "cache"), **{"val_fraction": 0.25, **options})
    return build_pairs(options, BuildContext(run_dir=tmp_path, seed=0))


def all_rows(tables: dict) -> list[dict]:
    return [{name: table[name][i] for name in table} for table in tables.values() for i in range(len(table["labels"]))]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_each_pair_is_source_then_eos_for_the_encoder_and_bos_shifted_target_for_the_decoder(tmp_path, suffix):
    source = build(write(tmp_path / f"pairs{suffix}"), tmp_path)
    rows = all_rows(source.prepare(TOKENIZER))
    assert len(rows) == 4
    expected = {text.encode(): target.encode() for text, target in RECORDS}
    for row in rows:
        encoder = row["input_ids"][row["attention_mask"].bool()].tolist()
        assert encoder[-1] == SPECIAL.eos and not (row["input_ids"][~row["attention_mask"].bool()] != SPECIAL.pad).any()
        target = list(expected[bytes(encoder[:-1])])
        n = len(target) + 1
        assert row["labels"][:n].tolist() == target + [SPECIAL.eos] and (row["labels"][n:] == -100).all()
        assert row["decoder_input_ids"][:n].tolist() == [SPECIAL.bos] + target
        assert row["decoder_attention_mask"].tolist() == [1] * n + [0] * (len(row["labels"]) - n)


def test_long_sides_lose_their_end_keep_eos_and_the_report_counts_lengths_and_truncations(tmp_path):
    records = [("a" * 30, "b" * 3), ("c" * 4, "d" * 20), ("e", "f"), ("g" * 2, "h" * 2)]
    source = build(write(tmp_path / "p.jsonl", records), tmp_path, max_source_tokens=10, max_target_tokens=6)
    tables = source.prepare(TOKENIZER)
    assert source.block_size == 10
    for row in all_rows(tables):
        assert int(row["attention_mask"].sum()) <= 10 and int(row["decoder_attention_mask"].sum()) <= 6
    long_source = next(r for r in all_rows(tables) if r["input_ids"][0] == ord("a"))
    assert long_source["input_ids"].tolist() == [ord("a")] * 9 + [SPECIAL.eos]
    lengths = source.report["lengths"]
    assert sum(lengths[s]["source"]["truncated"] for s in lengths) == 1
    assert sum(lengths[s]["target"]["truncated"] for s in lengths) == 1
    assert max(lengths[s]["source"]["max"] for s in lengths) == 30
    assert source.report["pairs"] == {"train": 3, "validation": 1}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_missing_column_is_an_error_naming_the_file_the_option_and_the_columns(tmp_path, suffix):
    path = write(tmp_path / f"p{suffix}", fields=("de", "target"))
    with pytest.raises(DataError, match=r'p\.\w+ has no column "source" \(data\.source_field\); its columns are: de'):
        build(path, tmp_path)


@pytest.mark.parametrize("suffix,where", [(".jsonl", "line 3"), (".csv", "record 3"), (".tsv", "record 3")])
def test_an_empty_side_is_an_error_naming_the_file_the_record_and_the_side(tmp_path, suffix, where):
    path = write(tmp_path / f"p{suffix}", [*RECORDS[:2], ("drei", "  "), *RECORDS[2:]])
    with pytest.raises(DataError, match=rf'p\{suffix}, {where}: the target \(data.target_field "target"\) is empty'):
        build(path, tmp_path)


def test_renamed_fields_are_read_and_a_number_cell_stays_its_text(tmp_path):
    path = write(tmp_path / "p.csv", [("1", "06"), ("2", "7"), ("x", "y")], fields=("q", "a"))
    rows = all_rows(build(path, tmp_path, source_field="q", target_field="a").prepare(TOKENIZER))
    targets = {bytes(r["labels"][r["labels"] >= 0][:-1].tolist()) for r in rows}
    assert targets == {b"06", b"7", b"y"}


def test_pairs_conform_to_the_data_kit(tmp_path):
    path = write(tmp_path / "p.jsonl")
    check_data(build(path, tmp_path), TOKENIZER, rebuild=lambda: build(path, tmp_path))


def test_first_sentence_stops_at_a_sentence_end_followed_by_a_capital_not_at_an_abbreviation():
    assert first_sentence("Return the value, e.g. a list.  More here.\n\nDetails.") == "Return the value, e.g. a list."
    assert first_sentence("Split the\n    text in two\n\nMore.") == "Split the text in two"


def test_definitions_drop_the_docstring_keep_the_code_and_skip_docstring_only_bodies():
    code = b'class Box:\n    """A box of things.\n\n    Long.\n    """\n    size = 1\n\n    def put(self, x):\n' \
           b'        """Put x in the box. Returns nothing."""\n        self.x = x\n\n    def stub(self):\n' \
           b'        """Nothing but a docstring."""\n'
    import ast
    found = {d["name"]: d for d in definitions("m", code, ast.parse(code))}
    assert set(found) == {"Box", "put"}
    assert found["put"] == {"module": "m", "name": "put", "source": "def put(self, x):\n    self.x = x",
                            "summary": "Put x in the box."}
    assert '"""A box' not in found["Box"]["source"] and "Put x in the box" in found["Box"]["source"]


def test_the_split_is_by_module_so_no_module_is_on_both_sides():
    records = [{"module": f"m{i % 7}", "source": str(i), "summary": "s"} for i in range(70)]
    splits = split_by_module(records, 0.2, seed=0)
    train, validation = ({r["module"] for r in rows} for rows in (splits["train"], splits["validation"]))
    assert train and validation and not train & validation and len(splits["validation"]) >= 14


def test_baselines_split_names_into_words_and_take_the_most_frequent_summary():
    assert name_words("def get_next_token(self):\n    pass") == "get next token"
    assert name_words("class HTTPServer(Base):\n    x = 1") == "http server"
    assert name_words("async def parseURL2(x): ...") == "parse url 2"
    assert most_frequent(["b", "a", "a", "b", "c", "a"]) == "a"


@pytest.mark.slow  # parses the whole standard library (about 10 s)
def test_code_summaries_from_the_standard_library_conform_to_the_data_kit(tmp_path):
    options = CodeSummariesOptions(cache_dir=str(tmp_path), max_examples=200, max_source_tokens=64)

    def built():
        return build_code_summaries(options, BuildContext(run_dir=tmp_path, seed=0))

    source = built()
    check_data(source, TOKENIZER, rebuild=built)
    report = source.report
    assert report["pairs"]["train"] + report["pairs"]["validation"] == 200
    train, validation = source.pairs("train"), source.pairs("validation")
    assert all(target.split() and source.startswith(("def", "class", "async")) for source, target in
               zip(validation.sources, validation.targets))
    assert not set(train.sources) & set(validation.sources)


def test_hookformer_data_shows_the_lengths_and_truncations_of_both_sides(tmp_path):
    from hookformer.core.report import format_report

    records = [("a" * 30, "b" * 3), ("c" * 4, "d" * 20), ("e", "f"), ("g" * 2, "h" * 2)]
    source = build(write(tmp_path / "p.jsonl", records), tmp_path, max_source_tokens=10, max_target_tokens=6)
    source.prepare(TOKENIZER)
    text = format_report(source.report)
    assert "token lengths before truncation" in text
    train_rows = {line.split()[1]: line.split() for line in text.splitlines() if line.strip().startswith("train ")}
    assert set(train_rows) == {"source", "target"}
    assert sum(int(row[-1]) for row in train_rows.values()) + sum(
        source.report["lengths"]["validation"][side]["truncated"] for side in ("source", "target")) == 2
