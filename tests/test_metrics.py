"""Classification metrics (f1, exact_match, entity_f1) against established implementations: scikit-learn for
precision / recall / F1, the Python port of CoNLL's conlleval for entity F1, and hand-worked BIO cases.

Every metric is fed several batches (several ``update`` calls) with ignored positions, in both layouts: sequence
classification (logits (B, C), targets (B,)) and token classification (logits (B, T, C), targets (B, T)).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conlleval import evaluate as conlleval
from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext, ObjectiveResult
from hookformer.registry.catalog import Catalog
from sklearn.metrics import precision_recall_fscore_support

IGNORE = -100
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@pytest.fixture(scope="module")
def catalog():
    return Catalog.load()


@pytest.fixture
def build(catalog):
    """``build(name, label_names=None, **options)``: the metric as a run builds it from its config entry."""

    def make(name: str, label_names=None, **options):
        entry = catalog.get("metric", name)
        return entry.build(entry.options_model().model_validate(options),
                           BuildContext(run_dir=Path("."), label_names=label_names))

    return make


def result(logits: torch.Tensor, targets: torch.Tensor) -> ObjectiveResult:
    return ObjectiveResult(torch.tensor(0.0), int((targets != IGNORE).sum()), logits=logits, targets=targets,
                           ignore_index=IGNORE)


def measure(metric, results: list[ObjectiveResult]) -> dict[str, float]:
    for r in results:
        metric.update(r)
    return metric.compute()


def scored_items(results: list[ObjectiveResult]) -> tuple[list[int], list[int]]:
    """(targets, argmax predictions) of every scored position of every batch, in order: what sklearn is given."""
    targets = torch.cat([r.targets.flatten() for r in results]).cpu()
    predictions = torch.cat([r.logits.argmax(-1).flatten() for r in results]).cpu()
    scored = targets != IGNORE
    return targets[scored].tolist(), predictions[scored].tolist()


def classification_batches(layout: str, seed: int, device: str = "cpu") -> list[ObjectiveResult]:
    """Three batches over 7 classes with a quarter of the positions ignored. Targets are classes 0-4 and the
    predictions lean towards them; class 4 is never predicted, class 5 is predicted but never a target, class 6 is
    neither (so the choice of classes averaged over shows)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for batch_size in (5, 8, 3):
        shape = (batch_size,) if layout == "sequence" else (batch_size, 6)
        targets = torch.randint(0, 5, shape, generator=g)
        logits = torch.randn(*shape, 7, generator=g) + 1.5 * torch.nn.functional.one_hot(targets, 7)
        logits[..., 4] = logits[..., 6] = -1e4
        targets[torch.rand(shape, generator=g) < 0.25] = IGNORE
        batches.append(result(logits.to(device), targets.to(device)))
    return batches


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["sequence", "token"])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_f1_equals_sklearn_over_several_batches_with_ignored_positions(build, average, layout, device):
    for seed in range(3):
        batches = classification_batches(layout, seed, device)
        values = measure(build("f1", average=average), batches)
        # labels=None: sklearn averages over the classes present in targets or predictions, as the metric does.
        precision, recall, f1, _ = precision_recall_fscore_support(*scored_items(batches), average=average,
                                                                   zero_division=0)
        suffix = "" if average == "macro" else f"_{average}"
        assert values == pytest.approx({f"f1{suffix}": f1, f"precision{suffix}": precision,
                                        f"recall{suffix}": recall}, abs=1e-12)


def test_f1_macro_leaves_out_classes_neither_targeted_nor_predicted(build):
    batches = classification_batches("token", seed=0)
    wider = [result(torch.cat([r.logits, torch.full((*r.logits.shape[:-1], 5), -1e4)], dim=-1), r.targets)
             for r in batches]
    narrow, wide = measure(build("f1"), batches), measure(build("f1"), wider)
    assert narrow == wide
    # Averaging over all 7 classes instead would count class 6 (never seen) as F1 0 and lower the value.
    _, _, all_classes, _ = precision_recall_fscore_support(*scored_items(batches), labels=list(range(7)),
                                                           average="macro", zero_division=0)
    assert narrow["f1"] > all_classes


@pytest.mark.parametrize("layout", ["sequence", "token"])
def test_f1_micro_equals_accuracy_for_single_label_classes(build, layout):
    batches = classification_batches(layout, seed=1)
    accuracy = measure(build("accuracy"), batches)["accuracy"]
    assert measure(build("f1", average="micro"), batches) == pytest.approx(
        {"f1_micro": accuracy, "precision_micro": accuracy, "recall_micro": accuracy}, abs=1e-12)


