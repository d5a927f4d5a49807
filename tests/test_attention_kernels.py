"""Every attention kernel against the reference (the conformance kit), capability checks, auto selection, document
masks, and the Triton flash kernel in a real training run. On a CPU the Triton kernel runs under TRITON_INTERPRET=1
(conftest)."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from hookformer.core.capabilities import (
    AttentionCall,
    AttentionCapabilities,
    CheckedKernel,
)
from hookformer.core.cli import main
from hookformer.core.errors import HookformerError
from hookformer.core.parts import BuildContext, Shapes
from hookformer.plugins.attention import NAIVE, SDPA, TRITON_FLASH
from hookformer.plugins.attention.auto import AutoKernel
from hookformer.plugins.attention.naive import naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.attention.triton_flash import (
    TritonFlashAttention,
    TritonFlashOptions,
)
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.registry.catalog import Catalog
from hookformer.testing import attention_cases, check_attention_kernel

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
triton_flash = TritonFlashAttention(TritonFlashOptions())


@pytest.mark.parametrize("case", attention_cases(TRITON_FLASH, device=DEVICE), ids=str)
def test_triton_flash_matches_the_reference_in_values_and_gradients(case):
    check_attention_kernel(triton_flash, TRITON_FLASH, case, device=DEVICE)


def test_the_reference_kernel_passes_the_conformance_kit_against_itself_in_fp64():
    cases = attention_cases(NAIVE)
    assert len(cases) > 40
    for case in cases:
        check_attention_kernel(naive_attention, NAIVE, case)


def test_sdpa_passes_the_conformance_kit_through_the_pytest_fixture(attention_conformance):
    assert attention_conformance("sdpa") == len(attention_cases(SDPA))


def test_the_conformance_kit_catches_a_kernel_that_drops_the_causal_mask():
    def forgets_causal(q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None):
        return naive_attention(q, k, v, causal=False, key_padding_mask=key_padding_mask, scale=scale)

    case = next(c for c in attention_cases(NAIVE) if c.causal and c.t_q == 7 and not c.padded)
    with pytest.raises(AssertionError, match="output differs from the reference"):
        check_attention_kernel(forgets_causal, NAIVE, case)


def test_cases_follow_the_claimed_capabilities():
    cases = attention_cases(TRITON_FLASH)
    assert {c.dtype for c in cases} == {"float32", "float16", "bfloat16"}
    assert {c.head_dim for c in cases} == {16, 32, 64}
    assert any(c.t_q != c.t_k and c.causal and c.padded for c in cases)
    assert any(c.t_q == 1 for c in cases) and any(c.t_q == 100 for c in cases)
    no_mask = TRITON_FLASH.model_copy(update={"key_padding_mask": False, "head_dim_min": 32})
    assert not any(c.padded or c.head_dim < 32 for c in attention_cases(no_mask))


def call(**overrides):
    fields = dict(device="cpu", dtype="float32", head_dim=16, t_q=8, t_k=8, causal=True, key_padding_mask=False,
                  dropout=False)
    return AttentionCall(**{**fields, **overrides})


def test_capabilities_give_every_reason_a_call_cannot_run():
    reasons = TRITON_FLASH.not_supported_reasons(call(dtype="float64", head_dim=8, dropout=True))
    assert any("float64" in r for r in reasons)
    assert any("head dim 8 outside 16..128" in r for r in reasons)
    assert any("dropout" in r for r in reasons)
    assert NAIVE.not_supported_reasons(call(dtype="float64", head_dim=8, dropout=True)) == []


def test_triton_flash_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # unset on a CUDA machine
    assert any("TRITON_INTERPRET=1" in r for r in TRITON_FLASH.not_supported_reasons(call()))


def test_an_explicitly_named_kernel_refuses_a_call_it_cannot_run_instead_of_changing_its_meaning():
    checked = CheckedKernel("triton_flash", triton_flash, TRITON_FLASH)
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(HookformerError, match='"triton_flash" cannot run this call.*dropout not supported'):
        checked(q, q, q, causal=True, dropout_p=0.1)
    with pytest.raises(ValueError, match="does not implement attention dropout"):
        triton_flash(q, q, q, dropout_p=0.1)  # even unchecked, dropout is refused, never ignored


def test_a_checked_kernel_compiles_into_the_models_graph_and_still_refuses_under_compile():
    # The check runs while torch.compile traces: remembering the call there broke the graph, and the whole forward
    # fell back to eager.
    catalog = Catalog.load()
    ctx = BuildContext(run_dir=".", catalog=catalog, shapes=Shapes(max_seq_len=16),
                       attention=CheckedKernel("sdpa", sdpa_attention, SDPA))
    entry = catalog.get("model", "transformer")
    model = entry.build(entry.options_model()(n_layer=1, n_head=2, d_model=16, vocab_size=32), ctx)
    explained = torch._dynamo.explain(model)(torch.randint(0, 32, (2, 16)))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)

    refusing = CheckedKernel("triton_flash", triton_flash, TRITON_FLASH)
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(HookformerError, match='"triton_flash" cannot run this call.*dropout not supported'):
        torch.compile(lambda q: refusing(q, q, q, causal=True, dropout_p=0.1), backend="eager")(q)


@pytest.fixture(scope="module")
def auto():
    catalog = Catalog.load()
    return AutoKernel(BuildContext(run_dir=".", catalog=catalog))


def test_auto_picks_the_highest_priority_capable_kernel(auto):
    assert auto.select(call(device="cuda", dtype="bfloat16"))[0] == "triton_flash"
    assert auto.select(call(device="cuda", dtype="float16"))[0] == "triton_flash"
    assert auto.select(call(device="cuda", dtype="bfloat16", dropout=True))[0] == "sdpa"


@pytest.mark.parametrize("interpreter", ["1", None], ids=["interpreter", "no-interpreter"])
def test_auto_leaves_triton_flash_where_another_kernel_is_faster_and_exact(auto, monkeypatch, interpreter):
    # fp32 on CUDA: triton_flash takes IEEE dot products without tensor cores (never silently TF32); on a CPU it
    # is the interpreter. It still runs there when named explicitly.
    if interpreter:
        monkeypatch.setenv("TRITON_INTERPRET", interpreter)
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for fp32_or_cpu in (call(device="cuda", dtype="float32"), call(), call(dtype="bfloat16")):
        assert auto.select(fp32_or_cpu)[0] == "sdpa"
    assert TRITON_FLASH.not_supported_reasons(call(device="cuda", dtype="float32")) == []


def test_auto_with_no_capable_kernel_lists_every_kernels_reasons(auto):
    with pytest.raises(HookformerError) as info:
        auto.select(call(device="mps"))
    message = str(info.value)
    for name in ("naive", "sdpa", "triton_flash"):
        assert f"{name}: device mps not supported" in message


def test_a_third_party_kernel_joins_auto_selection_by_declaring_a_priority(pip_install, make_plugin_package):
    package = make_plugin_package("hookformer-fast-kernel", {"fast_kernel": """
        from hookformer.core.capabilities import AttentionCapabilities
        from hookformer.core.hookspecs import hookimpl
        from hookformer.core.parts import PartSpec


        @hookimpl
        def hookformer_parts():
            return [PartSpec("attention", "fast_fp16", "a kernel for fp16 only", factory="fast_kernel:build",
                             capabilities=AttentionCapabilities(dtypes=frozenset({"float16"})), priority=100)]


        def build(options, ctx):
            from hookformer.plugins.attention.naive import naive_attention
            return naive_attention
        """}, {"fast_kernel": "fast_kernel"})
    script = """
