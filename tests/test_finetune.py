"""Fine-tuning: labeled data, the classification objectives, starting from a pretrained run, frozen backbones, the
heads' learning rate and early stopping. Small generated tasks that a one-layer model learns in seconds."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from hookformer.core import checkpoint
from hookformer.core.cli import main
from hookformer.core.config import EarlyStoppingConfig, compose, merge, validate
from hookformer.core.errors import ConfigError, DataError
from hookformer.core.loop import EarlyStopping, Run
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.labeled import IGNORE, LabeledOptions, fit_pair
from hookformer.plugins.data.labeled import build as build_labeled
from hookformer.plugins.data.stdlib_areas import AREAS, StdlibAreasOptions, area_of
from hookformer.plugins.data.stdlib_areas import build as build_stdlib_areas
from hookformer.plugins.objectives.classification import (
    Classification,
    last_token,
    mean_of_tokens,
    without_trailing_padding,
)
from hookformer.registry.catalog import Catalog
from safetensors.torch import load_file

FILLER = "the a of and to in it is was for on with as at by from this that be or".split()
#: Each class has keywords spelled with letters no other word has, so even a byte-level model finds them at once.
KEYWORDS = {"alpha": ["gck", "kgc", "ckg", "gcg"], "beta": ["jpq", "qjp", "pqj", "jqj"],
            "gamma": ["vxz", "zvx", "xzv", "zxz"]}


def sentence(rng: random.Random, label: str) -> list[str]:
    """Five filler words with one keyword of ``label`` at a random place: the label is in the text, anywhere."""
    words = rng.choices(FILLER, k=5)
    words.insert(rng.randrange(6), rng.choice(KEYWORDS[label]))
    return words


def keyword_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": " ".join(sentence(rng, label)), "label": label}
            for label in (rng.choice(list(KEYWORDS)) for _ in range(n))]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The keyword task (three classes) as JSONL train and validation files, and a text corpus of its sentences."""
    root = tmp_path_factory.mktemp("data")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(r["text"] for r in keyword_records(600, 3)))
    return {"train": write_jsonl(root / "train.jsonl", keyword_records(320, 1)),
            "validation": write_jsonl(root / "validation.jsonl", keyword_records(64, 2)),
            "corpus": corpus, "cache": root / "cache"}


TRAIN = {"max_steps": 60, "batch_size": 16, "eval_every": 60, "eval_batches": 4, "log_every": 10,
         "checkpoint_every": 60, "sample_tokens": 0, "progress": False, "device": "cpu"}


def finetune_config(files: dict, *, model: dict | None = None, tokenizer: dict | None = None, **sections) -> dict:
    """A fine-tuning config for the keyword task; ``model`` and ``tokenizer`` are left out unless given (a run with
    train.init_from takes them from the pretrained run)."""
    config = {
        "data": {"name": "labeled", "train_files": [str(files["train"])],
                 "validation_files": [str(files["validation"])], "max_length": 48, "cache_dir": str(files["cache"])},
        "objective": {"name": "classification"},
        "optimizer": {"name": "adamw", "lr": 5e-3, "weight_decay": 0.0},
        "scheduler": {"name": "constant", "warmup_steps": 5},
        "metrics": ["loss", "accuracy"],
        "callbacks": [],
    }
    if model is not None:
        config["model"] = {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 32, **model}
    if tokenizer is not None:
        config["tokenizer"] = tokenizer
    return merge(config, {**sections, "train": {**TRAIN, **sections.get("train", {})}})


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def build_run(config: dict, run_dir: Path, *overrides: str) -> Run:
    path = write_config(run_dir.parent, config)
    return Run(validate(compose(path, list(overrides)), Catalog.load()), run_dir)


def train_cli(tmp_path: Path, config: dict, *args: str, command: str = "train") -> Path:
    run_dir = tmp_path / "run"
    assert main([command, *args, str(write_config(tmp_path, config)), "--run-dir", str(run_dir)]) == 0
    return run_dir


# -- learning --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal,pooling", [(False, "auto"), (True, "auto"), (True, "mean")],
                         ids=["encoder-first-token", "decoder-last-token", "decoder-mean"])
