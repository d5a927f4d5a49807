"""Sentence-level pretraining: the examples of the data part ``sentences`` (sop, nsp, permutation), the objectives
``sop``, ``nsp`` and ``sentence_order``, and ``combined`` (a weighted sum from one forward pass)."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
from hookformer.core.config import compose, validate
from hookformer.core.errors import ConfigError
from hookformer.core.loop import Run, accumulate_gradients
from hookformer.core.objective import compute
from hookformer.core.parts import BuildContext, ObjectiveResult, model_inputs
from hookformer.core.sampler import table_rows
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.data.sentences import SentencesOptions, split_sentences
from hookformer.plugins.data.sentences import build as build_sentences
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.plugins.objectives.combined import CombinedOptions
from hookformer.plugins.objectives.combined import build as build_combined
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.registry.catalog import Catalog

TOKENIZER = ByteTokenizer()
SPECIAL = TOKENIZER.special
WORDS = "cat dog bird fish tree rock sun moon star cloud rain snow wind fire".split()


@pytest.fixture(scope="module")
def catalog():
    return Catalog.load()


def write_corpus(path: Path, documents: int = 120, seed: int = 0) -> Path:
    """JSONL documents of 1 to 7 sentences; every sentence names its document and position, so any span of bytes
    of it can be traced back."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for d in range(documents):
            sentences = [f"Doc {d} line {k} says " + " ".join(rng.choices(WORDS, k=rng.randint(1, 6))) + "."
                         for k in range(rng.randint(1, 7))]
            f.write(json.dumps({"text": " ".join(sentences)}) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("sentences") / "docs.jsonl")


def sentence_source(corpus: Path, seed: int = 1, **options):
    options = SentencesOptions(source={"name": "text", "paths": [str(corpus)]}, **{"block_size": 64, **options})
    return build_sentences(options, BuildContext(run_dir=".", seed=seed))


def document_streams(source, split: str) -> list[bytes]:
    """Each document of ``split`` as the concatenation of its sentences' tokens (how examples are cut from it)."""
    return [b"".join(s.encode() for s in split_sentences(text)) for text in source.documents(split)]


def segments(row: dict) -> tuple[bytes, bytes]:
    """(A, B) of a ``[cls] A [sep] B [sep]`` example, checking its layout on the way."""
    ids = row["input_ids"][row["attention_mask"].bool()].tolist()
    assert ids[0] == SPECIAL.cls and ids[-1] == SPECIAL.sep and ids.count(SPECIAL.sep) == 2
    first_sep = ids.index(SPECIAL.sep)
    types = row["token_type_ids"][: len(ids)].tolist()
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert not row["attention_mask"][len(ids):].any() and (row["input_ids"][len(ids):] == SPECIAL.pad).all()
    return bytes(ids[1:first_sep]), bytes(ids[first_sep + 1: -1])


def containing(documents: list[bytes], piece: bytes) -> list[int]:
    return [i for i, document in enumerate(documents) if piece in document]


def test_sentences_split_at_end_punctuation_before_a_capital_and_at_blank_lines():
    text = 'It works. "Does it?" Yes! 3 cases. e.g. not here,\nstill one\n\nNew paragraph 你好。再见'
    assert split_sentences(text) == ["It works.", '"Does it?"', "Yes!", "3 cases. e.g. not here,\nstill one",
                                     "New paragraph 你好。", "再见"]


def test_sop_pairs_are_consecutive_spans_of_one_document_swapped_half_the_time(corpus):
    source = sentence_source(corpus, task="sop")
    table = source.prepare(TOKENIZER)["train"]
    documents = document_streams(source, "train")
    labels = table["sop_labels"]
    assert len(labels) > 150 and labels.float().mean() == pytest.approx(0.5, abs=0.08)
    for i in range(len(labels)):
        a, b = segments(table_rows(table, i))
        first, second = (b, a) if labels[i] else (a, b)
        assert a and b and first.endswith(b".") and len(containing(documents, first + second)) == 1
    assert source.report["sentences"]["train"]["label_1_share"] == pytest.approx(float(labels.float().mean()))


def test_nsp_pairs_take_b_from_another_document_half_the_time(corpus):
    source = sentence_source(corpus, task="nsp")
    table = source.prepare(TOKENIZER)["train"]
    documents = document_streams(source, "train")
    labels = table["nsp_labels"]
    assert labels.float().mean() == pytest.approx(0.5, abs=0.08)
    for i in range(len(labels)):
        a, b = segments(table_rows(table, i))
        (home,) = containing(documents, a)
        if labels[i]:
            assert home not in containing(documents, b) and containing(documents, b)
        else:
            assert containing(documents, a + b) == [home]