@pytest.mark.parametrize("name", ["f1", "exact_match"])
def test_reset_starts_the_counts_over(build, name):
    first, second = classification_batches("token", seed=2), classification_batches("token", seed=3)
    metric = build(name)
    measure(metric, first)
    metric.reset()
    assert measure(metric, second) == measure(build(name), second)


@pytest.mark.parametrize("name, keys", [("f1", ["f1", "precision", "recall"]), ("exact_match", ["exact_match"]),
                                        ("entity_f1", ["entity_f1", "entity_precision", "entity_recall"])])
def test_a_metric_that_scored_nothing_reports_zeros(build, name, keys):
    everything_ignored = result(torch.randn(2, 3, len(BIO)), torch.full((2, 3), IGNORE))
    assert measure(build(name, label_names=BIO), [everything_ignored]) == {key: 0.0 for key in keys}


def test_exact_match_equals_accuracy_for_sequence_classification(build):
    batches = classification_batches("sequence", seed=4)
    assert measure(build("exact_match"), batches) == {"exact_match": measure(build("accuracy"), batches)["accuracy"]}


def test_exact_match_counts_rows_whose_scored_positions_are_all_right(build):
    targets = torch.tensor([[1, 2, IGNORE, 0],  # right at every scored position, wrong at the ignored one: exact
                            [1, 2, 0, IGNORE],  # one scored position wrong: not exact
                            [IGNORE, IGNORE, IGNORE, IGNORE]])  # nothing scored: not counted
    predictions = torch.tensor([[1, 2, 1, 0],
                                [1, 2, 2, 0],
                                [0, 0, 0, 0]])
    second = result(torch.nn.functional.one_hot(torch.tensor([[0, 1]]), 3).float(), torch.tensor([[0, 1]]))
    values = measure(build("exact_match"), [result(torch.nn.functional.one_hot(predictions, 3).float(), targets),
                                            second])
    assert values == {"exact_match": 2 / 3}  # rows 1 and 4 of the 3 counted


def tagged(gold_rows: list[str], predicted_rows: list[str]) -> ObjectiveResult:
    """A token-classification result from BIO tag strings over ``BIO``; ``_`` in a gold row is an ignored position
    (the prediction there is whatever the predicted row says)."""
    targets = torch.tensor([[IGNORE if tag == "_" else BIO.index(tag) for tag in row.split()] for row in gold_rows])
    predictions = torch.tensor([[BIO.index(tag) for tag in row.split()] for row in predicted_rows])
    return result(torch.nn.functional.one_hot(predictions, len(BIO)).float(), targets)


# (gold rows, predicted rows, expected precision, recall, F1), each derived by hand with conlleval's chunking:
# an entity starts at B-X, at I-X after O / another type / the sequence start, and runs over the following I-X.
ENTITY_CASES = {
    # gold: I-PER after O begins an entity -> PER[1,2]; predicted: PER[1,2]. 1 correct of 1 predicted, 1 gold.
    "a stray I- begins an entity": (["O I-PER I-PER O"], ["O B-PER I-PER O"], 1.0, 1.0, 1.0),
    # gold: PER[0,1], PER[2,2] (B- after I-PER of the same type splits), LOC[4,4] at the sequence end -> 3 entities;
    # predicted: PER[0,2], LOC[4,4] -> 2. Correct: LOC only. P = 1/2, R = 1/3, F1 = 2*1 / (2 + 3) = 0.4.
    "adjacent entities of one type are two": (["B-PER I-PER B-PER O B-LOC"], ["B-PER I-PER I-PER O B-LOC"],
                                              1 / 2, 1 / 3, 0.4),
    # row 1: LOC[1,2] both, ending at the sequence end: correct. Row 2: gold LOC[1,2], predicted LOC[1,1]: wrong end.
    # 1 correct of 2 predicted, 2 gold: P = R = F1 = 1/2.
    "an entity at the sequence end": (["O B-LOC I-LOC", "O B-LOC I-LOC"], ["O B-LOC I-LOC", "O B-LOC O"],
                                      0.5, 0.5, 0.5),
    # Scored words: gold B-PER I-PER O, predicted B-PER I-PER O (the O inside the entity and the LOC over the padding
    # are at ignored positions): PER[0,1] both. P = R = F1 = 1.
    "ignored positions are skipped": (["B-PER _ I-PER O _ _"], ["B-PER O I-PER O B-LOC I-LOC"], 1.0, 1.0, 1.0),
    # gold: PER[0,0], then I-LOC after PER begins LOC[1,2]; predicted: PER[0,0], LOC[1,2]. 2 of 2 of 2.
    "a change of type ends an entity": (["B-PER I-LOC I-LOC"], ["B-PER B-LOC I-LOC"], 1.0, 1.0, 1.0),
    # gold: row 1 PER[1,1], row 2 PER[0,0] (stray I- at the row start); predicted the same. Were the rows joined,
    # gold would be one entity and the prediction two.
    "entities do not cross rows": (["O B-PER", "I-PER O"], ["O B-PER", "B-PER O"], 1.0, 1.0, 1.0),
    # gold PER[0,1], predicted LOC[0,1]: same span, other type. 0 correct of 1 and 1.
    "the type must match": (["B-PER I-PER"], ["B-LOC I-LOC"], 0.0, 0.0, 0.0),
    # Nothing predicted: precision 0/0 -> 0 (zero_division=0), recall 0/1 = 0, F1 0.
    "nothing predicted": (["B-PER O"], ["O O"], 0.0, 0.0, 0.0),
    # No entity anywhere: every ratio is 0/0 -> 0.
    "no entities at all": (["O O"], ["O O"], 0.0, 0.0, 0.0),
}