def test_fine_tuning_a_small_model_on_a_separable_task_reaches_far_above_chance(tmp_path, files, causal, pooling):
    config = finetune_config(files, model={"causal": causal}, tokenizer={"name": "byte"},
                             objective={"pooling": pooling})
    run_dir = train_cli(tmp_path, config)
    history = records(run_dir)
    assert history[0]["majority_val_accuracy"] < 0.5  # three balanced classes
    assert history[-1]["val_accuracy"] >= 0.85
    assert history[-1]["val_loss"] < 0.5 * history[0]["prior_val_loss"]


@pytest.mark.parametrize("causal", [True, False], ids=["decoder", "encoder"])
def test_a_classifier_run_samples_and_generates_only_from_a_decoder(tmp_path, files, causal, capsys):
    config = finetune_config(files, model={"causal": causal}, tokenizer={"name": "byte"},
                             train={"max_steps": 4, "eval_every": 4, "checkpoint_every": 4, "sample_tokens": 8})
    run_dir = train_cli(tmp_path, config)
    capsys.readouterr()
    code = main(["generate", str(run_dir), "--prompt", "a", "--tokens", "8", "--greedy"])
    out, err = capsys.readouterr()
    if causal:  # the checkpoint's classifier head is left out; the backbone and its LM head continue the prompt
        assert code == 0 and (run_dir / "samples.txt").is_file() and out.startswith("a")
    else:
        assert code == 2 and not (run_dir / "samples.txt").exists()
        assert "encoder (its model part transformer is not causal; objective classification)" in err \
            and "Traceback" not in err


def test_pooling_reads_real_tokens_only():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert last_token(hidden, mask).flatten().tolist() == [2.0, 5.0]
    assert mean_of_tokens(hidden, mask).flatten().tolist() == [1.0, 4.5]


