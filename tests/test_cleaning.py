"""The cleaning stage: each built-in step, the chain that runs them (order, counts, examples, cache, batch by batch,
several processes), MinHash against exact Jaccard similarity, and a chain that removes everything. Steps are built
through the registry, as a run builds them; datasets are real `datasets` Datasets."""

from __future__ import annotations

import math
import random

import datasets
import numpy as np
import pytest

from hookformer.core.cleaning import CleaningChain
from hookformer.core.config import compose, validate
from hookformer.core.errors import ConfigError, DataError
from hookformer.plugins.cleaners.minhash_dedup import lsh_bands
from hookformer.registry.catalog import Catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def step(catalog):
    """``step(name, **options)``: a cleaning step built through the registry."""
    def build(name: str, **options):
        entry = catalog.get("cleaner", name)
        return entry.build(entry.options_model()(**options), None)
    return build


def dataset(texts: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"text": texts})


# -- the steps ----------------------------------------------------------------------------------------------------

def test_every_step_keeps_the_batch_length_and_has_a_fingerprint_that_follows_its_options(catalog, step):
    texts = ["Plain text.", "  <b>x</b>  ", "a a a a a a a a a a a a", "ﬁ\x07"]
    for name in catalog.names("cleaner"):
        built = step(name)
        assert len(built(list(texts))) == len(texts), name
        assert built.fingerprint() == step(name).fingerprint()
    assert step("length_filter", min_chars=5).fingerprint() != step("length_filter").fingerprint()
    assert step("exact_dedup").stateful and step("minhash_dedup").stateful and not step("nfkc").stateful


def test_nfkc_folds_compatibility_characters_and_the_form_option_chooses_the_normalization(step):
    text = "ﬁne ＡＢＣ\u00a0e\u0301"
    assert step("nfkc")([text]) == ["fine ABC \u00e9"]
    assert step("nfkc", form="NFC")([text]) == ["ﬁne ＡＢＣ\u00a0\u00e9"]
    assert step("nfkc")(["plain ascii"]) == ["plain ascii"]


def test_strip_control_removes_control_characters_but_newline_and_tab_and_keeps_line_breaks(step):
    text = "a\x00b\x1b[31mred\x7f\x85\tc\r\nd\re"
    assert step("strip_control")([text]) == ["ab[31mred\tc\nd\ne"]
    assert step("strip_control", line_endings=False)([text]) == ["ab[31mred\tc\nde"]


@pytest.mark.parametrize("text, cleaned", [
    ('<div class="x">Hello <b>bold</b> and <i>it</i><br>next</div>', "\nHello bold and it\nnext\n"),
    ("<p>one</p><p>two</p>", "\none\n\ntwo\n"),
    ("<!-- note -->kept<script>var x = 1 < 2;</script><STYLE>p {}</STYLE>", "kept"),
    ('<?xml version="1.0"?><!DOCTYPE html><![CDATA[raw]]>', "raw"),
    ("<w:p><w:t>word</w:t></w:p> <img src='a.png'/>", "word "),
    ("&amp; &lt;tag&gt; &#39;q&#x27; &nbsp;", "& <tag> 'q' \u00a0"),
    # Not plainly markup: placeholders, generics, comparisons, unknown or unterminated references.
    ("use <body> here, then <input>", "use <body> here, then <input>"),
    ("List<String> and Map<K, V> and <T>", "List<String> and Map<K, V> and <T>"),
    ("if a<b and c>d: run(<a statement>)", "if a<b and c>d: run(<a statement>)"),
    ("AT&T ?a=1&copy=2 &bogus; & done", "AT&T ?a=1&copy=2 &bogus; & done"),
])
def test_strip_markup_removes_plain_markup_and_leaves_what_may_be_prose_or_code(step, text, cleaned):
    assert step("strip_markup")([text]) == [cleaned]


def test_strip_markup_can_keep_references_and_remove_extra_elements(step):
    assert step("strip_markup", references=False)(["a &amp; b"]) == ["a &amp; b"]
    assert step("strip_markup", extra_elements=["entry"])(["<entry>x</entry>"]) == ["x"]


