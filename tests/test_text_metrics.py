"""Metrics of generated text (``bleu``, ``chrf``, ``rouge``): their values are sacrebleu's and rouge-score's own on the
same strings, they pass the metric kit, and the evaluation feeds them decoded generations."""

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