def padded_batch(lengths: list[int], length: int, token_labels: bool = False) -> dict:
    """Random ids padded (id 0) to ``length``, with the attention mask, segment ids and labels (per token: -100 on
    padding)."""
    generator = torch.Generator().manual_seed(0)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(7, 50, (len(lengths), length), generator=generator) * mask
    labels = torch.randint(0, 3, ids.shape if token_labels else (len(lengths),), generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": labels.masked_fill(mask == 0, IGNORE) if token_labels else labels}


def test_a_batch_is_cut_after_its_longest_example_to_a_multiple_of_trim_padding():
    batch = {**padded_batch([5, 9, 3], 32, token_labels=True), "weights": torch.ones(3, 32)}
    cut = without_trailing_padding(batch, 8)
    assert {name: tuple(value.shape) for name, value in cut.items()} == {
        "input_ids": (3, 16), "attention_mask": (3, 16), "token_type_ids": (3, 16), "labels": (3, 16),
        "weights": (3, 32)}  # a field neither the objective nor the model reads is left as it is
    assert torch.equal(cut["input_ids"], batch["input_ids"][:, :16])
    assert without_trailing_padding(batch, 1)["input_ids"].shape == (3, 9)
    assert without_trailing_padding(padded_batch([0, 0], 32), 8)["input_ids"].shape == (2, 8)
    sequence_labels = padded_batch([5, 9, 3], 32)
    assert torch.equal(without_trailing_padding(sequence_labels, 8)["labels"], sequence_labels["labels"])
    full = padded_batch([30, 2], 32)
    assert without_trailing_padding(full, 8) is full
    unmasked = {"input_ids": full["input_ids"], "labels": full["labels"]}
    assert without_trailing_padding(unmasked, 8) is unmasked


@pytest.mark.parametrize("objective,causal,pooling", [
    ("classification", False, "auto"), ("classification", True, "last"), ("classification", False, "mean"),
    ("token_classification", False, None)])
def test_cutting_the_trailing_padding_changes_neither_the_loss_nor_the_gradients(tmp_path, objective, causal,
                                                                                 pooling):
    catalog = Catalog.load()
    ctx = BuildContext(run_dir=tmp_path, catalog=catalog, label_names=["a", "b", "c"])
    entry = catalog.get("attention", "sdpa")
    ctx = replace(ctx, attention=entry.build(entry.options_model()(), ctx))
    entry = catalog.get("model", "transformer")
    model = entry.build(entry.options_model()(n_layer=2, n_head=2, d_model=32, vocab_size=50, max_seq_len=32,
                                              causal=causal, pooler=not causal, type_vocab_size=2), ctx)
    ctx = replace(ctx, model=model)
    entry = catalog.get("objective", objective)
    options = {"dropout": 0.0} | ({"pooling": pooling} if pooling else {})
    trimmed = entry.build(entry.options_model()(**options), ctx)
    untrimmed = Classification(trimmed.head, trimmed.num_labels, trim_padding=None)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    batch = padded_batch([5, 9, 3], 32, token_labels=objective == "token_classification")
    results = []
    for run in (trimmed, untrimmed):
        model.zero_grad()
        result = run(model, batch)
        result.loss_sum.backward()
        results.append((result, {name: param.grad.clone() for name, param in model.named_parameters()
                                 if param.grad is not None}))
    (cut, cut_grads), (full, full_grads) = results
    assert seen == [16, 32]
    assert cut.num_items == full.num_items
    torch.testing.assert_close(cut.loss_sum, full.loss_sum)
    assert cut_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(cut_grads[name], full_grads[name], msg=name)


def test_sentence_pairs_get_segment_ids_zero_then_one_and_the_model_learns_from_them(tmp_path, files):
    pairs = [{"first": r["text"], "second": " ".join(sentence(random.Random(i), r["label"])), "label": r["label"]}
             for i, r in enumerate(keyword_records(64, 5))]
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    data = {"name": "labeled", "train_files": [str(path)], "validation_files": [], "text_field": "first",
            "text_pair_field": "second", "max_length": 40, "cache_dir": str(files["cache"])}
    config = finetune_config(files, model={"causal": False, "type_vocab_size": 2}, tokenizer={"name": "byte"},
                             data=data, train={"max_steps": 4, "eval_every": 4, "checkpoint_every": 4})
    run = build_run(config, tmp_path / "run")
    table, special = run.train_table, run.tokenizer.special
    row, types = table["input_ids"][0], table["token_type_ids"][0]
    seps = (row == special.sep).nonzero().flatten().tolist()
    assert row[0] == special.cls and len(seps) == 2
    assert types[:seps[0] + 1].eq(0).all() and types[seps[0] + 1:seps[1] + 1].eq(1).all()
    assert types[seps[1] + 1:].eq(0).all() and table["attention_mask"][0, seps[1] + 1:].eq(0).all()
    before = run.model.type_emb.weight.detach().clone()
    run.train()
    assert not torch.equal(before, run.model.type_emb.weight)  # token_type_ids reached the model


def test_sentence_pairs_on_a_model_without_segment_embeddings_exit_2_naming_the_field_and_leave_no_run(
        tmp_path, files, capsys):
    pairs = [{"first": r["text"], "second": r["text"], "label": r["label"]} for r in keyword_records(16, 5)]
    data = {"name": "labeled", "train_files": [str(write_jsonl(tmp_path / "pairs.jsonl", pairs))],
            "validation_files": [], "text_field": "first", "text_pair_field": "second", "max_length": 40,
            "cache_dir": str(files["cache"])}
    config = finetune_config(files, model={"causal": False}, tokenizer={"name": "byte"}, data=data)
    run_dir = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path, config)), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "token_type_ids" in err and "model.type_vocab_size" in err and "Traceback" not in err
    assert not run_dir.exists()


def test_a_pair_is_truncated_from_its_longer_text_first():
    assert fit_pair(3, 4, 10) == (3, 4)
    assert fit_pair(2, 30, 10) == (2, 8)
    assert fit_pair(30, 2, 10) == (8, 2)
    assert fit_pair(30, 30, 9) == (5, 4)


def test_token_classification_learns_tags_scored_on_first_pieces_only(tmp_path, files):
    rng = random.Random(0)
    examples = []
    for _ in range(240):
        words = rng.choices(FILLER + KEYWORDS["alpha"] + KEYWORDS["beta"], k=6)
        examples.append({"tokens": words, "tags": ["A" if w in KEYWORDS["alpha"] else "B"
                                                   if w in KEYWORDS["beta"] else "O" for w in words]})
    path = write_jsonl(tmp_path / "tags.jsonl", examples)
    data = {"name": "labeled", "task": "token_classification", "train_files": [str(path)], "validation_files": [],
            "max_length": 48, "cache_dir": str(files["cache"])}
    config = finetune_config(files, model={"causal": False}, tokenizer={"name": "byte"}, data=data,
                             objective={"name": "token_classification"})
    run_dir = train_cli(tmp_path, config)
    history = records(run_dir)
    assert history[-1]["val_accuracy"] >= 0.95 > history[0]["majority_val_accuracy"] + 0.2


