"""The data parts: reading (text, JSONL, invalid UTF-8, globs), splitting, tokenizing with a cache, packing, and the
built-in Python documentation corpus. Real files and real `datasets` pipelines; the real byte tokenizer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext
from hookformer.plugins.data import python_docs
from hookformer.registry.catalog import Catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="module")
def tok(catalog):
    entry = catalog.get("tokenizer", "byte")
    return entry.build(entry.options_model()(), BuildContext(run_dir=Path(".")))


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
