"""Objective ``extractive_qa``: start/end span head, cross-entropy on both, and at evaluation the best valid span over
all windows of a question turned back into the context's text through the tokenizer's offsets (with the no-answer
decision by score threshold)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext
from hookformer.plugins.objectives.extractive_qa import ExtractiveQA, ExtractiveQAOptions, best_spans, build, windows
from test_squad import QUESTIONS, prepared, squad_json, write

NEG = -1e4


@pytest.fixture
def v2_file(tmp_path):
    return write(tmp_path / "v2.json", squad_json())


def qa_data(path, **options) -> dict:
    return {"name": "squad", "train_file": str(path), "validation_file": str(path), **options}


def test_extractive_qa_passes_the_objective_kit(objective_conformance, v2_file):
    objective_conformance("extractive_qa", data=qa_data(v2_file, max_seq_len=48, doc_stride=16),
                          model={"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.0,
                                 "causal": False, "type_vocab_size": 2})


def test_question_rows_in_micro_batches_give_the_gradient_of_the_whole_batch(hookformer_tiny_config, v2_file,
                                                                              tmp_path):
    """Validation rows hold every window of a question; the kit slices a transformed batch by its rows, so this
    checks gradient accumulation over question rows directly, each micro-batch split into its own windows."""
    from hookformer.core.assemble import Assembly
    from hookformer.core.loop import accumulate_gradients
    from hookformer.core.sampler import table_rows

    torch.manual_seed(0)
    config = hookformer_tiny_config(data=qa_data(v2_file, max_seq_len=48, doc_stride=16, segment_ids=False),
                                    objective="extractive_qa")
    assembly = Assembly(config, tmp_path / "run")
    validation = assembly.prepare_data()["validation"]  # one question per row, all its windows
    batch = table_rows(validation, [0, 1, 2, 3, 4, 0, 1, 2])
    assert batch["start_positions"].shape[1] > 1
    model, qa = assembly.model(), assembly.objective()
    model.eval()
    grads = []
    for micro in ([table_rows(batch, slice(i, i + 2)) for i in range(0, 8, 2)], [batch]):
        model.zero_grad(set_to_none=True)
        _, items, _ = accumulate_gradients(model, qa, micro)
        grads.append((items, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (split_items, split), (whole_items, whole) = grads
    assert split_items == whole_items == int((batch["start_positions"] != -100).sum())
    assert whole.keys() == split.keys() and any(name.startswith("heads.qa_span") for name in whole)
    for name, grad in whole.items():
        torch.testing.assert_close(split[name], grad, atol=1e-5, rtol=1e-4)


def test_windows_splits_rows_into_one_window_each_and_drops_unused_slots():
    batch = {"input_ids": torch.arange(2 * 3 * 4).reshape(2, 12),
             "attention_mask": torch.tensor([[1] * 8 + [0] * 4, [1] * 4 + [0] * 8]),
             "offsets": torch.zeros(2, 12, 2, dtype=torch.long),
             "start_positions": torch.tensor([[1, 0, -100], [2, -100, -100]]),
             "end_positions": torch.tensor([[1, 0, -100], [3, -100, -100]]),
             "example_index": torch.tensor([7, 9])}
    split = windows(batch)
    assert split["input_ids"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [12, 13, 14, 15]]
    assert split["example_index"].tolist() == [7, 7, 9] and split["start_positions"].tolist() == [1, 0, 2]
    assert split["offsets"].shape == (3, 4, 2)


def test_best_spans_takes_the_highest_sum_over_context_spans_not_ending_before_they_start_nor_too_long():
    start = torch.tensor([[9.0, 0.0, 1.0, 5.0, 0.0, 0.0]])
    end = torch.tensor([[9.0, 4.0, 0.0, 0.0, 0.0, 3.0]])
    context = torch.tensor([[False, True, True, True, True, True]])
    # Position 0 is not context; end 1 lies before start 3; so 3..5 (5 + 3) beats 1..1 (0 + 4) and 2..5 (1 + 3).
    best, first, last = best_spans(start, end, context, max_tokens=3)
    assert (float(best), int(first), int(last)) == (8.0, 3, 5)
    best, first, last = best_spans(start, end, context, max_tokens=2)  # 3..5 is 3 tokens: too long now
    assert (float(best), int(first), int(last)) == (5.0, 3, 3)
    best, _, _ = best_spans(start, end, torch.zeros_like(context), max_tokens=3)
    assert best.item() == -math.inf


def scores_for(batch: dict, spans: dict[int, tuple[int, int, float]], null: float = 0.0):
    """Start and end scores over the windows of ``batch``: ``spans`` maps a window to (first, last, score/2 each);
    every other position scores NEG, except position 0 (no answer) with ``null``/2 each."""
    start = torch.full(batch["input_ids"].shape, NEG)
    start[:, 0] = null / 2
    end = start.clone()
    for window, (first, last, score) in spans.items():
        start[window, first], end[window, last] = score / 2, score / 2
    return start, end


def answer_window(source, batch, qid: str) -> tuple[int, int, int]:
    """(window, first, last) of the labeled answer of question ``qid`` in the split-apart ``batch``."""
    for window, index in enumerate(batch["example_index"].tolist()):
        if source.qa_examples[index].id == qid and int(batch["start_positions"][window]) > 0:
            return window, int(batch["start_positions"][window]), int(batch["end_positions"][window])
    raise AssertionError(f"no window of {qid} holds its answer")


@pytest.fixture
def validation(v2_file):
    source, tables = prepared(v2_file, max_seq_len=64, doc_stride=24, max_windows=20)
    return source, windows(tables["validation"])


def objective(source, allow_no_answer=True, threshold=0.0) -> ExtractiveQA:
    return ExtractiveQA(source.qa_examples, 30, allow_no_answer, threshold)


def test_the_best_span_across_a_questions_windows_becomes_the_contexts_text(validation):
    source, batch = validation
    spans = {}
    for qid in ("sb-winner", "sb-loser", "py-year", "py-chinese"):
        window, first, last = answer_window(source, batch, qid)
        spans[window] = (first, last, 10.0)
    # A worse span in another window of the same question: the question takes the best over its windows.
    winner_window = answer_window(source, batch, "sb-winner")[0]
    other = next(w for w, i in enumerate(batch["example_index"].tolist())
                 if w != winner_window and i == int(batch["example_index"][winner_window]))
    spans[other] = (40, 42, 5.0)
    predictions, references = objective(source).answer(*scores_for(batch, spans, null=-10.0), batch)
    assert predictions == ["Denver Broncos", "Carolina Panthers", "1991", "蟒蛇", predictions[4]]
    assert references == [[answer] if answer else [""] for _, _, _, answer in QUESTIONS]


def test_scores_that_put_the_labels_first_answer_every_question_exactly(validation):
    """The labels as scores (each window's labeled positions highest): extraction gives back every answer, and
    nothing for the unanswerable question, over windows that split the contexts."""
    from hookformer.plugins.metrics.squad import question_scores

    source, batch = validation
    rows = torch.arange(len(batch["input_ids"]))
    start = torch.zeros(batch["input_ids"].shape)
    end = start.clone()
    start[rows, batch["start_positions"]] = end[rows, batch["end_positions"]] = 10.0
    predictions, references = objective(source).answer(start, end, batch)
    assert all(question_scores(p, r) == (1, 1.0) for p, r in zip(predictions, references))
    assert predictions == [answer or "" for _, _, _, answer in QUESTIONS]


def test_no_answer_wins_when_its_score_beats_the_best_span_by_more_than_the_threshold(validation):
    source, batch = validation
    window, first, last = answer_window(source, batch, "py-year")
    start, end = scores_for(batch, {window: (first, last, 4.0)}, null=6.0)
    year = [qid for qid, _, _, _ in QUESTIONS].index("py-year")
    assert objective(source, threshold=0.0).answer(start, end, batch)[0][year] == ""
    assert objective(source, threshold=2.5).answer(start, end, batch)[0][year] == "1991"
    # Without unanswerable questions (SQuAD v1.1), the best span is always the answer.
    assert objective(source, allow_no_answer=False).answer(start, end, batch)[0][year] == "1991"


def test_the_no_answer_score_of_a_question_is_its_lowest_over_its_windows(validation):
    source, batch = validation
    window, first, last = answer_window(source, batch, "sb-winner")
    start, end = scores_for(batch, {window: (first, last, 4.0)}, null=6.0)
    start[window, 0] = end[window, 0] = 1.0  # the window holding the answer scores no-answer at 2
    assert objective(source).answer(start, end, batch)[0][0] == "Denver Broncos"


def test_evaluation_returns_predictions_and_references_and_training_does_not(hookformer_tiny_config, v2_file,
                                                                             tmp_path):
    from hookformer.core.assemble import Assembly
    from hookformer.core.objective import compute

    config = hookformer_tiny_config(data=qa_data(v2_file, max_seq_len=48, doc_stride=16, segment_ids=False),
                                    objective="extractive_qa", metrics=["loss", "squad"])
    assembly = Assembly(config, tmp_path / "run")
    table = assembly.prepare_data()["validation"]
    model, qa = assembly.model(), assembly.objective()
    batch = {name: value[:3] for name, value in table.items()}
    model.eval()
    result = compute(qa, model, batch)
    assert len(result.predictions) == 3 and result.references == [["Denver Broncos"], ["Carolina Panthers"], ["1991"]]
    assert all(p in source_text for p, source_text in zip(result.predictions, [QUESTIONS[i][2] for i in range(3)]))
    assert result.num_items == int((batch["start_positions"] != -100).sum())
    model.train()
    assert compute(qa, model, batch).predictions is None
    assert "qa_span" in dict(model.named_children()).get("heads", {})


def test_without_question_answering_data_the_objective_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs a question-answering data part"):
        build(ExtractiveQAOptions(), BuildContext(run_dir=tmp_path, data=object()))


@pytest.mark.slow
def test_training_on_squad_learns_to_find_the_answers(tmp_path):
    """A few hundred steps on questions whose answer always follows the same words: exact match well above what
    an untrained model gets, written to metrics.jsonl by the run."""
    from hookformer.core.cli import main

    cities = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Oslo", "Athens", "Dublin", "Prague"]
    questions = []
    for i in range(80):  # half the questions ask about the second person: the question must be read
        people = [(f"Ann{i}", cities[i % 10]), (f"Bob{i}", cities[(i + 3) % 10])]
        name, city = people[i % 2]
        context = " ".join(f"{person} lives in {town}." for person, town in people)
        questions.append((f"q{i}", f"Where does {name} live?", context, city))
    path = write(tmp_path / "train.json", squad_json(questions, version="1.1"))
    config = tmp_path / "qa.yaml"
    config.write_text(json.dumps({
        "data": {"name": "squad", "train_file": str(path), "max_seq_len": 64, "doc_stride": 16, "segment_ids": False},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 2, "n_head": 2, "d_model": 64, "causal": False, "dropout": 0.0},
        "objective": {"name": "extractive_qa"}, "metrics": ["loss", "squad"], "hooks": [],
        "optimizer": {"name": "adamw", "lr": 3e-3}, "scheduler": {"name": "constant"},
        "train": {"max_steps": 200, "batch_size": 16, "eval_every": 200, "eval_batches": 4, "sample_tokens": 0,
                  "progress": False}}), encoding="utf-8")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "val_squad_f1" in line][-1]
    assert last["val_squad_exact_match"] >= 0.5, last
