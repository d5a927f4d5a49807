"""Objective ``electra`` (plugins/objectives/electra.py): replaced-token detection with a generator that the run
owns, saves and resumes, and a discriminator that fine-tuning starts from."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from hookformer.core import checkpoint
from hookformer.core.cli import main
from hookformer.core.config import resolve_part
from hookformer.core.errors import ConfigError
from hookformer.core.objective import compute
from hookformer.core.parts import BuildContext, Shapes
from hookformer.plugins.objectives.electra import GENERATOR_HEAD, Electra
from hookformer.plugins.objectives.mlm import IGNORE
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.registry.catalog import Catalog

BYTE = ByteTokenizer()
#: Every option that decides the weights' names is given: the test builds the encoder from this dict alone, while the
#: run layers it over the default recipe.
ENCODER = {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 32, "causal": False, "positions": "learned",
           "norm": "layernorm", "mlp": "gelu", "qk_norm": False, "bias": True}


@pytest.fixture(scope="module")
def catalog():
    return Catalog.load()


def build(catalog, objective: dict, model: dict = ENCODER):
    """(model, objective) built from their config sections as the engine builds them, for the byte tokenizer."""
    ctx = BuildContext(run_dir=Path("."), tokenizer=BYTE, shapes=Shapes(BYTE.vocab_size, 64), catalog=catalog)
    attention = resolve_part("attention", "attention", {"name": "sdpa"}, catalog).build(ctx)
    ctx = BuildContext(**{**ctx.__dict__, "attention": attention})
    built_model = resolve_part("model", "model", model, catalog).build(ctx)
    ctx = BuildContext(**{**ctx.__dict__, "model": built_model})
    return built_model, ctx.build("objective", {"name": "electra", **objective}, "objective")


def batch() -> dict:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (8, 64), generator=generator)
    ids[:, 0] = BYTE.special.cls
    attention_mask = torch.ones_like(ids)
    attention_mask[::2, 48:] = 0
    ids[attention_mask == 0] = BYTE.special.pad
    return {"input_ids": ids, "attention_mask": attention_mask}


def test_electra_conforms_to_the_objective_kit(objective_conformance):
    objective_conformance("electra", {"generator_d_model": 8}, model={**ENCODER, "d_model": 16})


def test_the_generators_samples_replace_only_masked_tokens_and_the_labels_say_which_changed(catalog):
    torch.manual_seed(0)
    model, electra = build(catalog, {"generator_d_model": 16})
    assert isinstance(electra, Electra)
    original = batch()
    model.train()
    out = electra.transform(original, training=True)
    ids, corrupted, labels, targets = original["input_ids"], out["input_ids"], out["electra_labels"], \
        out["electra_targets"]
    selected = targets != IGNORE
    real = original["attention_mask"].bool()
    assert torch.equal(corrupted[~selected], ids[~selected])  # only masked positions can change
    assert torch.equal(targets[selected], ids[selected])
    assert not torch.isin(corrupted[selected], torch.tensor(sorted(BYTE.special.ids()))).any()
    assert torch.equal(labels[real], (corrupted != ids)[real].long())  # a sample equal to the original is original
    assert (labels[~real] == IGNORE).all()
    assert 0 < int(labels[real].sum()) <= int(selected.sum())
    assert out["electra_generator_logits"].shape == (8, 64, BYTE.vocab_size)


def test_the_loss_is_weighted_detection_plus_generator_loss_over_mask_prob_summed_over_tokens(catalog):
    torch.manual_seed(0)
    model, electra = build(catalog, {"generator_d_model": 16, "discriminator_weight": 50.0, "mask_prob": 0.2})
    model.eval()
    with torch.no_grad():
        out = electra.transform(batch(), training=False)
        result = electra.score(model(out["input_ids"], out["attention_mask"], heads=["electra"]), out)
        detection = model(out["input_ids"], out["attention_mask"], heads=["electra"])["electra"]
    real = out["electra_labels"] != IGNORE
    bce = F.binary_cross_entropy_with_logits(detection[real], out["electra_labels"][real].float(), reduction="sum")
    logits, targets = out["electra_generator_logits"], out["electra_targets"]
    ce = F.cross_entropy(logits[targets != IGNORE], targets[targets != IGNORE], reduction="sum")
    torch.testing.assert_close(result.loss_sum, 50.0 * bce + ce / 0.2)
    assert result.num_items == int(real.sum())
    assert result.parts["generator"].num_items == int((targets != IGNORE).sum())
    torch.testing.assert_close(result.parts["discriminator"].loss_sum, bce)
    # The metrics see the detection as two classes: accuracy is the replaced-token detection accuracy.
    assert torch.equal(result.logits.argmax(-1)[real], (detection[real] > 0).long())


def test_generator_is_a_saved_head_that_shares_the_token_embedding_and_both_networks_learn(catalog):
    torch.manual_seed(0)
    model, electra = build(catalog, {"generator_d_model": 16, "generator_n_layer": 1})
    generator = model.heads[GENERATOR_HEAD]
    assert electra.generator is generator and generator._embedding[0] is model.tok_emb
    names = dict(model.named_parameters())
    assert not any(p.shape == model.tok_emb.weight.shape for n, p in names.items() if n.startswith("heads."))
    assert any(name.startswith(f"heads.{GENERATOR_HEAD}.blocks.") for name in model.state_dict())
    model.train()
    compute(electra, model, batch()).loss_sum.backward()
    for prefix in (f"heads.{GENERATOR_HEAD}.", "heads.electra.", "blocks.", "tok_emb."):
        grads = [p.grad for n, p in names.items() if n.startswith(prefix)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix
    # The generator's own loss reaches the shared embedding: it is tied to its output projection.
    model.zero_grad()
    out = electra.transform(batch(), training=True)
    logits, targets = out["electra_generator_logits"], out["electra_targets"]
    F.cross_entropy(logits.reshape(-1, BYTE.vocab_size), targets.reshape(-1), ignore_index=IGNORE).backward()
    assert model.tok_emb.weight.grad.abs().sum() > 0 and model.heads["electra"].out.weight.grad is None


def test_a_generator_wider_than_the_discriminator_is_refused(catalog):
    with pytest.raises(ConfigError, match=r"objective.generator_d_model \(64\) is wider than the discriminator "
                                          r"\(model.d_model = 32\).*at most 32"):
        build(catalog, {"generator_d_model": 64})
    with pytest.raises(ConfigError, match="generator of 16 wide with 3 heads does not fit"):
        build(catalog, {"generator_d_model": 16, "generator_n_head": 3})


def electra_config(tmp_path: Path, corpus: Path, objective: dict | None = None, **train) -> Path:
    config = {
        "data": {"name": "text", "paths": [str(corpus)], "block_size": 32},
        "tokenizer": {"name": "byte"},
        "model": {**ENCODER, "dropout": 0.0},
        "objective": {"name": "electra", "generator_d_model": 16, **(objective or {})},
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "scheduler": {"name": "constant", "warmup_steps": 2},
        "metrics": ["loss", "accuracy"], "hooks": [],
        "train": {"max_steps": 6, "batch_size": 8, "eval_every": 3, "eval_batches": 2, "log_every": 1,
                  "checkpoint_every": 3, "sample_tokens": 0, "progress": False, "device": "cpu", **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_command_line_refuses_a_wider_generator_with_exit_code_2_and_writes_nothing(tmp_path, docs_corpus,
                                                                                      capsys):
    code = main(["train", str(electra_config(tmp_path, docs_corpus, {"generator_d_model": 64})),
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "objective.generator_d_model (64) is wider than the discriminator (model.d_model = 32)" in err
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_an_electra_run_resumes_its_generator_exactly_and_fine_tuning_starts_from_the_discriminator(
        tmp_path, docs_corpus, monkeypatch):
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", str(electra_config(tmp_path, docs_corpus)), "--run-dir", str(run)]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"val_loss_generator", "val_loss_discriminator", "val_accuracy"} <= set(history[-1])
    checkpoint_dir = run / "checkpoints" / "step_000006"
    weights = load_file(str(checkpoint_dir / checkpoint.WEIGHTS))
    assert any(name.startswith(f"heads.{GENERATOR_HEAD}.") for name in weights)
    # Resumed from step 3, steps 4-6 give the same bits, generator included (its masks and samples come from
    # the restored RNG).
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    assert main(["train", "--resume", str(resumed), "--checkpoint", "step_000003"]) == 0
    again = load_file(str(resumed / "checkpoints" / "step_000006" / checkpoint.WEIGHTS))
    assert weights.keys() == again.keys()
    for name in weights:
        assert torch.equal(weights[name], again[name]), name
    # Fine-tuning loads the discriminator and leaves both ELECTRA heads behind.
    torch.manual_seed(0)
    ctx = BuildContext(run_dir=tmp_path, tokenizer=BYTE, shapes=Shapes(BYTE.vocab_size, 32), catalog=Catalog.load())
    attention = resolve_part("attention", "attention", {"name": "sdpa"}, ctx.catalog).build(ctx)
    encoder = resolve_part("model", "model", {**ENCODER, "dropout": 0.0}, ctx.catalog).build(
        BuildContext(**{**ctx.__dict__, "attention": attention}))
    fresh, unused = checkpoint.load_pretrained(checkpoint_dir, encoder)
    assert fresh == [] and sorted(unused) == sorted(["heads.electra", f"heads.{GENERATOR_HEAD}"])
    own = encoder.state_dict()
    backbone = [name for name in weights if not name.startswith("heads.")]
    assert backbone  # (the tied embedding and output projection are saved under one name)
    for name in backbone:
        assert torch.equal(own[name], weights[name]), name


@pytest.mark.slow
def test_electras_loss_falls_on_a_small_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the cat sat on the mat number {i % 10}.\n\n" for i in range(400)))
    config = electra_config(tmp_path, corpus, max_steps=60, eval_every=60, checkpoint_every=60)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in history if "loss" in r]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5


@pytest.mark.slow
def test_the_electra_vs_mlm_benchmark_pretrains_both_at_equal_flops_and_fine_tunes_them(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "electra_vs_mlm.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--root", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith(("| electra ", "| mlm "))]
    assert [row[1].strip() for row in rows] == ["electra", "mlm"]
    assert "ratio" in done.stdout and "electra - mlm, final areas val accuracy" in done.stdout
