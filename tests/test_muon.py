"""Optimizer ``muon``: Muon on the hidden matrices, AdamW on the rest, one optimizer that resumes exactly."""

import copy
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import CrashAtStep
from hookformer.core.cli import main
from hookformer.core.config import compose, validate
from hookformer.core.loop import Run
from hookformer.core.params import check_optimizer, param_groups
from hookformer.core.parts import BuildContext
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.plugins.optimizers.muon import MuonOptions, build, orthogonalize
from hookformer.registry.catalog import Catalog


def tiny_model(seed=0):
    torch.manual_seed(seed)
    options = TransformerOptions(n_layer=2, n_head=2, d_model=16, tie_embeddings=False, positions="rope",
                                 norm="rmsnorm", mlp="swiglu")
    return Transformer(options, sdpa_attention, vocab_size=20, max_seq_len=8)


def muon_for(model, head_lr=None, **options):
    ctx = BuildContext(run_dir=None, model=model, param_groups=param_groups(model, head_lr))
    return build(MuonOptions(**options), ctx)


def batches(steps):
    return torch.randint(0, 20, (steps, 2, 8), generator=torch.Generator().manual_seed(0))


def train(model, optimizer, ids_per_step):
    for ids in ids_per_step:
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def reference_newton_schulz(g, steps):
    """x <- a x + b (x x^T) x + c (x x^T)^2 x from x = g / |g|_F, on the wide orientation, in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double()
    x = x.T if g.shape[0] > g.shape[1] else x
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + b * gram @ x + c * gram @ gram @ x
    return (x.T if g.shape[0] > g.shape[1] else x).float()


def test_muon_trains_hidden_matrices_and_adamw_the_embeddings_head_norms_and_biases():
    model = tiny_model()
    optimizer = muon_for(model, weight_decay=0.1)
    check_optimizer(optimizer, model, None, "muon")  # every trainable parameter, once
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.param_groups if g["muon"] for p in g["params"]}
    assert muon == {f"blocks.{i}.{layer}.weight" for i in range(2)
                    for layer in ("attn.qkv", "attn.proj", "mlp.gate", "mlp.fc", "mlp.proj")}
    adamw = {(names[id(p)], g["weight_decay"]) for g in optimizer.param_groups if not g["muon"] for p in g["params"]}
    assert ("lm_head.weight", 0.1) in adamw and ("tok_emb.weight", 0.0) in adamw and ("norm.weight", 0.0) in adamw


def test_task_heads_keep_train_head_lr():
    model = tiny_model()
    model.add_head("cls", torch.nn.Linear(16, 3))
    check_optimizer(muon_for(model, head_lr=0.5), model, 0.5, "muon")


@pytest.mark.parametrize("shape, nesterov", [((4, 6), True), ((6, 4), False)], ids=["wide-nesterov", "tall"])
def test_muon_update_of_a_matrix_equals_the_written_out_newton_schulz_reference(shape, nesterov):
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(shape))
    groups = ({"params": [weight], "decay": True},)
    model = torch.nn.Module()
    model.weight = weight
    optimizer = build(MuonOptions(lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.5),
                      BuildContext(run_dir=None, model=model, param_groups=groups))
    expected, buffer = weight.detach().clone(), torch.zeros(shape)
    for _ in range(2):
        grad = torch.randn(shape)
        weight.grad = grad.clone()
        optimizer.step()
        buffer = 0.9 * buffer + 0.1 * grad
        direction = 0.1 * grad + 0.9 * buffer if nesterov else buffer
        scale = math.sqrt(max(1, shape[0] / shape[1]))
        expected = expected * (1 - 0.1 * 0.5) - 0.1 * scale * reference_newton_schulz(direction, 5)
    # Muon iterates in bfloat16 (as the reference implementations do): within 4% of the update's scale of the exact
    # iteration; a wrong weight decay (5% of the weights), momentum or scale (sqrt(1.5) when tall) is much further.
    torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=0.1 * 0.04)


def test_newton_schulz_brings_every_singular_value_near_1():
    singular = torch.linalg.svdvals(orthogonalize(torch.randn(16, 48) * 3, 5).float())
    assert singular.min() > 0.5 and singular.max() < 1.5


def same_params_in(model, reference_model, groups):
    """``groups`` with each parameter of ``model`` replaced by the one of the same name in ``reference_model``."""
    names = {id(p): n for n, p in model.named_parameters()}
    reference = dict(reference_model.named_parameters())
    return [{**g, "params": [reference[names[id(p)]] for p in g["params"]]} for g in groups]


class Both:
    """The pair of optimizers torch's Muon documentation recommends, stepped together."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    def zero_grad(self):
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this torch has no torch.optim.Muon")
def test_muon_steps_as_torch_optim_muon_on_the_matrices_plus_torch_optim_adamw_on_the_rest():
    model = tiny_model()
    reference_model = copy.deepcopy(model)
    optimizer = muon_for(model, lr=0.03, adam_lr=0.01, weight_decay=0.1, betas=(0.8, 0.9))
    groups = [{"params": g["params"], "lr": g["lr"], "weight_decay": g["weight_decay"]}
              for g in optimizer.param_groups]
    is_muon = [g["muon"] for g in optimizer.param_groups]
    assert {g["weight_decay"] for g, m in zip(groups, is_muon) if not m} == {0.0, 0.1}  # the untied head decays
    mapped = same_params_in(model, reference_model, groups)
    reference = Both(torch.optim.Muon([g for g, m in zip(mapped, is_muon) if m], momentum=0.95),
                     torch.optim.AdamW([g for g, m in zip(mapped, is_muon) if not m], betas=(0.8, 0.9), eps=1e-8))
    train(model, optimizer, batches(3))
    train(reference_model, reference, batches(3))
    for (name, a), b in zip(model.state_dict().items(), reference_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resuming_from_the_optimizer_state_dict_gives_the_uninterrupted_run_bit_for_bit():
    data = batches(4)
    straight = tiny_model()
    train(straight, muon_for(straight, weight_decay=0.1), data)

    first = tiny_model()
    optimizer = muon_for(first, weight_decay=0.1)
    train(first, optimizer, data[:2])
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved)
    resumed = tiny_model(seed=1)
    resumed.load_state_dict(state["model"])
    optimizer = muon_for(resumed, weight_decay=0.1)
    optimizer.load_state_dict(state["optimizer"])
    train(resumed, optimizer, data[2:])
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), name