def test_token_labels_sit_on_each_words_first_sentencepiece_piece(tmp_path, files):
    from pydoc_data.topics import topics

    class Corpus:
        def texts(self):
            return iter(topics[name] for name in sorted(topics)[:30])

    entry = Catalog.load().get("tokenizer", "sentencepiece")
    tokenizer = entry.spec.build(entry.spec.options_model()(vocab_size=400),
                                 BuildContext(run_dir=tmp_path, data=Corpus()))
    words = ["The", "catalogue", "of", "functions", "x", "the", "end"]
    tags = ["O", "NOUN", "O", "NOUN", "VAR", "O", "NOUN"]
    path = write_jsonl(tmp_path / "tags.jsonl", [{"tokens": words, "tags": tags}] * 2)
    source = build_labeled(LabeledOptions(task="token_classification", train_files=[str(path)], max_length=40,
                                          cache_dir=str(files["cache"])), BuildContext(run_dir=tmp_path))
    table = source.prepare(tokenizer)["train"]
    # Words after the first are encoded with their leading space: usually inside the first piece (" c", "at", ...),
    # sometimes a piece of its own (" ", "x"), which is not the word's: the tag then goes on the next piece.
    pieces = [tokenizer.encode(word if i == 0 else " " + word) for i, word in enumerate(words)]
    space_alone = [len(p) > 1 and not tokenizer.decode(p[:1]).strip() for p in pieces]
    assert any(len(p) - alone > 1 for p, alone in zip(pieces, space_alone))  # words of several pieces
    assert any(space_alone) and not all(space_alone[1:])
    expected = [IGNORE]  # [cls]
    for word_pieces, alone, tag in zip(pieces, space_alone, tags):
        expected += [IGNORE] * alone + [source.label_names.index(tag)] + [IGNORE] * (len(word_pieces) - alone - 1)
    expected += [IGNORE] * (40 - len(expected))  # [sep] and padding
    assert table["labels"][0].tolist() == expected
    assert table["input_ids"][0, 1:1 + sum(map(len, pieces))].tolist() == [i for p in pieces for i in p]


# -- options ---------------------------------------------------------------------------------------------------------

def test_a_frozen_backbone_is_bit_identical_after_fine_tuning_while_the_head_changes(tmp_path, files):
    config = finetune_config(files, model={"causal": False, "pooler": True}, tokenizer={"name": "byte"},
                             train={"freeze_backbone": True, "max_steps": 10, "eval_every": 10})
    run = build_run(config, tmp_path / "run")
    before = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    run.train()
    after = dict(run.model.named_parameters())
    backbone = [name for name in before if not name.startswith("heads.")]
    assert backbone and all(torch.equal(before[name], after[name]) for name in backbone)
    assert not torch.equal(before["heads.classifier.out.weight"], after["heads.classifier.out.weight"])
    assert not torch.equal(before["heads.pooled.dense.weight"], after["heads.pooled.dense.weight"])


def test_head_lr_gives_the_heads_their_own_learning_rate_which_the_schedule_scales_too(tmp_path, files):
    config = finetune_config(files, model={"causal": False}, tokenizer={"name": "byte"},
                             optimizer={"lr": 1e-3}, scheduler={"name": "linear", "warmup_steps": 4},
                             train={"head_lr": 5e-2, "max_steps": 2, "eval_every": 2})
    run = build_run(config, tmp_path / "run")
    names = {id(p): name for name, p in run.model.named_parameters()}
    groups = [{names[id(p)] for p in group["params"]} for group in run.optimizer.param_groups]
    head_groups = [g for g, names_ in zip(run.optimizer.param_groups, groups) if names_ and
                   all(n.startswith("heads.") for n in names_)]
    other_groups = [g for g, names_ in zip(run.optimizer.param_groups, groups) if names_ and
                    not any(n.startswith("heads.") for n in names_)]
    assert {n for g in groups for n in g} == set(names.values())  # every parameter, heads in their own groups
    assert head_groups and other_groups
    run.train()  # two warmup steps: the schedule sets each group's lr to (step + 1) / 4 of its peak
    assert all(g["lr"] == pytest.approx(5e-2 * 3 / 4) for g in head_groups)
    assert all(g["lr"] == pytest.approx(1e-3 * 3 / 4) for g in other_groups)


