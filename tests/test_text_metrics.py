"""Metrics of generated text (``bleu``, ``chrf``, ``rouge``): their values are sacrebleu's and rouge-score's own on the
same strings, they pass the metric kit, and the evaluation feeds them decoded generations."""

import json
import math

import pytest
import sacrebleu
import torch
from rouge_score.rouge_scorer import RougeScorer

from hookformer.core.parts import ObjectiveResult
from hookformer.plugins.metrics import bleu, chrf, rouge
from hookformer.testing import check_metric

PREDICTIONS = ["Return the sum of two numbers.", "Open the file and read it", "the cat sat on the mat",
               "Split a path into head and tail.", "Parse the header lines of a message"]
REFERENCES = [["Return the sum of a and b."], ["Read the whole file."], ["The cat sat on the mat."],
              ["Split a pathname into a (head, tail) tuple."], ["Parse a message's header lines and return them."]]


def results(predictions=PREDICTIONS, references=REFERENCES, size=2) -> list[ObjectiveResult]:
    """The texts in batches of ``size``, as the evaluation hands them over."""
    return [ObjectiveResult(torch.zeros(()), len(predictions[i:i + size]), predictions=predictions[i:i + size],
                            references=references[i:i + size]) for i in range(0, len(predictions), size)]


def test_bleu_equals_sacrebleu_corpus_bleu_on_the_same_strings():
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [[refs[0] for refs in REFERENCES]]).score
    check_metric(bleu.build(bleu.BLEUOptions(), None), results(), {"bleu": expected})
    assert 0 < expected < 100


def test_bleu_with_several_references_per_text_equals_sacrebleu_with_reference_streams():
    references = [[refs[0], refs[0].lower()] for refs in REFERENCES]
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [[r[0] for r in references], [r[1] for r in references]]).score
    check_metric(bleu.build(bleu.BLEUOptions(), None), results(references=references), {"bleu": expected})


def test_bleu_options_are_sacrebleus_tokenize_and_lowercase():
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [[refs[0] for refs in REFERENCES]], tokenize="char",
                                     lowercase=True).score
    check_metric(bleu.build(bleu.BLEUOptions(tokenize="char", lowercase=True), None), results(), {"bleu": expected})


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_and_chrf_plus_plus_equal_sacrebleu_corpus_chrf(word_order):
    expected = sacrebleu.corpus_chrf(PREDICTIONS, [[refs[0] for refs in REFERENCES]], word_order=word_order).score
    check_metric(chrf.build(chrf.CHRFOptions(word_order=word_order), None), results(), {"chrf": expected})


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_is_the_mean_over_texts_of_rouge_scores_f_measures(use_stemmer):
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)
    scores = [scorer.score(refs[0], prediction) for prediction, refs in zip(PREDICTIONS, REFERENCES)]
    expected = {kind: sum(s[kind].fmeasure for s in scores) / len(scores) for kind in ("rouge1", "rouge2", "rougeL")}
    check_metric(rouge.build(rouge.ROUGEOptions(use_stemmer=use_stemmer), None), results(), expected)
    assert 0 < expected["rouge2"] < expected["rouge1"] < 1


def test_rouge_with_several_references_takes_rouge_scores_best_reference():
    references = [[refs[0], prediction] for prediction, refs in zip(PREDICTIONS, REFERENCES)]
    check_metric(rouge.build(rouge.ROUGEOptions(), None), results(references=references),
                 {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})


@pytest.mark.parametrize("module,options", [(bleu, bleu.BLEUOptions()), (chrf, chrf.CHRFOptions()),
                                            (rouge, rouge.ROUGEOptions())])
def test_text_metrics_ask_for_deterministic_generation_and_ignore_results_without_texts(module, options):
    metric = module.build(options.model_copy(update={"max_examples": 7, "num_beams": 3}), None)
    assert metric.max_examples == 7 and metric.generation.num_beams == 3 and metric.generation.greedy
    metric.reset()
    metric.update(ObjectiveResult(torch.zeros(()), 1, logits=torch.zeros(1, 3), targets=torch.zeros(1).long()))
    values = metric.compute()
    assert values and all(math.isnan(value) for value in values.values())