def test_whitespace_collapses_runs_inside_lines_keeps_indentation_and_caps_blank_lines(step):
    text = "\n\n  def f():   \n\tx  =\t1\u00a0 y\n\n\n\n\nend  \n\n"
    assert step("whitespace")([text]) == ["  def f():\n\tx = 1 y\n\n\nend"]
    assert step("whitespace", keep_indentation=False, max_blank_lines=0)([text]) == ["def f():\nx = 1 y\nend"]


def test_length_filter_bounds_characters_and_whitespace_separated_words(step):
    texts = ["short", "two words", "a b c d e", "x" * 50]
    assert step("length_filter", min_chars=6)(texts) == [None, "two words", "a b c d e", "x" * 50]
    assert step("length_filter", max_chars=20)(texts) == ["short", "two words", "a b c d e", None]
    assert step("length_filter", min_words=2, max_words=4)(texts) == [None, "two words", None, None]


def test_length_filter_with_crossed_bounds_is_a_config_error_naming_the_step(catalog):
    raw = compose(None, [])
    raw["cleaning"] = ["nfkc", {"name": "length_filter", "min_words": 10, "max_words": 5}]
    with pytest.raises(ConfigError, match=r"cleaning\.1: .*min_words \(10\) is larger than max_words \(5\)"):
        validate(raw, catalog)


def test_repetition_filter_scores_follow_the_gopher_definitions(step):
    scores = step("repetition_filter").scores([
        "x y\nx y\nx y\nz",  # lines: 2 of 4 repeat; words x y x y x y z (7 characters)
        "a b c d e f g h i j",  # no repetition at all
        "a a a a a a a a",
        "",
    ])
    assert scores["duplicate_lines"].tolist() == [0.5, 0.0, 0.0, 0.0]
    assert scores["duplicate_line_chars"].tolist() == [0.6, 0.0, 0.0, 0.0]  # 6 of 10 line characters ("x y" x 3 + z)
    # top 2-gram "x y" occurs 3 times, covering 6 of the 7 word characters; overlapping "a a" covers every one.
    assert scores["top_2gram_chars"].tolist() == [6 / 7, 0.0, 1.0, 0.0]
    # top 3-gram: "x y x" at 0 and 2 covers words 0-4 (5 characters), never counting a character twice.
    assert scores["top_3gram_chars"][0] == 5 / 7
    # duplicate 5-grams of "a" x 8: starting at 1, 2, 3 are repeats of the one at 0, covering words 1-7.
    assert scores["duplicate_5gram_chars"].tolist() == [0.0, 0.0, 7 / 8, 0.0]


def test_repetition_filter_removes_boilerplate_and_keeps_prose(step):
    prose = ("The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single "
             "step. Those who cannot remember the past are condemned to repeat it.")
    menu = "\n".join(["Home", "About", "Contact", "Home", "About", "Contact", "Login"])
    spam = "buy cheap pills now " * 10
    assert step("repetition_filter")([prose, menu, spam]) == [prose, None, None]
    lines_only = step("repetition_filter", max_top_ngram_char_fraction={}, max_duplicate_ngram_char_fraction={})
    assert lines_only([menu, spam]) == [None, spam]  # the spam is one line: only the n-gram rules catch it
    lenient = step("repetition_filter", max_duplicate_line_fraction=1.0, max_duplicate_line_char_fraction=1.0,
                   max_top_ngram_char_fraction={}, max_duplicate_ngram_char_fraction={})
    assert lenient([menu, spam]) == [menu, spam]


def test_exact_dedup_keeps_the_first_of_copies_that_differ_in_case_and_whitespace(step):
    dedup = step("exact_dedup")
    assert dedup(["Hello  World\n", "other", "hello world"]) == ["Hello  World\n", "other", None]
    assert dedup(["HELLO\tWORLD", "new"]) == [None, "new"]  # state carries across batches


