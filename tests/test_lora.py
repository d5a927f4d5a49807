"""The ``lora`` hook part: low-rank adapters on an imported model (tiny random transformers models built from
configs), trained with the backbone frozen, saved alone with each checkpoint, merged for export."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import CrashAtStep  # noqa: E402
from test_hf_interop import CORPUS, IDS, byte_level_bpe, max_diff, tiny_llama  # noqa: E402

from hookformer.core.cli import main  # noqa: E402
from hookformer.core.config import compose, read_yaml, validate  # noqa: E402
from hookformer.core.generate import load_trained  # noqa: E402
from hookformer.core.loop import Run  # noqa: E402
from hookformer.plugins.hooks.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS  # noqa: E402
from hookformer.registry.catalog import Catalog  # noqa: E402

LORA = {"name": "lora", "rank": 4, "alpha": 8.0, "targets": ["*.attn.qkv", "*.mlp.*"]}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny random Llama, imported: the run every test fine-tunes with adapters."""
    folder = tmp_path_factory.mktemp("lora")
    tiny_llama(folder / "hf", byte_level_bpe())
    assert main(["import", str(folder / "hf"), "--run-dir", str(folder / "base")]) == 0
    (folder / "corpus.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    return folder / "base"


def lora_config(tmp_path: Path, base: Path, lora: dict = LORA, model: dict | None = None, **train) -> Path:
    config = {**({"model": model} if model else {}),
              "data": {"name": "text", "paths": [str(base.parent / "corpus.txt")], "block_size": 16,
                       "val_fraction": 0.2},
              "optimizer": {"name": "adamw", "lr": 5e-2}, "hooks": [lora], "metrics": ["loss"],
              "train": {"init_from": str(base), "max_steps": 3, "batch_size": 4, "eval_every": 3,
                        "eval_batches": 1, "log_every": 1, "progress": False, "sample_tokens": 0, "device": "cpu",
                        **train}}
    path = tmp_path / "lora.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_only_the_adapters_receive_gradients_and_the_base_weights_keep_their_names_and_values(tmp_path, base):
    from safetensors.torch import load_file

    run = Run(validate(compose(lora_config(tmp_path, base), []), Catalog.load()), tmp_path / "run")
    imported = load_file(str(base / "checkpoints" / "step_000000" / "model.safetensors"))
    own = run.model.state_dict()
    assert all(torch.equal(own[name], tensor) for name, tensor in imported.items())  # names unchanged, loaded
    adapters = {name for name in own if name not in imported}
    assert adapters == {f"blocks.{i}.{layer}.{ab}" for i in range(2) for layer in ("attn.qkv", "mlp.gate", "mlp.fc",
                                                                                   "mlp.proj") for ab in ("lora_A",
                                                                                                          "lora_B")}
    run.train_step()  # the step clears the gradients: take them from the loss of one batch instead
    run.model.train()
    from hookformer.core.objective import compute
    from hookformer.core.sampler import table_rows

    compute(run.objective, run.model, run._batch(table_rows(run.val_table, slice(0, 2)))).loss_sum.backward()
    with_grad = {name for name, p in run.model.named_parameters() if p.grad is not None}
    assert with_grad == adapters
    assert all(torch.equal(run.model.state_dict()[name], tensor) for name, tensor in imported.items())
    assert any(run.model.state_dict()[name].abs().sum() > 0 for name in adapters if name.endswith("lora_B"))


def test_a_lora_run_crashed_after_a_checkpoint_resumes_to_the_same_losses_and_adapters(tmp_path, base):
    config = lora_config(tmp_path, base, {**LORA, "dropout": 0.2}, max_steps=4, checkpoint_every=2)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "full")]) == 0
    crashed = Run(validate(compose(config, []), Catalog.load()), tmp_path / "crashed")
    crashed.assembly.register(CrashAtStep(3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert main(["train", "--resume", str(tmp_path / "crashed")]) == 0
    assert losses(tmp_path / "crashed") == losses(tmp_path / "full")
    for step in ("step_000002", "step_000004"):
        full, resumed = (tmp_path / run / "checkpoints" / step / ADAPTER_WEIGHTS for run in ("full", "crashed"))
        assert full.read_bytes() == resumed.read_bytes()


def test_the_adapter_file_holds_the_adapters_alone_and_restarts_them_in_a_fresh_model_with_equal_logits(tmp_path,
                                                                                                        base):
    from safetensors.torch import load_file

    assert main(["train", str(lora_config(tmp_path, base)), "--run-dir", str(tmp_path / "tuned")]) == 0
    saved = tmp_path / "tuned" / "checkpoints" / "step_000003"
    adapters = load_file(str(saved / ADAPTER_WEIGHTS))
    assert adapters and all(name.endswith((".lora_A", ".lora_B")) for name in adapters)
    assert json.loads((saved / ADAPTER_CONFIG).read_text()) | {"modules": None} == {
        "kind": "lora", "rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": LORA["targets"], "modules": None,
        "step": 3}
    tuned = load_trained(tmp_path / "tuned", validate(read_yaml(tmp_path / "tuned" / "config.yaml"),
                                                      Catalog.load()))[1]
    # A new run from the base with the adapters read from the file starts from the model the LoRA run trained.
    config = lora_config(tmp_path, base, {**LORA, "adapters_from": str(saved)})
    restarted = Run(validate(compose(config, []), Catalog.load()), tmp_path / "restarted").model.eval()
    plain = load_trained(base, validate(read_yaml(base / "config.yaml"), Catalog.load()))[1]
    with torch.no_grad():
        assert max_diff(restarted(IDS), tuned(IDS)) == 0.0
        assert max_diff(plain(IDS), tuned(IDS)) > 1e-3  # the adapters changed what the model computes


def test_export_of_a_lora_run_writes_merged_weights_transformers_loads_with_the_unmerged_logits(tmp_path, base,
                                                                                                 monkeypatch, capsys):
    assert main(["train", str(lora_config(tmp_path, base, {**LORA, "dropout": 0.1})), "--run-dir",
                 str(tmp_path / "tuned")]) == 0
    config = validate(read_yaml(tmp_path / "tuned" / "config.yaml"), Catalog.load())
    unmerged = load_trained(tmp_path / "tuned", config)[1]
    assert main(["export", str(tmp_path / "tuned"), "--format", "hf", str(tmp_path / "out")]) == 0
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    original = transformers.AutoModelForCausalLM.from_pretrained(base.parent / "hf").eval()
    with torch.no_grad():
        assert max_diff(unmerged(IDS), theirs(IDS).logits) < 1e-5
        assert max_diff(original(IDS).logits, theirs(IDS).logits) > 1e-3
    # evaluate and generate rebuild the run with its adapters (through its hook parts), like export.
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "tuned"), "--examples", "4"]) == 0
    assert main(["generate", str(tmp_path / "tuned"), "--prompt", "the", "--greedy", "--max-new-tokens", "4"]) == 0

    # Merged in memory by the hook part: the same outputs, with the model part's own tensors only.
    from hookformer.core import checkpoint
    from hookformer.core.assemble import Assembly

    path = checkpoint.latest(tmp_path / "tuned")
    assembly = Assembly(config, tmp_path / "tuned", checkpoint=path)
    model = assembly.model().eval()
    checkpoint.load_pretrained(path, model)
    with torch.no_grad():
        unmerged_logits = model(IDS)
        assembly.emit("export_model", model=model)
        assert max_diff(model(IDS), unmerged_logits) < 1e-5
    assert not any("lora" in name for name in model.state_dict())

    # A hook part that left its tensors in the model at export would write another model: refused, nothing written.
    from hookformer.plugins.hooks.lora import Lora

    monkeypatch.delattr(Lora, "hookformer_export_model")
    assert main(["export", str(tmp_path / "tuned"), "--format", "hf", str(tmp_path / "out2")]) == 2
    assert "no place for the model tensors blocks.0.attn.qkv.lora_A" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("lora, train, message", [
    ({**LORA, "targets": ["*.attn.qkv", "*.attn.query"]}, {},
     ('targets[1] "*.attn.query" matches no linear layer of the model; its linear layers are: blocks.*.attn.proj, '
      "blocks.*.attn.qkv, blocks.*.mlp.fc")),
    (LORA, {"freeze_backbone": True}, "train.freeze_backbone would freeze the adapters too"),
    ({**LORA, "adapters_from": "no-such-folder"}, {}, "adapters_from: cannot read no-such-folder/adapter_model"),
    ({**LORA, "targets": ["*"]}, {"model": {"tie_embeddings": True}},
     "targets match lm_head, whose weight is also tok_emb.weight (tied)"),
])
def test_a_lora_target_matching_nothing_a_frozen_backbone_or_missing_adapters_are_refused_with_exit_code_2(
        tmp_path, base, capsys, lora, train, message):
    assert main(["train", str(lora_config(tmp_path, base, lora, **train)), "--run-dir", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_fine_tuning_from_a_hugging_face_directory_with_init_from_equals_fine_tuning_its_imported_run(tmp_path,
                                                                                                       base):
    hf_dir = base.parent / "hf"
    for name, init_from in (("from_run", base), ("from_hf", hf_dir)):
        config = lora_config(tmp_path, base, LORA, init_from=str(init_from))
        assert main(["train", str(config), "--run-dir", str(tmp_path / name)]) == 0
    assert losses(tmp_path / "from_hf") == losses(tmp_path / "from_run")
    weights = [(tmp_path / name / "checkpoints" / "step_000003" / "model.safetensors").read_bytes()
               for name in ("from_run", "from_hf")]
    assert weights[0] == weights[1]
    assert not (tmp_path / "from_hf" / ".init_from").exists()  # the imported copy is gone once loaded
    saved = read_yaml(tmp_path / "from_hf" / "config.yaml")
    assert saved["train"]["init_from"] == str(hf_dir) and saved["model"] == read_yaml(base / "config.yaml")["model"]