def test_permutation_labels_give_each_shuffled_sentence_its_original_index_at_its_first_token(corpus):
    source = sentence_source(corpus, task="permutation", max_sentences=4, block_size=160)
    table = source.prepare(TOKENIZER)["train"]
    assert source.report["sentences"]["train"]["tokens_cut"] == 0  # whole sentences: each can be found
    documents = document_streams(source, "train")
    assert set(table) == {"input_ids", "attention_mask", "sentence_order_labels"}
    shuffled = 0
    for i in range(len(table["input_ids"])):
        ids = table["input_ids"][i][table["attention_mask"][i].bool()].tolist()
        labels = table["sentence_order_labels"][i][: len(ids)].tolist()
        assert ids[0] == SPECIAL.cls and ids[-1] == SPECIAL.sep
        seps = [j for j, token in enumerate(ids) if token == SPECIAL.sep]
        starts = [1] + [j + 1 for j in seps[:-1]]
        sentences = [bytes(ids[start:end]) for start, end in zip(starts, seps)]
        assert [j for j, label in enumerate(labels) if label != -100] == starts
        order = [labels[j] for j in starts]
        assert sorted(order) == list(range(len(sentences))) and 2 <= len(order) <= 4
        original = b"".join(sentence for _, sentence in sorted(zip(order, sentences)))
        assert len(containing(documents, original)) == 1
        shuffled += order != sorted(order)
    assert shuffled > 0.5 * len(table["input_ids"])


def test_examples_are_seeded_and_validation_examples_come_from_validation_documents(corpus):
    first = sentence_source(corpus, task="sop").prepare(TOKENIZER)
    again = sentence_source(corpus, task="sop").prepare(TOKENIZER)
    other = sentence_source(corpus, seed=2, task="sop").prepare(TOKENIZER)
    for split in ("train", "validation"):
        assert all(torch.equal(first[split][name], again[split][name]) for name in first[split])
    assert not torch.equal(first["train"]["input_ids"], other["train"]["input_ids"])
    source = sentence_source(corpus, task="nsp", val_fraction=0.2)
    validation = source.prepare(TOKENIZER)["validation"]
    documents = document_streams(source, "validation")
    for i in range(len(validation["input_ids"])):
        for segment in segments(table_rows(validation, i)):
            assert containing(documents, segment)


def test_nested_options_of_sources_and_combined_objectives_are_reported_with_field_paths(catalog, corpus):
    raw = compose(None, [])
    raw["data"] = {"name": "sentences", "source": {"name": "text", "block_size": 8}}
    raw["objective"] = {"name": "combined", "objectives": [{"name": "mlm", "mask_prob": 2.0},
                                                            {"name": "sop", "weight": -1.0, "colour": "red"},
                                                            {"name": "mln"}]}
    with pytest.raises(ConfigError) as error:
        validate(raw, catalog)
    message = str(error.value)
    for expected in ("objective.objectives.0.mask_prob: Input should be less than 1",
                     "objective.objectives.1.weight: Input should be greater than 0",
                     "objective.objectives.1.colour: unknown option",
                     'objective.objectives.2.name: unknown objective part "mln". Did you mean "mlm"?',
                     "data.source: Value error, set block_size on data itself"):
        assert expected in message
    raw["data"]["source"] = {"name": "text"}
    with pytest.raises(ConfigError, match="data.source.paths: Field required"):
        validate(raw, catalog)
    raw["data"]["source"]["paths"] = [str(corpus)]
    raw["objective"] = {"name": "combined", "objectives": ["mlm", {"name": "sop", "weight": 0.5}]}
    config = validate(raw, catalog)
    dumped = config.dump()["objective"]
    assert dumped["objectives"][0] == {"name": "mlm", "weight": 1.0, "mask_prob": 0.15, "masking": "token",
                                       "word_boundaries": "pieces", "span_lengths": "macbert", "max_span_words": 4,
                                       "replace_with_mask": 0.8, "replace_with_similar": 0.0,
                                       "replace_with_random": 0.1, "similar_words": "embeddings",
                                       "similar_top_k": 8, "eval_seed": 0}
    assert validate(config.dump(), catalog).dump() == config.dump()