def test_early_stopping_follows_the_best_evaluation_and_counts_evaluations_without_improvement():
    stopper = EarlyStopping(EarlyStoppingConfig(metric="val_accuracy", mode="max", patience=2, min_delta=0.01))
    outcomes = []
    for step, value in enumerate([0.50, 0.60, 0.605, 0.58, 0.70, 0.69, 0.69], 1):
        outcomes.append((stopper.update({"step": step, "val_accuracy": value}), stopper.should_stop))
    assert outcomes == [(True, False), (True, False), (False, False), (False, True), (True, False),
                        (False, False), (False, True)]
    assert stopper.best == {"step": 5, "val_accuracy": 0.70}


def test_early_stopping_stops_after_patience_evaluations_and_restores_the_best_weights(tmp_path, files, capsys):
    # No later evaluation improves val_loss by 10: the first is the best, and two more end the run at step 6.
    config = finetune_config(files, model={"causal": False}, tokenizer={"name": "byte"}, train={
        "max_steps": 40, "eval_every": 2, "checkpoint_every": 100, "keep_checkpoints": 1,
        "early_stopping": {"metric": "val_loss", "mode": "min", "patience": 2, "min_delta": 10.0}})
    run_dir = train_cli(tmp_path, config)
    assert [r["step"] for r in records(run_dir) if "val_loss" in r] == [2, 4, 6]
    best, latest = checkpoint.best(run_dir), checkpoint.latest(run_dir)
    assert best.name == "step_000002" and latest.name == "step_000006"  # the best survives keep_checkpoints: 1
    assert "best_step 2" in capsys.readouterr().out

    # The model left at the end holds the best checkpoint's weights, not the last step's.
    run = build_run(config, tmp_path / "again")
    run.train()
    restored = run.model.state_dict()
    saved = load_file(str(checkpoint.best(tmp_path / "again") / checkpoint.WEIGHTS))
    assert saved and all(torch.equal(restored[name], tensor) for name, tensor in saved.items())
    last = load_file(str(checkpoint.latest(tmp_path / "again") / checkpoint.WEIGHTS))
    assert not all(torch.equal(restored[name], tensor) for name, tensor in last.items())