@pytest.mark.parametrize("name", ["exact_dedup", "minhash_dedup"])
def test_a_dedup_step_restored_from_its_state_dict_decides_as_the_original(step, name):
    """Streamed runs checkpoint the dedup state (as plain bytes: checkpoints are read with weights_only)."""
    texts = [" ".join(f"w{(i * 7 + j) % 50}" for j in range(30)) for i in range(40)]
    original = step(name)
    original(texts[:20])
    state = original.state_dict()
    assert all(isinstance(value, bytes) for value in state.values())
    restored = step(name)
    restored.load_state_dict(state)
    later = texts[10:] + [text.upper() for text in texts[:5]]
    assert restored(later) == original(later)
    assert restored(later) == [None] * len(later)  # everything was seen by now


# -- MinHash ------------------------------------------------------------------------------------------------------

VOCABULARY = [f"w{i}" for i in range(20000)]


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def edited(words: list[str], rng: random.Random, changes: int) -> list[str]:
    """``words`` with ``changes`` of them replaced by fresh words (each change breaks up to 5 shingles)."""
    out = list(words)
    for i in rng.sample(range(len(out)), changes):
        out[i] = rng.choice(VOCABULARY)
    return out


def pairs(rng: random.Random, count: int, changes: int, length: int = 200) -> list[tuple[str, str]]:
    made = []
    for _ in range(count):
        words = [rng.choice(VOCABULARY) for _ in range(length)]
        made.append((" ".join(words), " ".join(edited(words, rng, changes))))
    return made


def test_minhash_estimates_jaccard_similarity_within_its_standard_error(step):
    rng = random.Random(0)
    sample = [pair for changes in (1, 4, 10, 25, 60) for pair in pairs(rng, 20, changes)]
    dedup = step("minhash_dedup", num_perm=256)
    errors = []
    for a, b in sample:
        signatures = dedup.signatures([a, b])
        estimate = float(np.mean(signatures[0] == signatures[1]))
        exact = jaccard(a, b)
        assert abs(estimate - exact) <= 4 * math.sqrt(exact * (1 - exact) / 256) + 0.01, (exact, estimate)
        errors.append(estimate - exact)
    assert abs(np.mean(errors)) < 0.01  # unbiased
    similarities = sorted(jaccard(a, b) for a, b in sample)
    assert similarities[0] < 0.2 and similarities[-1] > 0.9  # the sample spans the range


def test_minhash_removes_pairs_above_the_threshold_at_the_lsh_rate_and_keeps_pairs_far_below(step):
    rng = random.Random(1)
    near, far = pairs(rng, 150, 2), pairs(rng, 150, 50)  # Jaccard about 0.9 and about 0.2
    dedup = step("minhash_dedup", threshold=0.7)
    bands, rows = dedup.bands, dedup.rows
    kept = dedup([a for a, _ in near + far] + [b for _, b in near + far])
    second = kept[len(near) + len(far):]
    assert all(kept[: len(near) + len(far)])  # unrelated originals all stay
    removed_near = sum(text is None for text in second[: len(near)])
    # Expected: the chance that a pair at its exact similarity shares a band (verification then always agrees).
    expected = sum(1 - (1 - jaccard(a, b) ** rows) ** bands for a, b in near)
    assert min(jaccard(a, b) for a, b in near) > 0.8
    assert abs(removed_near - expected) <= 4 * math.sqrt(expected * (1 - expected / len(near))) + 1
    assert removed_near >= 0.95 * len(near)
    assert max(jaccard(a, b) for a, b in far) < 0.35
    assert all(text is not None for text in second[len(near):])


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_lsh_bands_put_the_s_curve_midpoint_near_the_threshold(threshold):
    bands, rows = lsh_bands(threshold, 128)
    assert bands * rows <= 128
    assert abs((1 / bands) ** (1 / rows) - threshold) < 0.1