def encoder(pooler=True):
    torch.manual_seed(0)
    options = TransformerOptions(n_layer=2, n_head=2, d_model=32, causal=False, type_vocab_size=2, pooler=pooler)
    return Transformer(options, sdpa_attention, vocab_size=TOKENIZER.vocab_size, max_seq_len=64)


def combined(model, catalog, data, parts):
    ctx = BuildContext(run_dir=".", catalog=catalog, tokenizer=TOKENIZER, model=model, data=data)
    return build_combined(CombinedOptions.model_validate({"objectives": parts}, context={"catalog": catalog}), ctx)


def count_forwards(model) -> list:
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.mark.parametrize("task, second", [("sop", "sop"), ("nsp", "nsp"), ("permutation", "sentence_order")])
def test_combined_loss_is_the_weighted_sum_of_its_parts_from_one_forward_pass(corpus, catalog, task, second):
    data = sentence_source(corpus, task=task)
    batch = table_rows(data.prepare(TOKENIZER)["train"], slice(0, 6))
    model = encoder()
    objective = combined(model, catalog, data, [{"name": "mlm", "weight": 1.0}, {"name": second, "weight": 0.5}])
    mlm, other = (part for _, _, part in objective.parts)
    calls = count_forwards(model)
    torch.manual_seed(3)
    result = compute(objective, model, batch)
    assert len(calls) == 1
    torch.manual_seed(3)  # the same MLM masks; every part scores the masked inputs
    alone = {"mlm": compute(mlm, model, batch)}
    torch.manual_seed(3)
    alone[second] = compute(other, model, mlm.transform(batch, training=True))
    expected = alone["mlm"].loss_sum / alone["mlm"].num_items + 0.5 * alone[second].loss_sum / alone[second].num_items
    assert result.num_items == 6
    torch.testing.assert_close(result.loss_sum / result.num_items, expected)
    for name, part in alone.items():
        torch.testing.assert_close(result.parts[name].loss_sum, part.loss_sum)
        assert result.parts[name].num_items == part.num_items
    assert torch.equal(result.targets, alone["mlm"].targets)  # metrics see the first part's predictions
    labels = batch.get("sentence_order_labels")
    assert alone[second].num_items == (6 if labels is None else int((labels != -100).sum()))


def test_the_loss_metric_reports_each_combined_parts_mean_loss_over_the_evaluation(corpus, catalog):
    data = sentence_source(corpus, task="sop")
    rows = data.prepare(TOKENIZER)["train"]
    micro_batches = [table_rows(rows, slice(0, 3)), table_rows(rows, slice(3, 8))]
    model = encoder().eval()
    objective = combined(model, catalog, data, [{"name": "mlm", "weight": 2.0}, {"name": "sop", "weight": 0.5}])
    metric = catalog.get("metric", "loss").build(None, BuildContext(run_dir="."))
    with torch.no_grad():  # as evaluate() scores
        results = [compute(objective, model, batch) for batch in micro_batches]
    for result in results:
        metric.update(result)
    values = metric.compute()
    for key, parts in [("loss", results), ("loss_mlm", [r.parts["mlm"] for r in results]),
                       ("loss_sop", [r.parts["sop"] for r in results])]:
        expected = sum(float(p.loss_sum) for p in parts) / sum(p.num_items for p in parts)
        assert values[key] == pytest.approx(expected)
    assert values.keys() == {"loss", "loss_mlm", "loss_sop"}


def test_accumulated_combined_gradient_averages_each_micro_batchs_weighted_means(corpus, catalog):
    data = sentence_source(corpus, task="sop")
    rows = data.prepare(TOKENIZER)["train"]
    micro_batches = [table_rows(rows, slice(0, 3)), table_rows(rows, slice(3, 8))]
    model = encoder().eval()  # evaluation draws the same MLM masks every call
    objective = combined(model, catalog, data, [{"name": "mlm", "weight": 2.0}, {"name": "sop", "weight": 0.5}])
    accumulate_gradients(model, objective, micro_batches)
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    mlm, sop = (part for _, _, part in objective.parts)
    loss = 0.0
    for batch in micro_batches:  # each micro-batch's weighted means, weighted by its examples
        m, s = compute(mlm, model, batch), compute(sop, model, mlm.transform(batch, training=False))
        loss = loss + len(batch["input_ids"]) / 8 * (2.0 * m.loss_sum / m.num_items + 0.5 * s.loss_sum / s.num_items)
    loss.backward()
    for got, want in zip(accumulated, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want)