def test_an_early_stopping_metric_no_evaluation_gives_is_a_config_error_before_training(tmp_path, files, capsys):
    config = finetune_config(files, model={"causal": False}, tokenizer={"name": "byte"},
                             train={"early_stopping": {"metric": "val_f1"}})
    code = main(["train", str(write_config(tmp_path, config)), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "val_f1" in err and "val_accuracy" in err and "val_loss" in err
    assert not (tmp_path / "run").exists()


# -- starting from a pretrained run -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, files) -> Path:
    """A short masked-language-model pretraining of a tiny encoder with its own sentencepiece tokenizer."""
    root = tmp_path_factory.mktemp("pretrained")
    config = {
        "data": {"name": "text", "paths": [str(files["corpus"])], "block_size": 48, "cache_dir": str(files["cache"])},
        "tokenizer": {"name": "sentencepiece", "vocab_size": 300},
        "model": {"name": "transformer", "causal": False, "n_layer": 1, "n_head": 2, "d_model": 32},
        "objective": {"name": "mlm"}, "metrics": ["loss"], "callbacks": [],
        "train": {**TRAIN, "max_steps": 4, "eval_every": 4, "checkpoint_every": 4},
    }
    return train_cli(root, config)


def test_a_fine_tuning_config_layers_the_pretrained_sections_under_its_own(tmp_path, files, pretrained):
    config = {**finetune_config(files, train={"init_from": str(pretrained)}), "model": {"dropout": 0.2}}
    raw = compose(write_config(tmp_path, config), ["model.norm_eps=1.0e-6"])
    # default recipe (4 layers, width 192) < pretrained run (1 layer, width 32) < this config < --set
    assert (raw["model"]["n_layer"], raw["model"]["d_model"], raw["model"]["causal"]) == (1, 32, False)
    assert raw["model"]["dropout"] == 0.2 and raw["model"]["norm_eps"] == 1e-6
    # The pretrained position table's size comes from its checkpoint's manifest, not from a rewritten config field.
    assert raw["model"]["max_seq_len"] is None
    assert raw["tokenizer"]["name"] == "sentencepiece" and raw["tokenizer"]["vocab_size"] == 300
    step_dir = checkpoint.latest(pretrained)
    assert compose(write_config(tmp_path, {**config, "train": {"init_from": str(step_dir)}}), [])["model"] == \
        raw["model"] | {"norm_eps": 1e-5}


def test_init_from_loads_the_pretrained_backbone_and_tokenizer_and_gives_the_head_fresh_weights(
        tmp_path, files, pretrained, capsys):
    config = finetune_config(files, train={"init_from": str(pretrained)})
    run = build_run(config, tmp_path / "run")
    saved = load_file(str(checkpoint.latest(pretrained) / checkpoint.WEIGHTS))
    own = run.model.state_dict()
    assert saved and all(torch.equal(own[name], tensor) for name, tensor in saved.items())
    fresh = {name for name in own if name not in saved}  # of the tied embedding and projection, one is saved
    assert {name for name in fresh if name.startswith("heads.")} == {"heads.classifier.out.weight",
                                                                      "heads.classifier.out.bias"}
    assert fresh - {"heads.classifier.out.weight", "heads.classifier.out.bias"} <= {"tok_emb.weight", "lm_head.weight"}
    assert (tmp_path / "run" / "tokenizer" / "sentencepiece.model").read_bytes() == \
        (pretrained / "tokenizer" / "sentencepiece.model").read_bytes()
    assert "task heads with fresh weights: heads.classifier" in capsys.readouterr().err


@pytest.mark.parametrize("override,expected", [
    ("tokenizer.name=byte", r"tok_emb.weight: checkpoint \(300, 32\) vs model \(263, 32\).*vocabulary has 300 ids"),
    ("model.n_layer=2", r"blocks.1.norm1.weight: not in the checkpoint.*options that decide shapes"),
], ids=["vocabulary", "layers"])
def test_a_pretrained_checkpoint_that_does_not_fit_is_an_error_naming_both_sides(
        tmp_path, files, pretrained, capsys, override, expected):
    config = finetune_config(files)
    code = main(["finetune", str(pretrained), str(write_config(tmp_path, config)), "--run-dir",
                 str(tmp_path / "run"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(expected, err.replace("\n", " "))
    assert not (tmp_path / "run").exists()


def test_a_resumed_fine_tuning_run_continues_from_its_own_checkpoint_without_the_pretrained_run(
        tmp_path, files, pretrained):
    copy = tmp_path / "pretrained"
    shutil.copytree(pretrained, copy)
    config = finetune_config(files, train={"max_steps": 4, "eval_every": 4, "checkpoint_every": 4})
    run_dir = train_cli(tmp_path, config, str(copy), command="finetune")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["init_from"] == str(copy)
    tuned = load_file(str(checkpoint.latest(run_dir) / checkpoint.WEIGHTS))
    shutil.rmtree(copy)
    run = Run(validate(yaml.safe_load((run_dir / "config.yaml").read_text()), Catalog.load()), run_dir, resume=True)
    assert run.step == 4
    own = run.model.state_dict()
    assert all(torch.equal(own[name], tensor) for name, tensor in tuned.items())


# -- bad input -------------------------------------------------------------------------------------------------------

def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", ["missing text column", "missing label column", "unseen validation label",
                                  "empty label", "words and tags differ"])
def test_bad_labeled_data_is_a_data_error_naming_the_file_the_field_and_the_fix(tmp_path, files, case):
    train = write(tmp_path / "train.csv", "text,label\nhello there,greeting\nbye now,farewell\n")
    options = {"train_files": [train], "cache_dir": str(files["cache"])}
    if case == "missing text column":
        options["train_files"] = [write(tmp_path / "t.csv", "sentence,label\nhi,greeting\nbye,farewell\n")]
        expected = [str(tmp_path / "t.csv"), '"text"', "data.text_field", "sentence, label"]
    elif case == "missing label column":
        options["train_files"] = [write(tmp_path / "t.tsv", "text\tclass\nhi\tgreeting\nbye\tfarewell\n")]
        expected = [str(tmp_path / "t.tsv"), '"label"', "data.label_field", "text, class"]
    elif case == "unseen validation label":
        options["validation_files"] = [write(tmp_path / "v.jsonl", '{"text": "hi", "label": "greeting"}\n\n'
                                             '{"text": "yo", "label": "slang"}\n')]
        expected = [f"{tmp_path / 'v.jsonl'}, line 3", '"slang"', "farewell, greeting"]
    elif case == "empty label":
        options["train_files"] = [write(tmp_path / "t.csv", 'text,label\nhi,greeting\n"two\nlines",\nbye,x\n')]
        expected = [f"{tmp_path / 't.csv'}, line 3", "empty label", "data.label_field"]
    else:
        options.update(task="token_classification", train_files=[write(
            tmp_path / "t.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "O"]}\n{"tokens": ["a"], "tags": ["O", "X"]}\n')])
        expected = [f"{tmp_path / 't.jsonl'}, line 2", "1 words", "2 tags"]
    with pytest.raises(DataError) as error:
        build_labeled(LabeledOptions(**options), BuildContext(run_dir=tmp_path))
    assert all(part in str(error.value) for part in expected), str(error.value)


def test_integer_labels_keep_their_numeric_order(tmp_path, files):
    path = write(tmp_path / "t.csv", "text,label\na,10\nb,2\nc,1\nd,2\n")
    source = build_labeled(LabeledOptions(train_files=[path], validation_files=[path], cache_dir=str(files["cache"])),
                           BuildContext(run_dir=tmp_path))
    assert source.label_names == ["1", "2", "10"]


def test_f1_averages_report_their_own_keys_and_two_metrics_with_one_key_are_refused_before_training(
        tmp_path, files, capsys):
    config = finetune_config(files, model={}, tokenizer={"name": "byte"},
                             train={"max_steps": 2, "eval_every": 2, "checkpoint_every": 2})
    config["metrics"] = ["accuracy", {"name": "f1"}, {"name": "f1", "average": "micro"}]
    last = records(train_cli(tmp_path, config))[-1]
    assert {"val_f1", "val_f1_micro", "val_precision_micro"} <= last.keys()
    assert last["val_f1_micro"] == pytest.approx(last["val_accuracy"])
    config["metrics"] = ["loss", "f1", "accuracy", "f1"]
    run_dir = tmp_path / "twice"
    assert main(["train", str(write_config(tmp_path, config)), "--run-dir", str(run_dir)]) == 2
    assert 'metrics[1] and metrics[3] (f1) both report "f1"' in capsys.readouterr().err
    assert not run_dir.exists()


def test_a_classification_objective_without_labeled_data_is_a_config_error(tmp_path, files):
    config = finetune_config(files, model={}, tokenizer={"name": "byte"}, data={
        "name": "text", "paths": [str(files["corpus"])], "block_size": 32, "cache_dir": str(files["cache"])})
    with pytest.raises(ConfigError, match="needs labeled data"):
        build_run(config, tmp_path / "run")


def test_a_built_in_recipe_is_named_instead_of_a_config_file_and_leaves_the_model_shapes_open():
    raw = compose(Path("stdlib_areas"), [])
    assert raw["data"]["name"] == "stdlib_areas" and raw["objective"]["name"] == "classification"
    recipe = yaml.safe_load(Path(__file__).parent.parent.joinpath("plugins", "stdlib_areas.yaml").read_text())
    assert "model" not in recipe and "tokenizer" not in recipe  # they come from the default recipe or init_from


def test_every_standard_library_module_of_the_demo_belongs_to_one_area():
    modules = [module for area in AREAS.values() for module in area]
    assert len(modules) == len(set(modules)) and 5 <= len(AREAS) <= 8
    assert area_of("email.message.Message.get_payload") == "email" and area_of("asyncio") == "concurrency"
    assert area_of("tkinter.Tk") is None


@pytest.mark.slow
def test_the_demo_labels_standard_library_docstrings_with_every_area_on_both_sides(tmp_path):
    source = build_stdlib_areas(StdlibAreasOptions(cache_dir=str(tmp_path)), BuildContext(run_dir=tmp_path, seed=0))
    counts = source.report["label_counts"]
    assert source.label_names == list(AREAS)
    assert all(count > 0 for split in counts.values() for count in split.values())
    assert max(counts["validation"].values()) < 0.25 * sum(counts["validation"].values())  # no area dominates
    assert source.report["docstrings"]["outside_the_areas"] > 0