def test_minhash_signatures_are_seeded_and_do_not_depend_on_batching(step):
    texts = [" ".join(random.Random(i).choices(VOCABULARY, k=30)) for i in range(6)] + ["two words", ""]
    whole = step("minhash_dedup").signatures(texts)
    assert np.array_equal(whole, np.concatenate([step("minhash_dedup").signatures(texts[:3]),
                                                 step("minhash_dedup").signatures(texts[3:])]))
    assert not np.array_equal(whole, step("minhash_dedup", seed=2).signatures(texts))


# -- the chain ----------------------------------------------------------------------------------------------------

DOCS = ["<p>First  document</p> with enough words here", "short", "Second document with enough words here",
        "second   DOCUMENT with enough words here", "Third\x00 one, with enough words here too"]


def test_the_chain_runs_the_steps_in_config_order(step):
    markup_first = CleaningChain([step("strip_markup"), step("length_filter", max_chars=10)])
    length_first = CleaningChain([step("length_filter", max_chars=10), step("strip_markup")])
    assert markup_first.clean_batch(["<b>12345</b>"]) == ["12345"]
    assert length_first.clean_batch(["<b>12345</b>"]) == []


def test_the_chain_counts_documents_and_bytes_per_step_and_keeps_examples_of_removed_text(step):
    chain = CleaningChain([step("strip_markup"), step("strip_control"), step("length_filter", min_words=3),
                           step("exact_dedup")], examples=1)
    kept = chain.clean_batch(DOCS)
    assert kept == ["\nFirst  document\n with enough words here", "Second document with enough words here",
                    "Third one, with enough words here too"]
    report = chain.report()
    assert [entry["step"] for entry in report] == ["strip_markup", "strip_control", "length_filter", "exact_dedup"]
    assert [entry["index"] for entry in report] == [0, 1, 2, 3]
    size = [len(doc.encode()) for doc in DOCS]
    assert report[0]["documents"] == {"in": 5, "kept": 5, "removed": 0, "changed": 1}
    assert report[0]["bytes"] == {"in": sum(size), "kept": sum(size) - 5, "removed": 0, "changed": 5}  # <p> </p>
    assert report[1]["documents"] == {"in": 5, "kept": 5, "removed": 0, "changed": 1}
    assert report[2]["documents"] == {"in": 5, "kept": 4, "removed": 1, "changed": 0}
    assert report[2]["bytes"]["removed"] == 5 and report[2]["examples"] == ["short"]
    assert report[3]["documents"] == {"in": 4, "kept": 3, "removed": 1, "changed": 0}
    assert report[3]["examples"] == [DOCS[3]]  # examples show documents as they entered the chain
    assert report[3]["stateful"] and report[3]["fingerprint"] == step("exact_dedup").fingerprint()
    for entry in report:
        b = entry["bytes"]
        assert b["in"] == b["kept"] + b["removed"] + b["changed"]
    chain.clean_batch(["tiny"])  # counts and examples accumulate over batches, up to ``examples``
    assert chain.report()[2]["documents"]["removed"] == 2 and chain.report()[2]["examples"] == ["short"]


def test_examples_are_cut_to_300_characters(step):
    chain = CleaningChain([step("length_filter", max_chars=100)])
    chain.clean_batch(["x" * 1000])
    assert chain.report()[0]["examples"] == ["x" * 300 + "... (700 more characters)"]


def test_a_step_that_leaves_a_blank_text_removes_the_document(step):
    chain = CleaningChain([step("strip_markup"), step("length_filter")])
    assert chain.clean_batch(["<p> </p>", "text"]) == ["text"]
    assert chain.report()[0]["documents"]["removed"] == 1