class FirstTokenIsZero:
    """A third-party objective without the shared-forward extension: the loss of predicting token 0 at the start."""

    def __call__(self, model, batch):
        logits = model(batch["input_ids"], **model_inputs(batch))[:, 0]
        targets = torch.zeros(len(logits), dtype=torch.long)
        return ObjectiveResult(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), len(logits))


def test_an_objective_without_the_extension_combines_with_a_forward_pass_of_its_own(corpus, catalog):
    data = sentence_source(corpus, task="sop")
    batch = table_rows(data.prepare(TOKENIZER)["train"], slice(0, 4))
    model = encoder().eval()
    objective = combined(model, catalog, data, ["mlm", "sop"])
    objective.parts.append(("first_token", 1.0, FirstTokenIsZero()))
    calls = count_forwards(model)
    with torch.no_grad():
        result = compute(objective, model, batch)
        assert len(calls) == 2
        own = compute(FirstTokenIsZero(), model, batch)
    assert result.parts["first_token"].loss_sum == pytest.approx(float(own.loss_sum))


def test_the_sop_head_reads_the_models_pooler_without_copying_it(corpus, catalog):
    model = encoder(pooler=True)
    combined(model, catalog, sentence_source(corpus), ["sop"])
    names = list(model.state_dict())
    assert [n for n in names if n.startswith("heads.")] == ["heads.pooled.dense.weight", "heads.pooled.dense.bias",
                                                            "heads.sop.classifier.weight", "heads.sop.classifier.bias"]
    without = encoder(pooler=False)
    combined(without, catalog, sentence_source(corpus), ["sop"])
    assert [n for n in without.state_dict() if n.startswith("heads.")] == ["heads.sop.classifier.weight",
                                                                           "heads.sop.classifier.bias"]


def test_baselines_are_the_label_prior_and_their_weighted_sum(corpus, catalog):
    data = sentence_source(corpus, task="sop")
    tables = data.prepare(TOKENIZER)
    objective = combined(encoder(), catalog, data, [{"name": "mlm", "weight": 1.0}, {"name": "sop", "weight": 0.5}])
    baselines = objective.baseline(tables["train"], tables["validation"])
    assert baselines["prior_val_loss[sop]"] == pytest.approx(math.log(2), abs=0.02)
    assert 0.3 < baselines["majority_val_accuracy[sop]"] < 0.7
    assert baselines["weighted_val_loss"] == pytest.approx(baselines["unigram_val_loss[mlm]"]
                                                           + 0.5 * baselines["prior_val_loss[sop]"])


def test_a_short_mlm_plus_sop_run_lowers_both_losses(tmp_path, catalog):
    # Two-sentence documents, a long sentence then a short one: the order of a pair shows in how many tokens each
    # segment has, which a one-layer encoder picks up within a few dozen steps.
    rng = random.Random(0)
    with open(tmp_path / "docs.jsonl", "w") as f:
        for _ in range(300):
            sentences = [f"First {' '.join(rng.choices(WORDS[:6], k=5))}.", f"Then {rng.choice(WORDS[:6])}."]
            f.write(json.dumps({"text": " ".join(sentences)}) + "\n")
    raw = compose(None, [])
    raw.update(
        data={"name": "sentences", "source": {"name": "text", "paths": [str(tmp_path / "docs.jsonl")]},
              "task": "sop", "block_size": 52, "val_fraction": 0.1},
        tokenizer={"name": "byte"},
        model={"name": "transformer", "causal": False, "n_layer": 1, "n_head": 2, "d_model": 64,
               "type_vocab_size": 2, "pooler": True},
        objective={"name": "combined", "objectives": ["mlm", "sop"]},
        optimizer={"name": "adamw", "lr": 3e-3},
        scheduler={"name": "constant", "warmup_steps": 5},
        callbacks=[],
        train={"max_steps": 40, "batch_size": 16, "eval_every": 40, "eval_batches": 2, "sample_tokens": 0,
               "progress": False, "device": "cpu"},
    )
    run = Run(validate(raw, catalog), tmp_path / "run")

    def part_losses():
        run.model.eval()
        with torch.no_grad():
            result = compute(run.objective, run.model, table_rows(run.val_table, slice(0, 30)))
        return {name: float(part.loss_sum) / part.num_items for name, part in result.parts.items()}

    before = part_losses()
    run.train()
    after = part_losses()
    assert after["mlm"] < before["mlm"] - 2.0
    assert after["sop"] < 0.3 * before["sop"]
