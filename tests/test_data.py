"""The data parts: reading (text, JSONL, CSV, TSV, Parquet, folders, globs, saved datasets; invalid UTF-8 and other
bad input), cleaning before the split, tokenizing with a cache, packing, the built-in Python documentation corpus, and
the ``hookformer data`` command. Real files and real `datasets` pipelines; the real byte tokenizer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from hookformer.core.cli import main
from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext
from hookformer.plugins.data import python_docs


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own cache (the builtin tests share one per module; see ``docs_source``)."""
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def build(catalog, part: str, tmp_path: Path, seed: int = 0, **options):
    entry = catalog.get("data", part)
    return entry.build(entry.options_model()(**options), BuildContext(run_dir=tmp_path / "run", seed=seed))


def write_paragraphs(path: Path, docs: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


DOCS = [f"document number {i}: " + "lorem ipsum " * (i % 5 + 1) for i in range(40)]


def test_blocks_are_contiguous_slices_of_the_token_stream_with_eos_after_every_document(catalog, tok, tmp_path):
    write_paragraphs(tmp_path / "a.txt", DOCS)
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")], block_size=16, val_fraction=0.2)
    blocks = source.prepare(tok)
    assert source.block_size == 16
    for split in ("train", "validation"):
        stream = [t for doc in source.documents(split) for t in tok.encode(doc) + [tok.special.eos]]
        packed = blocks[split]
        assert packed.dtype == torch.int64 and packed.shape == (len(stream) // 16, 16)
        assert packed.flatten().tolist() == stream[: packed.numel()]  # the remainder (< 16 tokens) is dropped
        assert source.report["tokens"][split] == len(stream)
        assert source.report["blocks"][split] == len(packed)
        assert stream.count(tok.special.eos) == source.report["documents"][split]
    json.dumps(source.report)  # the run writes it as JSON


def test_split_is_by_document_deterministic_per_seed_and_texts_yield_training_documents_only(catalog, tmp_path):
    write_paragraphs(tmp_path / "a.txt", DOCS)

    def splits(seed: int):
        source = build(catalog, "text", tmp_path, seed=seed, paths=[str(tmp_path / "a.txt")], val_fraction=0.1)
        return list(source.texts()), list(source.documents("train")), list(source.documents("validation"))

    texts, train, validation = splits(seed=0)
    assert texts == train and len(validation) == 4
    assert not set(train) & set(validation) and sorted(train + validation) == sorted(DOCS)
    assert splits(seed=0) == (texts, train, validation)
    assert splits(seed=1)[2] != validation


def test_validation_gets_at_least_one_document_and_blank_ones_are_dropped(catalog, tmp_path):
    write_paragraphs(tmp_path / "a.txt", [*DOCS[:3], "  \t "])
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")], val_fraction=0.01)
    assert source.report["documents"] == {"train": 2, "validation": 1, "blank_dropped": 1}


def test_a_single_document_cannot_be_split(catalog, tmp_path):
    write_paragraphs(tmp_path / "a.txt", DOCS[:1])
    with pytest.raises(DataError, match="single document"):
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")])


def test_second_prepare_hits_the_token_cache_and_a_changed_file_misses_it(catalog, tok, tmp_path, cache):
    path = write_paragraphs(tmp_path / "a.txt", DOCS)
    options = dict(paths=[str(path)], block_size=8)
    first = build(catalog, "text", tmp_path, **options)
    blocks = first.prepare(tok)
    assert first.report["cache_hit"] == {"train": False, "validation": False}
    assert list((cache / "data" / "tokens").glob("*.arrow"))
    second = build(catalog, "text", tmp_path, **options)
    again = second.prepare(tok)
    assert second.report["cache_hit"] == {"train": True, "validation": True}
    assert all(torch.equal(blocks[split], again[split]) for split in blocks)

    write_paragraphs(path, [doc.upper() for doc in DOCS])
    changed = build(catalog, "text", tmp_path, **options)
    assert not torch.equal(changed.prepare(tok)["train"], blocks["train"])
    assert changed.report["cache_hit"] == {"train": False, "validation": False}


def test_tokenizing_in_several_processes_gives_the_same_blocks(catalog, tok, tmp_path):
    path = write_paragraphs(tmp_path / "a.txt", DOCS)
    one = build(catalog, "text", tmp_path, paths=[str(path)], block_size=8, cache_dir=str(tmp_path / "c1"))
    two = build(catalog, "text", tmp_path, paths=[str(path)], block_size=8, cache_dir=str(tmp_path / "c2"), num_proc=2)
    assert torch.equal(one.prepare(tok)["train"], two.prepare(tok)["train"])


@pytest.mark.parametrize("pattern, expected", [("missing.txt", 'file "{p}" not found'),
                                               ("nothing/*.txt", 'the pattern "{p}" matches no file')])
def test_missing_file_or_empty_glob_names_the_path_and_data_paths(catalog, tmp_path, pattern, expected):
    pattern = str(tmp_path / pattern)
    with pytest.raises(DataError, match="data.paths") as info:
        build(catalog, "text", tmp_path, paths=[pattern])
    assert expected.format(p=pattern) in str(info.value)


def test_empty_corpus_names_the_files(catalog, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n \t\n\n")
    with pytest.raises(DataError, match="empty") as info:
        build(catalog, "text", tmp_path, paths=[str(empty), str(blank)])
    assert str(empty) in str(info.value) and str(blank) in str(info.value)


def test_block_size_larger_than_a_split_says_the_token_count_and_what_to_change(catalog, tok, tmp_path):
    write_paragraphs(tmp_path / "a.txt", ["short one", "short two", "short three"])
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")], block_size=64)
    with pytest.raises(DataError) as info:
        source.prepare(tok)
    tokens = sum(len(tok.encode(doc)) + 1 for doc in source.documents("train"))
    assert f"the train split has {tokens} tokens" in str(info.value) and "data.block_size=64" in str(info.value)
    assert f"set data.block_size below {tokens}" in str(info.value)


def test_jsonl_reads_the_text_field_and_ignores_other_fields_and_blank_lines(catalog, tmp_path):
    records = [{"id": i, "body": doc} for i, doc in enumerate(DOCS[:10])]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records[:5]) + "\n\n" +
                    "\n".join(json.dumps(r) for r in records[5:]) + "\n")
    source = build(catalog, "text", tmp_path, paths=[str(path)], text_field="body")
    assert sorted([*source.documents("train"), *source.documents("validation")]) == sorted(DOCS[:10])
    assert source.report["format"] == {str(path): "jsonl"}


def test_format_jsonl_reads_any_extension_and_mixes_with_text_files(catalog, tmp_path):
    (tmp_path / "records.log").write_text('{"text": "from the json lines file"}\n{"text": "second record"}\n')
    write_paragraphs(tmp_path / "plain.txt", ["from the text file"])
    jsonl = build(catalog, "text", tmp_path, paths=[str(tmp_path / "records.log")], format="jsonl")
    assert "from the json lines file" in [*jsonl.documents("train"), *jsonl.documents("validation")]
    (tmp_path / "more.jsonl").write_text('{"text": "from the .jsonl file"}\n')
    mixed = build(catalog, "text", tmp_path, paths=[str(tmp_path / "plain.txt"), str(tmp_path / "*.jsonl")])
    assert mixed.report["format"] == {str(tmp_path / "plain.txt"): "text", str(tmp_path / "more.jsonl"): "jsonl"}
    assert sorted([*mixed.documents("train"), *mixed.documents("validation")]) == ["from the .jsonl file",
                                                                                   "from the text file"]


def test_jsonl_record_without_the_text_field_names_file_line_and_field(catalog, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"content": "c"}\n')
    with pytest.raises(DataError, match="data.text_field") as info:
        build(catalog, "text", tmp_path, paths=[str(path)])
    assert f"{path}, line 4" in str(info.value) and '"text"' in str(info.value)


def test_malformed_jsonl_names_file_and_line(catalog, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",\n')
    with pytest.raises(DataError, match=f"{path}, line 2: not valid JSON"):
        build(catalog, "text", tmp_path, paths=[str(path)])


BAD = "good paragraph\n\nbad \xff\xfe paragraph\nsecond line\n\nlast paragraph\n".encode("latin-1")


def test_invalid_utf8_replace_keeps_the_document_with_u_fffd_and_counts_the_bytes(catalog, tmp_path):
    (tmp_path / "a.txt").write_bytes(BAD)
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")], val_fraction=0.3)
    docs = [*source.documents("train"), *source.documents("validation")]
    assert "bad \ufffd\ufffd paragraph\nsecond line" in docs and len(docs) == 3
    assert source.report["invalid_utf8"] == {"policy": "replace", "bytes": 2, "documents": 1,
                                             "files": {str(tmp_path / "a.txt"): 2}}


def test_invalid_utf8_skip_drops_the_document_and_counts_it(catalog, tmp_path):
    (tmp_path / "a.txt").write_bytes(BAD)
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")], invalid_utf8="skip")
    assert sorted([*source.documents("train"), *source.documents("validation")]) == ["good paragraph",
                                                                                     "last paragraph\n"]
    assert source.report["invalid_utf8"]["documents"] == 1 and source.report["invalid_utf8"]["bytes"] == 2


def test_invalid_utf8_error_names_the_file_and_line(catalog, tmp_path):
    (tmp_path / "a.txt").write_bytes(BAD)
    with pytest.raises(DataError, match=f"{tmp_path / 'a.txt'}, line 3: .*not valid UTF-8"):
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")], invalid_utf8="error")


def test_invalid_utf8_in_jsonl_is_replaced_too(catalog, tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "fine record"}\n{"text": "broken \xff record"}\n{"text": "another fine one"}\n')
    source = build(catalog, "text", tmp_path, paths=[str(path)])
    assert "broken \ufffd record" in [*source.documents("train"), *source.documents("validation")]
    assert source.report["invalid_utf8"]["bytes"] == 1
    skipped = build(catalog, "text", tmp_path, paths=[str(path)], invalid_utf8="skip")
    assert sorted([*skipped.documents("train"), *skipped.documents("validation")]) == ["another fine one",
                                                                                       "fine record"]


def test_globs_expand_recursively_sorted_and_each_file_once(catalog, tmp_path):
    for name in ("b/two.txt", "a/one.txt", "a/deep/three.txt"):
        write_paragraphs(tmp_path / "corpus" / name, [f"text of {name}"])
    (tmp_path / "corpus" / "a" / "skip.md").write_text("not matched")
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "corpus/**/*.txt"),
                                                     str(tmp_path / "corpus/a/one.txt")])
    assert source.report["files"] == [str(tmp_path / "corpus" / name)
                                      for name in ("a/deep/three.txt", "a/one.txt", "b/two.txt")]