def test_a_dataset_cleaned_in_passes_and_processes_equals_the_batch_by_batch_chain(step, tmp_path):
    originals = [f"Doc {i}: <b>some</b> words\there {'and more ' * (i % 3)}" for i in range(40)]
    docs = originals + [doc.upper() for doc in originals] + [doc.replace(" ", "  ") for doc in originals] + ["tiny"]
    steps = [step("strip_markup"), step("whitespace"), step("exact_dedup"), step("length_filter", min_words=3),
             step("minhash_dedup")]
    batches = CleaningChain(steps)
    expected = [text for start in range(0, len(docs), 7) for text in batches.clean_batch(docs[start:start + 7])]
    for num_proc in (1, 2):
        chain = CleaningChain(steps)
        cleaned = chain.apply(dataset(docs), source_fingerprint="source", cache_dir=tmp_path / str(num_proc),
                              num_proc=num_proc)
        assert chain.cache_hit is False
        assert cleaned["text"] == expected
        assert chain.report() == batches.report()
    assert batches.report()[2]["documents"]["removed"] == 80  # exact_dedup: each original comes three times


def test_a_second_apply_reads_the_cache_and_reports_the_same_counts(step, tmp_path):
    def apply(*steps, source="source"):
        chain = CleaningChain(steps, examples=2)
        cleaned = chain.apply(dataset(DOCS), source_fingerprint=source, cache_dir=tmp_path, num_proc=1)
        return chain, cleaned["text"]

    first, texts = apply(step("strip_markup"), step("exact_dedup"))
    again, same = apply(step("strip_markup"), step("exact_dedup"))
    assert (first.cache_hit, again.cache_hit) == (False, True)
    assert same == texts and again.report() == first.report()
    assert first.fingerprint() == again.fingerprint()
    assert not apply(step("strip_markup", references=False), step("exact_dedup"))[0].cache_hit
    assert not apply(step("exact_dedup"), step("strip_markup"))[0].cache_hit  # order is part of the key
    assert not apply(step("strip_markup"), step("exact_dedup"), source="changed")[0].cache_hit


def test_stateful_steps_start_empty_in_every_chain(step):
    dedup = step("exact_dedup")
    assert CleaningChain([dedup]).clean_batch(["a", "a"]) == ["a"]
    assert CleaningChain([dedup]).clean_batch(["a"]) == ["a"]


def test_a_chain_that_removes_everything_names_the_step_that_removed_the_last_documents(step, tmp_path):
    chain = CleaningChain([step("strip_markup"), step("length_filter", min_words=3), step("length_filter",
                                                                                          min_chars=1000)])
    with pytest.raises(DataError) as info:
        chain.apply(dataset(DOCS), source_fingerprint="s", cache_dir=tmp_path)
    message = str(info.value)
    assert "cleaning removed every document: step cleaning.2 (length_filter) removed the last 4 of the 5" in message
    assert "Loosen the options of cleaning.2" in message


class Shouting:
    """A third-party cleaner that follows the protocol without the built-in base class (and has no name)."""

    stateful = False

    def __call__(self, texts):
        return [text.upper() for text in texts]

    def fingerprint(self):
        return "shouting-1"


class Broken(Shouting):
    def __call__(self, texts):
        return texts[:-1]


def test_any_cleaner_that_follows_the_protocol_runs_and_a_wrong_batch_length_is_a_data_error(step):
    chain = CleaningChain([Shouting()])
    assert chain.clean_batch(["a", "b"]) == ["A", "B"] and chain.report()[0]["step"] == "Shouting"
    with pytest.raises(DataError, match=r"cleaning step 0 \(Broken\) returned 1 texts for a batch of 2"):
        CleaningChain([Broken()]).clean_batch(["a", "b"])


def test_an_unknown_step_name_lists_the_cleaners(catalog):
    raw = compose(None, [])
    raw["cleaning"] = ["nfkc", "dedupe"]
    with pytest.raises(ConfigError, match=r"cleaning\.1\.name: .*exact_dedup") as info:
        validate(raw, catalog)
    assert "minhash_dedup" in str(info.value)


def test_an_empty_chain_returns_the_documents_as_they_are(tmp_path):
    docs = dataset(["a", "b"])
    chain = CleaningChain([])
    assert chain.apply(docs, source_fingerprint="s", cache_dir=tmp_path) is docs and chain.report() == []


def test_the_cleaning_package_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; import hookformer.core.cleaning, hookformer.plugins.cleaners.minhash_dedup, "
            "hookformer.plugins.cleaners.repetition_filter; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
