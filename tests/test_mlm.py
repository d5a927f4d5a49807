"""Masked language modeling: which tokens are selected and how, and that a bidirectional encoder learns from it."""

import json

import pytest
import torch
import yaml
from hookformer.core.cli import main
from hookformer.core.objective import compute
from hookformer.core.parts import BuildContext
from hookformer.plugins.objectives.mlm import IGNORE, MaskedLM, MLMOptions
from hookformer.plugins.tokenizers.byte import ByteTokenizerOptions
from hookformer.plugins.tokenizers.byte import build as build_byte_tokenizer

TOKENIZER = build_byte_tokenizer(ByteTokenizerOptions(), BuildContext(run_dir="."))
SPECIAL = TOKENIZER.special


def objective(**options) -> MaskedLM:
    return MaskedLM(MLMOptions(**options), TOKENIZER.vocab_size, SPECIAL.ids(), SPECIAL.mask)


def sample_batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (64, 512), generator=generator)
    ids[:, 0] = SPECIAL.bos
    ids[:, 100::97] = SPECIAL.eos
    attention_mask = torch.ones_like(ids, dtype=torch.bool)
    attention_mask[::2, 400:] = False
    ids[~attention_mask] = SPECIAL.pad
    return ids, attention_mask


def test_mlm_selects_15_percent_and_replaces_80_10_10():
    ids, attention_mask = sample_batch()
    torch.manual_seed(1)
    inputs, targets = objective().mask(ids, attention_mask)
    selected = targets != IGNORE
    regular = attention_mask & ~torch.isin(ids, torch.tensor(sorted(SPECIAL.ids())))
    assert selected.sum() / regular.sum() == pytest.approx(0.15, abs=0.005)
    masked = (inputs == SPECIAL.mask) & selected
    unchanged = (inputs == ids) & selected
    replaced = selected & ~masked & ~unchanged
    n = selected.sum()
    assert masked.sum() / n == pytest.approx(0.8, abs=0.01)
    # A random replacement that draws the original token counts as unchanged (1 in 256 here).
    assert replaced.sum() / n == pytest.approx(0.1 * 255 / 256, abs=0.01)
    assert unchanged.sum() / n == pytest.approx(0.1 + 0.1 / 256, abs=0.01)
    assert not torch.isin(inputs[replaced], torch.tensor(sorted(SPECIAL.ids()))).any()


def test_mlm_never_selects_special_or_padding_tokens_and_scores_only_selected_positions():
    ids, attention_mask = sample_batch()
    inputs, targets = objective().mask(ids, attention_mask)
    selected = targets != IGNORE
    assert not selected[~attention_mask].any()
    assert not torch.isin(ids[selected], torch.tensor(sorted(SPECIAL.ids()))).any()
    assert torch.equal(inputs[~selected], ids[~selected])
    assert torch.equal(targets[selected], ids[selected])


def test_mlm_evaluation_masks_are_the_same_every_time():
    class Identity(torch.nn.Module):
        def forward(self, ids, attention_mask=None):
            return torch.nn.functional.one_hot(ids, TOKENIZER.vocab_size).float()

    model = Identity().eval()
    ids, attention_mask = sample_batch()
    mlm = objective()
    first = compute(mlm, model, {"input_ids": ids, "attention_mask": attention_mask})
    second = compute(mlm, model, {"input_ids": ids, "attention_mask": attention_mask})
    assert torch.equal(first.targets, second.targets) and first.num_items == second.num_items


def test_mlm_options_refuse_shares_above_one():
    with pytest.raises(ValueError, match="at most 1"):
        MLMOptions(replace_with_mask=0.9, replace_with_random=0.2)


def test_a_bidirectional_encoder_learns_masked_language_modeling(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the cat sat on the mat number {i % 10}.\n\n" for i in range(400)))
    config = {
        "data": {"name": "text", "paths": [str(corpus)], "block_size": 32},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "causal": False, "n_layer": 1, "n_head": 2, "d_model": 64},
        "objective": {"name": "mlm"},
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "scheduler": {"name": "constant", "warmup_steps": 5},
        "train": {"max_steps": 60, "batch_size": 16, "eval_every": 60, "eval_batches": 4, "log_every": 1,
                  "sample_tokens": 0, "progress": False, "device": "cpu"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    final = next(r for r in records if "val_loss" in r)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5
    assert final["val_loss"] < records[0]["unigram_val_loss"]