@pytest.mark.parametrize("case", ENTITY_CASES)
def test_entity_f1_hand_worked_cases(build, case):
    gold, predicted, precision, recall, f1 = ENTITY_CASES[case]
    assert measure(build("entity_f1", label_names=BIO), [tagged(gold, predicted)]) == pytest.approx(
        {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}, abs=1e-12)


def tag_batches(seed: int, device: str = "cpu") -> list[ObjectiveResult]:
    """Random BIO targets (every malformed sequence included), predictions that copy 60% of them and are random
    elsewhere, a fifth of the positions ignored and some rows entirely ignored; three batches."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for batch_size, length in ((6, 12), (4, 20), (9, 7)):
        targets = torch.randint(0, len(BIO), (batch_size, length), generator=g)
        targets[torch.rand(targets.shape, generator=g) < 0.3] = 0  # more O, so entities end
        noise = torch.randint(0, len(BIO), targets.shape, generator=g)
        predictions = torch.where(torch.rand(targets.shape, generator=g) < 0.6, targets, noise)
        targets[torch.rand(targets.shape, generator=g) < 0.2] = IGNORE
        targets[0] = IGNORE
        logits = torch.nn.functional.one_hot(predictions, len(BIO)).float()
        batches.append(result(logits.to(device), targets.to(device)))
    return batches


def conlleval_lines(results: list[ObjectiveResult]) -> list[str]:
    """conlleval's input: "word gold predicted" per scored position, a boundary line "-X- O O" after each
    sequence (an empty line would do, except as the first line)."""
    lines = []
    for r in results:
        for gold_row, predicted_row in zip(r.targets.tolist(), r.logits.argmax(-1).tolist()):
            lines += [f"w {BIO[g]} {BIO[p]}" for g, p in zip(gold_row, predicted_row) if g != IGNORE] + ["-X- O O"]
    return lines


@pytest.mark.parametrize("device", DEVICES)
def test_entity_f1_equals_conlleval_on_random_tag_sequences(build, device):
    for seed in range(5):
        batches = tag_batches(seed, device)
        overall = conlleval(conlleval_lines(batches))["overall"]["chunks"]
        assert overall["stats"]["pred"] > 0  # the port reports precision 1, not 0, when nothing is predicted
        values = measure(build("entity_f1", label_names=BIO), batches)
        assert values == pytest.approx({"entity_precision": overall["evals"]["prec"],
                                        "entity_recall": overall["evals"]["rec"],
                                        "entity_f1": overall["evals"]["f1"]}, abs=1e-12)


@pytest.mark.parametrize("label_names, fragment", [
    (None, "the data stage gives none"),
    (["O", "PER", "B-LOC", "I-LOC", "I"], "include 'PER' (class 1), 'I' (class 4)"),
    (["O"], "['O'] have no B- or I- tag"),
])
def test_entity_f1_refuses_label_names_that_are_not_bio_at_build_time(build, label_names, fragment):
    with pytest.raises(ConfigError, match="entity_f1 needs") as caught:
        build("entity_f1", label_names=label_names)
    assert fragment in str(caught.value)


def test_entity_f1_refuses_logits_with_another_number_of_classes_than_labels(build):
    metric = build("entity_f1", label_names=BIO)
    with pytest.raises(ConfigError, match="the model scores 3 classes but the data names 7 labels"):
        metric.update(result(torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.long)))


def test_plugins_list_shows_each_metric():
    done = subprocess.run([sys.executable, "-m", "hookformer", "plugins", "list"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    after = done.stdout.split("metric:\n", 1)[1].splitlines()
    section = after[:next((i for i, line in enumerate(after) if not line.startswith("  ")), len(after))]
    listed = {line.split()[0] for line in section}
    assert {"accuracy", "f1", "entity_f1", "exact_match"} <= listed