@pytest.mark.parametrize("sample_by, count", [("document", 2), ("paragraph", 4), ("line", 6)])
def test_sample_by_makes_a_document_of_a_file_a_paragraph_or_a_line(catalog, tmp_path, sample_by, count):
    write_paragraphs(tmp_path / "a.txt", ["one\ntwo", "three"])
    write_paragraphs(tmp_path / "b.txt", ["four", "five\nsix"])
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "*.txt")], sample_by=sample_by)
    assert source.report["documents"]["train"] + source.report["documents"]["validation"] == count


# -- the built-in corpus: extracted once for this module ----------------------------------------------------------

@pytest.fixture(scope="module")
def docs_source(catalog, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("docs-cache")
    imported_before = set(sys.modules)
    source = build(catalog, "builtin", tmp_path_factory.mktemp("run"), cache_dir=str(cache_dir))
    return source, cache_dir, set(sys.modules) - imported_before


def test_builtin_corpus_holds_pydoc_topics_and_stdlib_docstrings(docs_source, tok):
    source, _, _ = docs_source
    docs = {*source.documents("train"), *source.documents("validation")}
    assert any(doc.startswith("Serialize ``obj`` to a JSON formatted ``str``.") for doc in docs)  # json.dumps
    assert any("The \"if\" statement" in doc for doc in docs)  # the pydoc topic "if"
    corpus = source.report["corpus"]
    assert corpus["documents"] == len(docs) > 3000 and corpus["megabytes"] > 1
    blocks = source.prepare(tok)
    assert blocks["train"].shape[1] == 128 and len(blocks["validation"]) > 0


def test_builtin_corpus_is_parsed_not_imported_and_skips_test_suites(docs_source):
    source, _, imported = docs_source
    assert not {"this", "antigravity", "turtle", "tkinter"} & imported
    names = [json.loads(line)["name"] for line in Path(source.report["files"][0]).read_text().split("\n")[:-1]]
    assert "json.dumps" in names and "topic while" in names
    assert not [n for n in names if n.startswith(("test.", "idlelib", "lib2to3")) or ".test." in n]


def test_builtin_corpus_is_deterministic_and_cached(docs_source, catalog, tmp_path):
    source, cache_dir, _ = docs_source
    path = Path(source.report["files"][0])
    assert source.report["corpus"]["extraction_seconds"] is not None
    assert python_docs.extract(["topics", "docstrings"]) == [json.loads(line) for line in
                                                                path.read_text().split("\n")[:-1]]
    again = build(catalog, "builtin", tmp_path, cache_dir=str(cache_dir))
    assert again.report["corpus"]["extraction_seconds"] is None
    assert list(again.documents("validation")) == list(source.documents("validation"))


# -- cleaning in the sources ---------------------------------------------------------------------------------------

def cleaners(catalog, *specs) -> list:
    """Built cleaning steps from (name, options) pairs, as ``BuildContext.cleaners`` holds them."""
    built = []
    for name, options in specs:
        entry = catalog.get("cleaner", name)
        built.append(entry.build(entry.options_model()(**options), None))
    return built


def build_cleaned(catalog, part: str, tmp_path: Path, steps: list, **options):
    entry = catalog.get("data", part)
    return entry.build(entry.options_model()(**options), BuildContext(run_dir=tmp_path / "run", cleaners=steps))


def test_sources_clean_before_splitting_and_report_every_step_in_order(catalog, tmp_path):
    docs = [*DOCS, DOCS[0].upper(), "<p>tiny</p>"]
    write_paragraphs(tmp_path / "a.txt", docs)
    steps = cleaners(catalog, ("strip_markup", {}), ("length_filter", {"min_words": 2}), ("exact_dedup", {}))
    source = build_cleaned(catalog, "text", tmp_path, steps, paths=[str(tmp_path / "a.txt")], val_fraction=0.1)
    kept = [*source.documents("train"), *source.documents("validation")]
    assert sorted(kept) == sorted(DOCS)
    assert [entry["step"] for entry in source.report["cleaning"]] == ["strip_markup", "length_filter", "exact_dedup"]
    assert [entry["documents"]["removed"] for entry in source.report["cleaning"]] == [0, 1, 1]
    assert source.report["cleaning"][1]["examples"] == ["<p>tiny</p>"]
    assert source.report["documents"]["train"] + source.report["documents"]["validation"] == len(DOCS)
    json.dumps(source.report)


def test_every_built_in_source_cleans(catalog, tmp_path):
    datasets.Dataset.from_dict({"text": ["one text", "two texts", "one TEXT"]}).save_to_disk(str(tmp_path / "saved"))
    steps = cleaners(catalog, ("exact_dedup", {}))
    saved = build_cleaned(catalog, "saved", tmp_path, steps, path=str(tmp_path / "saved"))
    assert saved.report["cleaning"][0]["documents"] == {"in": 3, "kept": 2, "removed": 1, "changed": 0}
    docs = build_cleaned(catalog, "builtin", tmp_path, cleaners(catalog, ("length_filter", {"max_chars": 2000})),
                         include=["topics"])
    assert docs.report["cleaning"][0]["documents"]["removed"] > 0
    assert all(len(doc) <= 2000 for doc in docs.documents("train"))


def test_a_cleaning_chain_that_removes_every_document_names_the_step(catalog, tmp_path):
    write_paragraphs(tmp_path / "a.txt", DOCS)
    steps = cleaners(catalog, ("nfkc", {}), ("length_filter", {"min_words": 100}))
    with pytest.raises(DataError, match=r"step cleaning\.1 \(length_filter\) removed the last 40 of the 40"):
        build_cleaned(catalog, "text", tmp_path, steps, paths=[str(tmp_path / "a.txt")])


def test_the_cleaned_documents_and_the_tokens_are_cached_under_the_cleaning_chain(catalog, tok, tmp_path):
    path = write_paragraphs(tmp_path / "a.txt", [*DOCS, *DOCS])

    def prepared(steps, **options):
        source = build_cleaned(catalog, "text", tmp_path, steps, paths=[str(path)], block_size=8, **options)
        return source, source.prepare(tok)

    dedup = [("exact_dedup", {})]
    first, blocks = prepared(cleaners(catalog, *dedup), num_proc=2)
    assert first.report["cleaning_cache_hit"] is False and first.report["cache_hit"]["train"] is False
    again, same = prepared(cleaners(catalog, *dedup))  # another num_proc reuses both caches
    assert again.report["cleaning_cache_hit"] is True and again.report["cache_hit"] == {"train": True,
                                                                                          "validation": True}
    assert again.report["cleaning"] == first.report["cleaning"] and torch.equal(same["train"], blocks["train"])
    other, more = prepared(cleaners(catalog, *dedup, ("length_filter", {"min_words": 5})))
    assert other.report["cleaning_cache_hit"] is False and other.report["cache_hit"]["train"] is False
    none, _ = prepared([])
    assert none.report["cache_hit"]["train"] is False and none.report["cleaning"] == []
    assert len(list(none.documents("train"))) > len(list(first.documents("train")))


def test_max_document_tokens_cuts_documents_into_pieces_that_each_end_with_eos(catalog, tok, tmp_path):
    write_paragraphs(tmp_path / "a.txt", ["x" * 25, "y" * 10, "z" * 3, "w" * 21])
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.txt")], block_size=2, val_fraction=0.25,
                   max_document_tokens=10)
    blocks = source.prepare(tok)
    eos = tok.special.eos
    for split in ("train", "validation"):
        stream = []
        for doc in source.documents(split):
            ids = tok.encode(doc)
            for start in range(0, len(ids), 10):
                stream += [*ids[start:start + 10], eos]
        assert blocks[split].flatten().tolist() == stream[: blocks[split].numel()]
        assert source.report["pieces"][split] == stream.count(eos)
    assert source.report["pieces"]["train"] + source.report["pieces"]["validation"] == 3 + 1 + 1 + 3