def losses(run_dir) -> tuple[list[float], list[float]]:
    """The training losses at steps 1, 2, ... and the validation losses of a run."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r], [r["val_loss"] for r in records if "val_loss" in r]


def test_a_hookformer_run_with_muon_wsd_and_a_modern_decoder_has_finite_losses_and_resumes_exactly(tmp_path,
                                                                                                    docs_corpus):
    config = {
        "data": {"name": "text", "paths": [str(docs_corpus)], "block_size": 16},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16, "positions": "rope",
                  "norm": "rmsnorm", "mlp": "swiglu", "n_kv_head": 1, "qk_norm": True, "tie_embeddings": False,
                  "logit_softcap": 30.0},
        "optimizer": {"name": "muon", "weight_decay": 0.1},
        "scheduler": {"name": "wsd", "warmup_steps": 1, "decay_fraction": 0.5},
        "hooks": [],
        "train": {"max_steps": 6, "batch_size": 2, "eval_every": 3, "eval_batches": 1, "log_every": 1,
                  "checkpoint_every": 3, "sample_tokens": 0, "progress": False, "device": "cpu"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--run-dir", str(tmp_path / "full")]) == 0
    full = losses(tmp_path / "full")
    assert len(full[0]) == 6 and len(full[1]) == 2 and all(map(math.isfinite, full[0] + full[1]))

    crashed = Run(validate(compose(path, []), Catalog.load()), tmp_path / "crashed")
    crashed.assembly.register(CrashAtStep(5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert main(["train", "--resume", str(tmp_path / "crashed")]) == 0
    assert losses(tmp_path / "crashed") == full
