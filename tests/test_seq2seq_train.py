"""Sequence-to-sequence end to end with the encoder-decoder model part: the objectives pass the objective kit, a tiny
encoder-decoder learns pairs, span corruption's loss falls on the built-in corpus, and evaluation writes BLEU and
ROUGE of its generations to metrics.jsonl."""

import json
import random

import pytest
import torch

from hookformer.core.cli import main
from hookformer.core.config import compose, validate
from hookformer.core.generate import Decoding, encode_source, generate
from hookformer.core.loop import Run
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.pairs import seq2seq_table
from hookformer.plugins.objectives.seq2seq import Seq2Seq, Seq2SeqOptions
from hookformer.plugins.objectives.span_corruption import SpanCorruption, SpanCorruptionOptions
from hookformer.plugins.objectives.text_infilling import TextInfilling, TextInfillingOptions
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.registry.catalog import Catalog
from hookformer.testing import check_objective

TOKENIZER = ByteTokenizer()
TINY = {"name": "encoder_decoder", "n_layer": 1, "n_head": 2, "d_model": 32}


def encoder_decoder(max_seq_len: int = 32):
    torch.manual_seed(0)
    catalog = Catalog.load()
    ctx = BuildContext(run_dir=".", tokenizer=TOKENIZER, catalog=catalog,
                       attention=BuildContext(run_dir=".", catalog=catalog).build("attention", "sdpa", "attention"))
    from hookformer.core.parts import Shapes

    ctx = BuildContext(run_dir=".", tokenizer=TOKENIZER, catalog=catalog, attention=ctx.attention,
                       shapes=Shapes(TOKENIZER.vocab_size, max_seq_len))
    return ctx.build("model", TINY, "model")


def test_the_seq2seq_objectives_conform_to_the_objective_kit():
    model = encoder_decoder()
    rng = random.Random(0)
    texts = [bytes(rng.choices(range(97, 123), k=rng.randint(3, 12))) for _ in range(16)]
    pairs = seq2seq_table([list(t) for t in texts[:8]], [list(t[::-1]) for t in texts[:8]], TOKENIZER.special, 32, 32)
    check_objective(Seq2Seq(Seq2SeqOptions(label_smoothing=0.1)), model, pairs)
    blocks = {"input_ids": torch.tensor([list(b"the quick brown fox jumps over the lazy dog. " * 2)[:24]] * 8)}
    sentinels = list(range(200, 240))
    check_objective(SpanCorruption(SpanCorruptionOptions(), TOKENIZER.special, sentinels), model, blocks)
    check_objective(TextInfilling(TextInfillingOptions(permute_sentences=True), TOKENIZER.special,
                                  frozenset([ord(".")])), model, blocks)


def run_config(tmp_path, **sections) -> dict:
    raw = compose(None, [])
    raw.update({"tokenizer": {"name": "byte"}, "model": TINY, "hooks": [], "optimizer": {"name": "adamw", "lr": 3e-3},
                "scheduler": {"name": "constant", "warmup_steps": 5}, **sections})
    return raw


@pytest.mark.slow
def test_a_tiny_encoder_decoder_learns_to_reverse_word_order_and_reports_bleu_and_rouge(tmp_path, capsys):
    rng = random.Random(0)
    words = ["red", "blue", "cat", "dog", "sun", "moon", "tree", "car"]
    lines = [rng.choices(words, k=rng.randint(2, 4)) for _ in range(800)]
    (tmp_path / "reverse.jsonl").write_text("".join(
        json.dumps({"source": " ".join(line), "target": " ".join(line[::-1])}) + "\n" for line in lines))
    raw = run_config(tmp_path, data={"name": "pairs", "paths": [str(tmp_path / "reverse.jsonl")],
                                     "max_source_tokens": 24, "max_target_tokens": 24, "val_fraction": 0.05},
                     objective={"name": "seq2seq"},
                     metrics=["loss", "accuracy", {"name": "bleu", "max_examples": 40, "max_new_tokens": 24},
                              {"name": "rouge", "max_examples": 40, "max_new_tokens": 24}],
                     train={"max_steps": 200, "batch_size": 32, "eval_every": 100, "eval_batches": 2,
                            "sample_tokens": 24, "sample_prompt": "red cat sun", "progress": False,
                            "device": "cpu"})
    run = Run(validate(raw, Catalog.load()), tmp_path / "run")
    before = run.evaluate()
    summary = run.train()
    assert summary["val_loss"] < 0.2 * before["val_loss"] and summary["val_accuracy"] > 0.8
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val_bleu" in r][-1]
    assert {"val_bleu", "val_rouge1", "val_rouge2", "val_rougeL", "val_accuracy"} <= set(last)
    assert before["val_bleu"] < 1 and last["val_bleu"] > 20 and last["val_rougeL"] > 0.5

    # The samples and `hookformer generate --source` encode the source as the data did (ids, then eos), so the
    # trained model translates it: the greedy output is what generate() gives for that source.
    greedy = generate(run.model, [[TOKENIZER.special.bos]], Decoding(greedy=True, max_new_tokens=24),
                      tokenizer=TOKENIZER, sources=[encode_source(TOKENIZER, "red cat sun")])[0]
    expected = TOKENIZER.decode(greedy)
    assert f"--- greedy ---\n{expected}\n" in (tmp_path / "run" / "samples.txt").read_text()
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--source", "red cat sun", "--greedy",
                 "--max-new-tokens", "24"]) == 0
    assert capsys.readouterr().out.strip() == expected


@pytest.mark.slow
def test_span_corruption_loss_falls_on_the_builtin_corpus(tmp_path):
    raw = run_config(tmp_path, data={"name": "builtin", "include": ["topics"], "block_size": 64},
                     tokenizer={"name": "sentencepiece", "vocab_size": 600, "sentinel_tokens": 8,
                                "max_training_chars": 200_000},
                     objective={"name": "span_corruption"}, metrics=["loss", "accuracy"],
                     train={"max_steps": 60, "batch_size": 16, "eval_every": 60, "eval_batches": 2,
                            "sample_tokens": 0, "progress": False, "device": "cpu"})
    run = Run(validate(raw, Catalog.load()), tmp_path / "run")
    before = run.evaluate()["val_loss"]
    summary = run.train()
    assert summary["val_loss"] < 0.7 * before


def test_the_code_summaries_recipe_is_shipped_and_validates_over_the_default_run():
    from pathlib import Path

    from hookformer.core.config import recipes

    assert "code_summaries" in recipes()
    config = validate(compose(Path("code_summaries"), []), Catalog.load())
    assert (config.parts["model"].name, config.parts["objective"].name, config.parts["data"].name) == \
        ("encoder_decoder", "seq2seq", "code_summaries")
    assert [metric.name for metric in config.metrics] == ["loss", "accuracy", "bleu", "rouge"]