def copy_task(tmp_path, metrics, max_steps=1):
    """A tiny decoder fine-tuned to copy a word (data prompt_response), evaluated with ``metrics``."""
    from hookformer.core.config import compose, validate
    from hookformer.core.loop import Run
    from hookformer.registry.catalog import Catalog

    words = [f"{a}{b}{c}" for a in "abcd" for b in "efgh" for c in "ijkl"]
    (tmp_path / "copy.jsonl").write_text("".join(json.dumps({"prompt": f"copy {w}", "response": w}) + "\n"
                                                 for w in words))
    raw = compose(None, [])
    raw.update(data={"name": "prompt_response", "paths": [str(tmp_path / "copy.jsonl")], "block_size": 16,
                     "val_fraction": 0.2},
               tokenizer={"name": "byte"}, model={"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 32},
               objective={"name": "sft"}, metrics=metrics, hooks=[],
               scheduler={"name": "constant", "warmup_steps": 1},
               train={"max_steps": max_steps, "batch_size": 8, "eval_every": max_steps, "eval_batches": 2,
                      "sample_tokens": 0, "progress": False, "device": "cpu"})
    return Run(validate(raw, Catalog.load()), tmp_path / "run")


def test_evaluation_scores_greedy_generations_of_the_first_max_examples_with_the_libraries_numbers(tmp_path):
    from hookformer.core.evaluate import generated_texts
    from hookformer.core.generate import Decoding

    run = copy_task(tmp_path, ["loss", {"name": "bleu", "max_examples": 5, "max_new_tokens": 6},
                               {"name": "rouge", "max_examples": 5, "max_new_tokens": 6},
                               {"name": "chrf", "max_examples": 100, "max_new_tokens": 4}])
    values = run.evaluate()
    predictions, references = generated_texts(run.model, run.val_table, Decoding(greedy=True, max_new_tokens=6),
                                              run.tokenizer, max_examples=5, batch_size=3)
    assert len(predictions) == 5 and all(len(refs) == 1 and len(refs[0]) == 3 for refs in references)
    # The references are the responses: the labeled tokens without eos.
    assert [refs[0] for refs in references] == [bytes(row[row >= 0][:-1].tolist()).decode()
                                                for row in run.val_table["labels"][:5]]
    assert values["val_bleu"] == sacrebleu.corpus_bleu(predictions, [[r[0] for r in references]]).score
    scorer = RougeScorer(["rougeL"])
    assert values["val_rougeL"] == pytest.approx(
        sum(scorer.score(r[0], p)["rougeL"].fmeasure for p, r in zip(predictions, references)) / 5, abs=1e-12)
    assert "val_chrf" in values and "val_loss" in values
    # chrf's own decoding and max_examples (100, capped by the 16 rows evaluated: eval_batches x batch_size).
    long_predictions, long_references = generated_texts(run.model, run.val_table, Decoding(greedy=True,
                                                        max_new_tokens=4), run.tokenizer, max_examples=16,
                                                        batch_size=8)
    assert values["val_chrf"] == sacrebleu.corpus_chrf(long_predictions, [[r[0] for r in long_references]]).score


@pytest.mark.slow
def test_a_run_writes_val_bleu_and_rouge_to_metrics_jsonl_and_hookformer_evaluate_shows_them(tmp_path):
    import subprocess
    import sys

    run = copy_task(tmp_path, ["loss", {"name": "bleu", "max_examples": 8}, {"name": "rouge", "max_examples": 8}],
                    max_steps=60)
    run.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "val_bleu" in r]
    assert evaluated and {"val_rouge1", "val_rouge2", "val_rougeL"} <= set(evaluated[-1])
    shown = subprocess.run([sys.executable, "-m", "hookformer", "evaluate", str(tmp_path / "run")],
                           capture_output=True, text=True, check=True).stdout
    assert "val_bleu" in shown and "val_rougeL" in shown