from hookformer.core.capabilities import AttentionCall
from hookformer.core.parts import BuildContext
from hookformer.plugins.attention.auto import AutoKernel
from hookformer.registry.catalog import Catalog
auto = AutoKernel(BuildContext(run_dir=".", catalog=Catalog.load()))
for dtype in ("float16", "float32"):
    print(auto.select(AttentionCall("cpu", dtype, 16, 8, 8, True, False, True))[0])
"""
    done = subprocess.run([sys.executable, "-c", script], env=pip_install(package), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fast_fp16", "sdpa"]


@pytest.mark.slow
def test_training_with_triton_flash_gives_the_losses_of_the_reference_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n\n" for i in range(300)))
    config = {
        "data": {"name": "text", "paths": [str(corpus)], "block_size": 32},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 32, "dropout": 0.0},
        "train": {"max_steps": 4, "batch_size": 4, "eval_every": 4, "eval_batches": 1, "log_every": 1,
                  "sample_tokens": 0, "progress": False, "device": DEVICE},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    losses = {}
    for kernel in ("naive", "triton_flash"):
        run_dir = tmp_path / kernel
        assert main(["train", str(path), "--run-dir", str(run_dir), "--set", f"attention.name={kernel}"]) == 0
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        losses[kernel] = [r["loss"] for r in records if "loss" in r] + [r["val_loss"] for r in records
                                                                         if "val_loss" in r]
    assert len(losses["naive"]) == 5
    assert losses["triton_flash"] == pytest.approx(losses["naive"], rel=1e-4)


def test_a_run_with_a_kernel_that_cannot_run_its_model_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"document {i} about nothing in particular.\n\n" for i in range(200)))
    code = main(["train", "--run-dir", str(tmp_path / "run"), "--set", "tokenizer.name=byte",
                 "--set", f"data={{name: text, paths: [{corpus}], block_size: 16}}", "--set", "model.dropout=0.1",
                 "--set", "model.n_layer=1", "--set", "attention.name=triton_flash"])
    err = capsys.readouterr().err
    assert code == 2 and "dropout not supported" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


KERNELS = {"naive": naive_attention, "sdpa": sdpa_attention, "triton_flash": triton_flash}


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("name", KERNELS)
def test_tokens_of_a_packed_document_get_the_outputs_they_get_alone_in_their_own_sequence(name, causal):
    lengths = [5, 9, 2]
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, sum(lengths), 16, generator=generator).to(DEVICE) for _ in range(3))
    document_ids = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths)).expand(2, -1).to(DEVICE)
    packed = KERNELS[name](q, k, v, causal=causal, document_ids=document_ids)
    start = 0
    for length in lengths:
        alone = slice(start, start + length)
        torch.testing.assert_close(packed[:, :, alone], KERNELS[name](q[:, :, alone], k[:, :, alone], v[:, :, alone],
                                                                      causal=causal))
        start += length


def test_a_kernel_that_does_not_declare_document_masks_refuses_document_ids_and_is_never_given_them():
    def knows_nothing_of_documents(q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None):
        return naive_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)

    checked = CheckedKernel("older", knows_nothing_of_documents, AttentionCapabilities())
    q = torch.randn(1, 2, 8, 16)
    torch.testing.assert_close(checked(q, q, q, causal=True), naive_attention(q, q, q, causal=True))
    with pytest.raises(HookformerError, match='"older" cannot run this call.*document masks not supported.*'
                                              "the data's document masks off"):
        checked(q, q, q, causal=True, document_ids=torch.zeros(1, 8, dtype=torch.long))


def test_a_document_mask_needs_the_queries_to_be_among_the_keys():
    reasons = NAIVE.not_supported_reasons(call(t_q=9, t_k=3, document_mask=True))
    assert reasons == ["a document mask needs T_q <= T_k (got 9 vs 3): document_ids label the keys, and the queries "
                       "are the last T_q of them"]
    assert NAIVE.not_supported_reasons(call(t_q=3, t_k=9, document_mask=True)) == []


def test_auto_routes_a_document_masked_call_to_a_kernel_that_declares_document_masks(auto, monkeypatch):
    no_documents = TRITON_FLASH.model_copy(update={"document_mask": False})
    assert any("document masks not supported" in r for r in no_documents.not_supported_reasons(call(
        document_mask=True)))
    assert auto.select(call(device="cuda", dtype="bfloat16", document_mask=True))[0] == "triton_flash"
    monkeypatch.setattr(auto, "candidates", [e for e in auto.candidates if e.spec.name != "triton_flash"])
    assert auto.select(call(device="cuda", dtype="bfloat16", document_mask=True))[0] == "sdpa"


@pytest.mark.parametrize("causal", [True, False], ids=["decoder", "encoder"])
def test_with_document_ids_no_token_sees_another_document_through_any_layer(causal):
    torch.manual_seed(0)
    model = Transformer(TransformerOptions(n_layer=2, n_head=2, d_model=32, causal=causal), sdpa_attention, 50, 16)
    first, second = torch.randint(0, 50, (1, 6)), torch.randint(0, 50, (1, 10))
    document_ids = torch.tensor([[0] * 6 + [1] * 10])
    packed = model(torch.cat([first, second], 1), document_ids=document_ids)
    other_first = model(torch.cat([torch.randint(0, 50, (1, 6)), second], 1), document_ids=document_ids)
    other_second = model(torch.cat([first, torch.randint(0, 50, (1, 10))], 1), document_ids=document_ids)
    torch.testing.assert_close(packed[:, 6:], other_first[:, 6:])  # the second document never sees the first
    torch.testing.assert_close(packed[:, :6], other_second[:, :6])  # nor the first the second (encoder)
    torch.testing.assert_close(packed[:, :6], model(first))  # the first document starts at position 0: as alone
    unmasked = model(torch.cat([torch.randint(0, 50, (1, 6)), second], 1))
    assert not torch.allclose(unmasked[:, 6:], model(torch.cat([first, second], 1))[:, 6:])