# -- more formats: CSV, TSV, Parquet, folders, saved datasets ------------------------------------------------------

def test_csv_and_tsv_read_the_text_column_named_by_text_field(catalog, tmp_path):
    (tmp_path / "a.csv").write_text('id,body\n1,"first, with a comma"\n2,"second\nover two lines"\n3,\n')
    (tmp_path / "b.tsv").write_text("body\tid\nthird from tsv\t4\n")
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.csv"), str(tmp_path / "b.tsv")],
                   text_field="body")
    assert sorted([*source.documents("train"), *source.documents("validation")]) == [
        "first, with a comma", "second\nover two lines", "third from tsv"]
    assert source.report["format"] == {str(tmp_path / "a.csv"): "csv", str(tmp_path / "b.tsv"): "tsv"}
    assert source.report["documents"]["blank_dropped"] == 1  # the empty cell


def test_a_numeric_csv_column_is_read_as_text(catalog, tmp_path):
    (tmp_path / "a.csv").write_text("text\n12\n34\n")
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.csv")])
    assert sorted([*source.documents("train"), *source.documents("validation")]) == ["12", "34"]


def test_a_missing_column_names_the_file_and_its_columns(catalog, tmp_path):
    (tmp_path / "good.csv").write_text("text\nfine\n")
    (tmp_path / "bad.csv").write_text("id,content\n1,no text column\n")
    with pytest.raises(DataError) as info:
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "good.csv"), str(tmp_path / "bad.csv")])
    assert f'{tmp_path / "bad.csv"} has no column "text" (data.text_field); its columns are: id, content' in str(
        info.value)


