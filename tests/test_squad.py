"""Data part ``squad`` (SQuAD v1.1 / v2.0 JSON -> question + context windows with answer token labels) and metric
``squad`` (exact match and F1 with the official normalization), on small SQuAD files written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext, ObjectiveResult
from hookformer.plugins.data.squad import SquadOptions, build, window_starts
from hookformer.plugins.metrics.squad import SquadMetric, normalize_answer, question_scores
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.testing import check_metric

SUPER_BOWL = ("Super Bowl 50 was an American football game to determine the champion of the National Football League "
              "(NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos defeated the "
              "National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third Super Bowl "
              "title.")
PYTHON = "Python was created by Guido van Rossum and first released in 1991. 中文名称是蟒蛇。 😀 It values readability."
QUESTIONS = [  # (id, question, context, answer or None for an unanswerable question)
    ("sb-winner", "Which NFL team won Super Bowl 50?", SUPER_BOWL, "Denver Broncos"),
    ("sb-loser", "Who lost Super Bowl 50?", SUPER_BOWL, "Carolina Panthers"),
    ("py-year", "When was Python first released?", PYTHON, "1991"),
    ("py-chinese", "What is its Chinese name?", PYTHON, "蟒蛇"),
    ("py-java", "Who created Java?", PYTHON, None),
]


def squad_json(questions=QUESTIONS, version: str = "v2.0") -> dict:
    """A SQuAD-format document: one article per context, answers at their first occurrence."""
    articles: dict[str, dict] = {}
    for qid, question, context, answer in questions:
        if version == "1.1" and answer is None:
            continue
        article = articles.setdefault(context, {"title": context[:10], "paragraphs": [{"context": context, "qas": []}]})
        qa = {"id": qid, "question": question,
              "answers": [] if answer is None else [{"text": answer, "answer_start": context.find(answer)}]}
        if version == "v2.0":
            qa["is_impossible"] = answer is None
        article["paragraphs"][0]["qas"].append(qa)
    return {"version": version, "data": list(articles.values())}


def write(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def v2_file(tmp_path) -> Path:
    return write(tmp_path / "v2.json", squad_json())


def prepared(path: Path, tokenizer=None, **options):
    source = build(SquadOptions(train_file=str(path), validation_file=str(path), **options),
                   BuildContext(run_dir=path.parent / "run"))
    return source, source.prepare(tokenizer or ByteTokenizer())


def labeled_text(source, table, row: int, window: int = 0) -> str | None:
    """The context text between the start and end labels of a window of a row; None for the no-answer label."""
    slots = table["start_positions"].shape[1]
    length = table["input_ids"].shape[1] // slots
    start, end = int(table["start_positions"][row, window]), int(table["end_positions"][row, window])
    if start == 0:
        return None
    offsets = table["offsets"][row, window * length:(window + 1) * length]
    context = source.qa_examples[int(table["example_index"][row])].context
    return context[int(offsets[start, 0]):int(offsets[end, 1])]


# -- data ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokenizer", ["byte", "sentencepiece"])
def test_every_window_holding_the_answer_is_labeled_with_the_tokens_that_spell_it(v2_file, tokenizer, tmp_path):
    if tokenizer == "byte":
        tok = ByteTokenizer()
    else:
        from hookformer.plugins.tokenizers.sentencepiece import SentencePieceOptions
        from hookformer.plugins.tokenizers.sentencepiece import build as build_sentencepiece

        from pydoc_data.topics import topics

        class Corpus:  # Python's documentation: the Chinese characters are rare, spelled in byte pieces
            def texts(self):
                return iter([SUPER_BOWL, PYTHON] + [topics[name] for name in sorted(topics)[:40]])

        tok = build_sentencepiece(SentencePieceOptions(vocab_size=600, character_coverage=0.98),
                                  BuildContext(run_dir=tmp_path / "sp", data=Corpus()))
    source, tables = prepared(v2_file, tok, max_seq_len=64, doc_stride=24, max_windows=20)
    train = tables["train"]
    answered = {}
    for row in range(len(train["input_ids"])):
        example = source.qa_examples[int(train["example_index"][row])]
        text = labeled_text(source, train, row)
        if text is not None:
            assert text == example.answers[0][1]
            answered[example.id] = answered.get(example.id, 0) + 1
    # Every answerable question is labeled in at least one window; the unanswerable one in none.
    assert set(answered) == {"sb-winner", "sb-loser", "py-year", "py-chinese"}


def test_a_long_context_is_cut_into_windows_that_start_doc_stride_tokens_apart(v2_file):
    source, tables = prepared(v2_file, max_seq_len=80, doc_stride=20, max_windows=20, segment_ids=False)
    train = tables["train"]
    rows = [r for r in range(len(train["input_ids"])) if source.qa_examples[int(train["example_index"][r])].id ==
            "sb-winner"]
    question = len("Which NFL team won Super Bowl 50?".encode())
    room = 80 - question - 3
    context_bytes = len(SUPER_BOWL.encode())
    starts = window_starts(context_bytes, room, 20)
    assert len(rows) == len(starts) > 3 and starts[1] == 20 and starts[-1] + room >= context_bytes
    for row, start in zip(rows, starts):
        ids = train["input_ids"][row]
        first_context = question + 2
        assert int(ids[0]) == ByteTokenizer.special.cls and int(ids[first_context - 1]) == ByteTokenizer.special.sep
        expected = list(SUPER_BOWL.encode())[start:start + room]
        assert ids[first_context:first_context + len(expected)].tolist() == expected
        assert int(ids[first_context + len(expected)]) == ByteTokenizer.special.sep
    assert "token_type_ids" not in train


def test_windows_overlap_by_the_room_minus_the_stride_and_answers_outside_a_window_get_the_no_answer_label(v2_file):
    source, tables = prepared(v2_file, max_seq_len=64, doc_stride=20, max_windows=20)
    train = tables["train"]
    for row in range(len(train["input_ids"])):
        example = source.qa_examples[int(train["example_index"][row])]
        if labeled_text(source, train, row) is None:
            assert int(train["start_positions"][row, 0]) == int(train["end_positions"][row, 0]) == 0
        if not example.answerable:
            assert labeled_text(source, train, row) is None
    assert source.report["windows"]["train"] == len(train["input_ids"])
    assert source.report["unanswerable"] == {"train": 1, "validation": 1}


def test_validation_rows_hold_every_window_of_one_question_with_unused_slots_unlabeled(v2_file):
    source, tables = prepared(v2_file, max_seq_len=64, doc_stride=20, max_windows=20)
    validation, train = tables["validation"], tables["train"]
    assert len(validation["input_ids"]) == len(QUESTIONS)
    slots = validation["start_positions"].shape[1]
    windows_of = torch.bincount(train["example_index"]).tolist()
    assert slots == max(windows_of) and validation["input_ids"].shape[1] == slots * 64
    for row, index in enumerate(validation["example_index"].tolist()):
        used = windows_of[index - len(QUESTIONS)]  # the same file on both sides: as many windows as in training
        assert (validation["start_positions"][row, used:] == -100).all()
        assert (validation["start_positions"][row, :used] >= 0).all()
        assert int(validation["attention_mask"][row, used * 64:].sum()) == 0
    # The validation questions follow the training ones in qa_examples.
    assert validation["example_index"].tolist() == list(range(len(QUESTIONS), 2 * len(QUESTIONS)))


def test_max_windows_cuts_long_contexts_and_the_report_counts_them(v2_file):
    source, tables = prepared(v2_file, max_seq_len=64, doc_stride=20, max_windows=2)
    assert tables["validation"]["start_positions"].shape[1] == 2
    assert source.report["contexts_cut"]["validation"] == 5
    # "Carolina Panthers" lies beyond the first two windows of its context.
    assert source.report["answers_outside_windows"]["validation"] >= 1


def test_long_questions_are_cut_to_max_question_tokens(v2_file):
    source, tables = prepared(v2_file, max_seq_len=64, doc_stride=20, max_question_tokens=10)
    ids = tables["train"]["input_ids"][0]
    assert int(ids[11]) == ByteTokenizer.special.sep and source.report["questions_cut"]["train"] == 5


def test_squad_v1_without_is_impossible_reads_every_question_as_answerable(tmp_path):
    source, _ = prepared(write(tmp_path / "v1.json", squad_json(version="1.1")))
    assert source.report["version"] == "1.1" and not source.has_unanswerable
    assert source.report["questions"] == {"train": 4, "validation": 4}


def test_an_answer_start_that_does_not_match_the_context_names_the_file_question_and_mismatch(tmp_path):
    document = squad_json()
    document["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] += 2
    path = write(tmp_path / "shifted.json", document)
    with pytest.raises(ConfigError) as error:
        prepared(path)
    message = str(error.value)
    assert str(path) in message and "question sb-loser" in message and "'Carolina Panthers'" in message
    assert "points at 'rolina Panthers 2'" in message and f"occurs at {SUPER_BOWL.find('Carolina')}" in message


def test_the_cli_reports_a_mismatched_answer_as_a_config_error_with_exit_code_2(tmp_path, capsys):
    from hookformer.core.cli import main

    document = squad_json()
    document["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "1992"
    path = write(tmp_path / "wrong.json", document)
    config = tmp_path / "qa.yaml"
    config.write_text(f"data: {{name: squad, train_file: '{path}'}}\ntokenizer: {{name: byte}}\n", encoding="utf-8")
    code = main(["data", str(config), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "question py-year" in capsys.readouterr().err


@pytest.mark.parametrize("content, expected", [
    ("{not json", "line 1: not valid JSON"),
    ('{"version": "v2.0"}', 'needs a "data" list'),
    ('{"data": [{"paragraphs": [{"qas": []}]}]}', 'data[0].paragraphs[0] has no "context"'),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "q", "answers": []}]}]}]}',
     "question x has no answer"),
])
def test_malformed_squad_files_are_config_errors_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.json") as error:
        prepared(path)
    assert expected in str(error.value)


def test_a_missing_file_is_a_config_error_naming_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"data.train_file: .*missing.json not found"):
        prepared(tmp_path / "missing.json")


def test_without_a_validation_file_whole_articles_are_held_out(v2_file):
    source = build(SquadOptions(train_file=str(v2_file), val_fraction=0.4), BuildContext(run_dir=v2_file.parent))
    contexts = {split: {e.context for e in examples} for split, examples in source.splits.items()}
    assert len(contexts["validation"]) == 1 and not contexts["train"] & contexts["validation"]


def test_a_tokenizer_without_offsets_is_refused(v2_file):
    class NoOffsets:
        special = ByteTokenizer.special

    source = build(SquadOptions(train_file=str(v2_file), validation_file=str(v2_file)), BuildContext(run_dir=Path(".")))
    with pytest.raises(ConfigError, match="has no encode_with_offsets"):
        source.prepare(NoOffsets())


def test_squad_passes_the_data_kit(data_conformance, v2_file):
    data_conformance("squad", {"train_file": str(v2_file), "max_seq_len": 48, "doc_stride": 16})


# -- metric ----------------------------------------------------------------------------------------------------------

# (prediction, references, exact match, F1), worked out by hand with the official script's rules.
OFFICIAL_CASES = [
    ("Denver Broncos", ["Denver Broncos", "The Denver Broncos"], 1, 1.0),
    ("the Denver Broncos!", ["denver broncos"], 1, 1.0),  # case, articles, punctuation
    ("Broncos", ["Denver Broncos"], 0, 2 / 3),  # precision 1, recall 1/2
    ("the Denver Broncos team", ["Denver Broncos", "Broncos team"], 0, 0.8),  # precision 2/3, recall 1
    ("Broncos", ["Denver Broncos", "Broncos"], 1, 1.0),  # the best reference counts
    ("Paris Paris", ["Paris"], 0, 2 / 3),  # a repeated word counts once against one occurrence
    ("1,000 people", ["1000 people"], 1, 1.0),  # the comma goes
    ("  a   big\tdog ", ["big dog"], 1, 1.0),
    ("Carolina", ["Denver Broncos"], 0, 0.0),
    ("", [""], 1, 1.0),  # unanswerable, answered nothing
    ("Denver", [""], 0, 0.0),  # unanswerable, answered something
    ("", ["Denver Broncos"], 0, 0.0),
    ("the", ["a"], 1, 1.0),  # the reference normalizes to nothing: scored as unanswerable, "the" normalizes to ""
]


@pytest.mark.parametrize("prediction, references, exact, f1", OFFICIAL_CASES)
def test_question_scores_follow_the_official_squad_evaluation(prediction, references, exact, f1):
    got_exact, got_f1 = question_scores(prediction, references)
    assert got_exact == exact and got_f1 == pytest.approx(f1)


def test_normalization_lowercases_and_drops_punctuation_articles_and_extra_whitespace():
    assert normalize_answer("The  Quick, (brown) fox's\tA-team!") == "quick brown foxs ateam"
    assert normalize_answer("anthem theatre") == "anthem theatre"  # articles only as whole words


def results_of(cases) -> list[ObjectiveResult]:
    return [ObjectiveResult(torch.tensor(0.0), len(batch), predictions=[c[0] for c in batch],
                            references=[c[1] for c in batch]) for batch in cases]


def test_squad_metric_passes_the_metric_kit_with_the_mean_over_questions(metric_conformance):
    batches = [OFFICIAL_CASES[:5], OFFICIAL_CASES[5:9], OFFICIAL_CASES[9:]]
    expected = {"squad_exact_match": sum(c[2] for c in OFFICIAL_CASES) / len(OFFICIAL_CASES),
                "squad_f1": sum(c[3] for c in OFFICIAL_CASES) / len(OFFICIAL_CASES)}
    # The kit's one-batch check concatenates logits and targets only: these results have texts instead.
    metric_conformance("squad", results_of(batches), expected, order_invariant=False)
    check_metric(SquadMetric(), results_of(batches[::-1]), expected, order_invariant=False)


def test_squad_metric_ignores_results_without_texts():
    metric = SquadMetric()
    metric.reset()
    metric.update(ObjectiveResult(torch.tensor(1.0), 3))
    metric.update(results_of([OFFICIAL_CASES[:2]])[0])
    assert metric.compute() == {"squad_exact_match": 1.0, "squad_f1": 1.0}
