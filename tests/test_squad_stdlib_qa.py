"""Data part ``stdlib_qa`` (the question-answering demo built from the standard library's docstrings) and its recipe
``stdlib_qa``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hookformer.core.config import compose, recipes, validate
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.stdlib_qa import StdlibQAOptions, baselines, build, contexts_of, return_answer
from hookformer.registry.catalog import Catalog

RECORDS = [
    {"name": "shelf.Shelf.size", "text": "Return the number of books, counted once.\n\nDetails that are left out."},
    {"name": "shelf.Shelf.clear", "text": "Remove every book."},
    {"name": "shelf.Shelf.title", "text": "The title.  Returns   the title\n    of the shelf. Fast."},
    {"name": "shelf.Lamp.on", "text": "Switch the lamp on; no Return sentence here."},
    {"name": "shelf", "text": "Shelves and lamps."},
]


def test_each_member_of_a_context_is_asked_what_it_returns_with_the_span_after_return_as_answer():
    [(module, questions)] = contexts_of(RECORDS, per_context=4)  # Lamp has no "Return" sentence: no context
    assert module == "shelf"
    context = questions[0].context
    assert context == ("size: Return the number of books, counted once.\nclear: Remove every book.\n"
                       "title: The title. Returns the title of the shelf. Fast.")
    assert [q.question for q in questions] == ["What does size return?", "What does clear return?",
                                               "What does title return?"]
    answers = [[(start, text) for start, text in q.answers] for q in questions]
    assert answers == [[(13, "the number of books, counted once")], [], [(context.find("the title of"),
                                                                         "the title of the shelf")]]
    assert all(context[start:start + len(text)] == text for q in questions for start, text in q.answers)


def test_return_sentences_start_a_summary_or_follow_a_sentence_end():
    assert return_answer("Return x.").group("answer") == "x"
    assert return_answer("Helper. Returns y if z.").group("answer") == "y if z"
    assert return_answer("no Return sentence here") is None and return_answer("Returned values.") is None


def test_contexts_hold_at_most_entries_per_context_summaries():
    contexts = contexts_of(RECORDS, per_context=2)
    assert [[q.question for q in questions] for _, questions in contexts] == [
        ["What does size return?", "What does clear return?"], ["What does title return?"]]


def test_the_rule_baselines_score_as_the_official_metric_would():
    [(_, questions)] = contexts_of(RECORDS, per_context=4)
    figures = baselines(questions)
    # no_answer: right on "clear" only. first_return: "the number of books, counted once" everywhere: right on
    # "size", wrong on "clear" (unanswerable), and on "title" F1 of {number, of, books, counted, once} against
    # {title, of, shelf}: one shared word, precision 1/5, recall 1/3, F1 1/4.
    assert figures["no_answer"] == {"exact_match": round(1 / 3, 4), "f1": round(1 / 3, 4)}
    assert figures["first_return"] == {"exact_match": round(1 / 3, 4), "f1": round((1 + 0 + 0.25) / 3, 4)}


def test_the_recipe_is_shipped_validates_and_leaves_the_model_shapes_open():
    assert "stdlib_qa" in recipes()
    raw = compose(Path("stdlib_qa"), [])
    validate(raw, Catalog.load())
    assert raw["data"]["name"] == "stdlib_qa" and raw["objective"]["name"] == "extractive_qa"
    assert [m if isinstance(m, str) else m["name"] for m in raw["metrics"]] == ["loss", "squad"]
    recipe = yaml.safe_load(Path(__file__).parent.parent.joinpath("plugins", "stdlib_qa.yaml").read_text())
    assert "model" not in recipe and "tokenizer" not in recipe  # they come from the default recipe or init_from


@pytest.mark.slow
def test_the_demo_splits_the_standard_library_by_module_with_answerable_and_unanswerable_questions(tmp_path):
    source = build(StdlibQAOptions(), BuildContext(run_dir=tmp_path, seed=0))
    modules = {split: {q.id.split(".")[0] for q in questions} for split, questions in source.splits.items()}
    assert not modules["train"] & modules["validation"]
    counts = source.report["questions"]
    assert counts["train"] > 1000 and 0.1 < counts["validation"] / (counts["train"] + counts["validation"]) < 0.25
    assert 0.2 < source.report["unanswerable"]["validation"] / counts["validation"] < 0.6
    assert all(q.context[s:s + len(t)] == t for q in source.qa_examples for s, t in q.answers)
    again = build(StdlibQAOptions(), BuildContext(run_dir=tmp_path, seed=0))
    assert again.splits == source.splits
    other = build(StdlibQAOptions(), BuildContext(run_dir=tmp_path, seed=1))
    assert other.report["validation_modules"] != source.report["validation_modules"]


@pytest.mark.slow
def test_stdlib_qa_passes_the_data_kit(data_conformance):
    data_conformance("stdlib_qa", {"max_seq_len": 256, "doc_stride": 128})