def test_a_malformed_csv_names_the_file(catalog, tmp_path):
    (tmp_path / "good.csv").write_text("text\nfine\nalso fine\n")
    (tmp_path / "bad.csv").write_text('text,n\n"ok",1\n"unterminated,2\nmore\n')
    with pytest.raises(DataError, match=f"cannot read {tmp_path / 'bad.csv'} as CSV: .*EOF inside string"):
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "good.csv"), str(tmp_path / "bad.csv")])


def test_parquet_reads_only_the_text_column(catalog, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2, 3], "content": ["alpha text", "beta text", "gamma text"]}),
                   tmp_path / "a.parquet")
    source = build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.parquet")], text_field="content")
    assert sorted([*source.documents("train"), *source.documents("validation")]) == ["alpha text", "beta text",
                                                                                      "gamma text"]
    with pytest.raises(DataError, match='has no column "text" .*its columns are: id, content'):
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.parquet")])
    with pytest.raises(DataError, match='column "id" .*holds int64, not text'):
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "a.parquet")], text_field="id")


def test_a_corrupt_parquet_file_is_named(catalog, tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError, match=f"{tmp_path / 'broken.parquet'} is not a readable Parquet file"):
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "broken.parquet")])


def test_a_file_that_cannot_be_opened_is_named(catalog, tmp_path):
    write_paragraphs(tmp_path / "corpus" / "good.txt", DOCS)
    (tmp_path / "corpus" / "gone.txt").symlink_to(tmp_path / "deleted.txt")  # a dangling link: root cannot read it
    with pytest.raises(DataError, match=f"cannot read {tmp_path / 'corpus' / 'gone.txt'}: No such file"):
        build(catalog, "text", tmp_path, paths=[str(tmp_path / "corpus")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_named(catalog, tmp_path):
    path = write_paragraphs(tmp_path / "secret.txt", DOCS)
    path.chmod(0)
    with pytest.raises(DataError, match=f"cannot read {path}: Permission denied"):
        build(catalog, "text", tmp_path, paths=[str(path)])


def test_a_folder_stands_for_its_files_at_any_depth_by_suffix_without_hidden_ones(catalog, tmp_path):
    corpus = tmp_path / "corpus"
    write_paragraphs(corpus / "b.txt", ["from b"])
    write_paragraphs(corpus / "sub" / "a.md", ["from a"])
    (corpus / "sub" / "c.jsonl").write_text('{"text": "from c"}\n')
    write_paragraphs(corpus / "skip.bin", ["not a text suffix"])
    write_paragraphs(corpus / ".hidden.txt", ["hidden file"])
    write_paragraphs(corpus / ".git" / "x.txt", ["hidden folder"])
    source = build(catalog, "text", tmp_path, paths=[str(corpus)])
    assert source.report["files"] == [str(corpus / "b.txt"), str(corpus / "sub" / "a.md"),
                                      str(corpus / "sub" / "c.jsonl")]
    assert source.report["format"][str(corpus / "sub" / "c.jsonl")] == "jsonl"
    only_md = build(catalog, "text", tmp_path, paths=[str(corpus)], folder_suffixes=[".md", ".bin"])
    assert only_md.report["files"] == [str(corpus / "skip.bin"), str(corpus / "sub" / "a.md")]
    with pytest.raises(DataError, match=r'the folder ".*" holds no file ending in \.csv'):
        build(catalog, "text", tmp_path, paths=[str(corpus)], folder_suffixes=[".csv"])


def test_a_latin_1_file_among_utf_8_ones_follows_the_invalid_utf8_policy(catalog, tmp_path):
    write_paragraphs(tmp_path / "a.txt", ["plain utf-8", "caf\u00e9 in utf-8"])
    (tmp_path / "b.txt").write_bytes("first line\n\ncaf\u00e9 in latin-1\n".encode("latin-1"))
    (tmp_path / "c.csv").write_bytes("text\nna\u00efve latin-1 cell\nfine cell\n".encode("latin-1"))
    paths = [str(tmp_path / name) for name in ("a.txt", "b.txt", "c.csv")]
    with pytest.raises(DataError, match=f"{tmp_path / 'b.txt'}, line 3: .*not valid UTF-8"):
        build(catalog, "text", tmp_path, paths=paths, invalid_utf8="error")
    replaced = build(catalog, "text", tmp_path, paths=paths)
    docs = [*replaced.documents("train"), *replaced.documents("validation")]
    assert "caf\ufffd in latin-1\n" in docs and "na\ufffdve latin-1 cell" in docs and "caf\u00e9 in utf-8" in docs
    assert replaced.report["invalid_utf8"]["files"] == {str(tmp_path / "b.txt"): 1, str(tmp_path / "c.csv"): 1}
    skipped = build(catalog, "text", tmp_path, paths=paths, invalid_utf8="skip")
    assert sorted([*skipped.documents("train"), *skipped.documents("validation")]) == [
        "caf\u00e9 in utf-8", "fine cell", "first line", "plain utf-8"]


def test_saved_reads_a_dataset_or_a_split_of_a_dataset_dict(catalog, tmp_path):
    train = datasets.Dataset.from_dict({"body": ["train one", "train two"], "n": [1, 2]})
    test = datasets.Dataset.from_dict({"body": ["test one", "test two", "test three"], "n": [3, 4, 5]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    source = build(catalog, "saved", tmp_path, path=str(tmp_path / "dict"), split="test", text_field="body")
    assert sorted([*source.documents("train"), *source.documents("validation")]) == ["test one", "test three",
                                                                                      "test two"]
    assert source.report["split"] == "test" and source.report["source"] == "saved"
    train.save_to_disk(str(tmp_path / "one"))
    single = build(catalog, "saved", tmp_path, path=str(tmp_path / "one"), text_field="body")
    assert sorted([*single.documents("train"), *single.documents("validation")]) == ["train one", "train two"]


@pytest.mark.parametrize("options, message", [
    (dict(path="dict"), 'data.split: ".*dict" holds the splits train, test; choose one'),
    (dict(path="dict", split="dev"), 'data.split: ".*dict" has no split "dev"; its splits are: train, test'),
    (dict(path="one", split="train"), 'data.split: ".*one" holds one dataset, not a DatasetDict'),
    (dict(path="dict", split="train", text_field="text"),
     'split "train" of .*dict has no column "text" \\(data.text_field\\); its columns are: body, n'),
    (dict(path="dict", split="train", text_field="n"), 'column "n" \\(data.text_field\\) holds .*int64.*, not text'),
    (dict(path="missing"), 'data.path: ".*missing" not found'),
    (dict(path="plain"), 'data.path: ".*plain" is not a dataset saved with save_to_disk'),
])
def test_saved_errors_name_the_path_split_and_columns(catalog, tmp_path, options, message):
    data = datasets.Dataset.from_dict({"body": ["a text", "b text"], "n": [1, 2]})
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(str(tmp_path / "dict"))
    data.save_to_disk(str(tmp_path / "one"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=message):
        build(catalog, "saved", tmp_path, **{**options, "path": str(tmp_path / options["path"])})


# -- hookformer data ------------------------------------------------------------------------------------------------

def data_config(tmp_path: Path, *cleaning, **data) -> Path:
    corpus = write_paragraphs(tmp_path / "corpus.txt", [*DOCS, DOCS[1], "<b>x</b>"])
    config = {"data": {"name": "text", "paths": [str(corpus)], "block_size": 16, **data},
              "tokenizer": {"name": "byte"}, "cleaning": list(cleaning)}
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_data_command_prints_each_cleaning_step_examples_and_token_counts(tmp_path, capsys):
    config = data_config(tmp_path, "strip_markup", {"name": "length_filter", "min_chars": 3}, "exact_dedup")
    assert main(["data", str(config), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "data: text, 1 file" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "1 ", "2 "))]
    assert [row[:6] for row in rows] == [["0", "strip_markup", "42", "42", "0", "1"],
                                         ["1", "length_filter", "42", "41", "1", "0"],
                                         ["2", "exact_dedup", "41", "40", "1", "0"]]
    assert "removed by length_filter (1 documents), the first 1:\n  '<b>x</b>'" in out
    assert f"removed by exact_dedup (1 documents), the first 1:\n  {DOCS[1]!r}" in out
    assert "documents: 38 train, 2 validation" in out and "tokenizer: byte" in out
    assert out.count(" no\n") == 2  # tokens were not cached yet; no run directory is left behind
    assert main(["data", str(config), "--examples", "0"]) == 0
    again = capsys.readouterr().out
    assert "cleaning (from the cache)" in again and "removed by" not in again and again.count(" yes\n") == 2


def test_the_data_command_keeps_its_outputs_in_run_dir(tmp_path, capsys):
    config = data_config(tmp_path, "exact_dedup")
    run_dir = tmp_path / "kept"
    assert main(["data", str(config), "--run-dir", str(run_dir), "--set", "data.block_size=8"]) == 0
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["block_size"] == 8 and report["cleaning"][0]["step"] == "exact_dedup"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["cleaning"] == [{"name": "exact_dedup"}]
    assert main(["data", str(config), "--run-dir", str(run_dir)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_the_data_command_exits_2_naming_the_step_that_removed_everything(tmp_path, capsys):
    config = data_config(tmp_path, {"name": "length_filter", "min_chars": 10000})
    run_dir = tmp_path / "new"
    assert main(["data", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hookformer: error: cleaning removed every document: step cleaning.0 (length_filter)")
    assert not run_dir.exists()  # a failed start leaves nothing behind
