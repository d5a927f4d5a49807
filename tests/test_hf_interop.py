"""Hugging Face models in and out (hookformer import / export, the hf_tokenizer part), checked against transformers
and tokenizers themselves on tiny random models built here from configs (nothing is downloaded)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from hookformer.core.cli import main  # noqa: E402
from hookformer.core.config import read_yaml, validate  # noqa: E402
from hookformer.core.generate import load_trained  # noqa: E402
from hookformer.registry.catalog import Catalog  # noqa: E402

MIXED_TEXT = "Hello world, the model reads text.\n中文的句子也在这里。\ndef f(x):\n    return x ** 2  # 😀🚀\n"
CORPUS = [MIXED_TEXT, "The quick brown fox jumps over the lazy dog.", "你好世界，今天天气很好。",
          "for i in range(10):\n    print(i, i * i)", "emoji 🎉🎉 party 🐍 python"] * 20
IDS = torch.tensor([[5, 17, 42, 99, 3, 150, 7, 8, 250, 11, 12, 64], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])


def byte_level_bpe(vocab_size: int = 300) -> "tokenizers.Tokenizer":
    """A GPT-2 style byte-level BPE trained on the small mixed-script corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def wordpiece() -> "tokenizers.Tokenizer":
    """A BERT style WordPiece trained on the same corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    return tok


def save_hf(model, tok, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def tiny_gpt2(folder: Path, tok) -> "transformers.GPT2LMHeadModel":
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                     eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    save_hf(model, tok, folder)
    return model


def tiny_llama(folder: Path, tok, **overrides) -> "transformers.LlamaForCausalLM":
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=32, rope_theta=500.0, bos_token_id=0,
                                      eos_token_id=0, **overrides)
    model = transformers.LlamaForCausalLM(config).eval()
    save_hf(model, tok, folder)
    return model


def tiny_qwen3(folder: Path, tok, **overrides) -> "transformers.Qwen3ForCausalLM":
    torch.manual_seed(0)
    config = transformers.Qwen3Config(**{
        "vocab_size": tok.get_vocab_size(), "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 32,
        "rope_theta": 500.0, "bos_token_id": 0, "eos_token_id": 0, **overrides})
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():  # random QK-norm weights (initialised to ones), so that their RoPE permutation is tested
        for name, param in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                param.normal_(1.0, 0.5)
    save_hf(model, tok, folder)
    return model


DECODERS = {"gpt2": tiny_gpt2, "llama": tiny_llama,
            "qwen3_tied": lambda folder, tok: tiny_qwen3(folder, tok, tie_word_embeddings=True),
            "qwen3_untied": lambda folder, tok: tiny_qwen3(folder, tok, tie_word_embeddings=False)}


def tiny_bert(folder: Path, tok, masked_lm: bool) -> "transformers.BertModel":
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=32,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
    model = (transformers.BertForMaskedLM if masked_lm else transformers.BertModel)(config).eval()
    with torch.no_grad():  # random segment 0 rows and norms, so that folding and post-norm are really tested
        for name, param in model.named_parameters():
            if "LayerNorm" in name or "token_type" in name or name.endswith("predictions.bias"):
                param.normal_(0.5 if name.endswith("LayerNorm.weight") else 0.0, 0.2)
    save_hf(model, tok, folder)
    return model


def imported(tmp_path: Path, hf_dir: Path) -> tuple[Path, torch.nn.Module]:
    run_dir = tmp_path / "run"
    assert main(["import", str(hf_dir), "--run-dir", str(run_dir)]) == 0
    config = validate(read_yaml(run_dir / "config.yaml"), Catalog.load())
    return run_dir, load_trained(run_dir, config)[1]


@pytest.fixture(scope="module")
def bpe():
    return byte_level_bpe()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def one_step_losses(model, ids: torch.Tensor, loss_of) -> list[float]:
    """The loss, then the loss after one SGD step on it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(2):
        loss = loss_of(model, ids)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses


def hf_loss(model, ids):
    return model(ids, labels=ids).loss


def our_loss(model, ids):
    logits = model(ids)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


@pytest.mark.parametrize("family", DECODERS)
def test_an_imported_decoder_gives_transformers_logits_and_trains_the_same(tmp_path, bpe, family):
    hf = DECODERS[family](tmp_path / "hf", bpe)
    run_dir, ours = imported(tmp_path, tmp_path / "hf")
    with torch.no_grad():
        theirs = hf(IDS, output_hidden_states=True)
        assert max_diff(ours(IDS), theirs.logits) < 1e-4
        assert max_diff(ours.hidden_states(IDS), theirs.hidden_states[-1]) < 1e-4
    ours.train(), hf.train()
    assert one_step_losses(ours, IDS, our_loss) == pytest.approx(one_step_losses(hf, IDS, hf_loss), abs=1e-4)


def test_a_gpt2_saved_from_its_base_model_with_mask_buffers_imports_as_the_hub_checkpoint_does(tmp_path, bpe):
    from safetensors.torch import load_file, save_file

    hf = tiny_gpt2(tmp_path / "hf", bpe)
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    hub_layout = {name.removeprefix("transformer."): tensor for name, tensor in weights.items()}
    hub_layout.update({f"h.{i}.attn.bias": torch.ones(1, 1, 32, 32).tril() for i in range(2)})
    save_file(hub_layout, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    _, ours = imported(tmp_path, tmp_path / "hf")
    with torch.no_grad():
        assert max_diff(ours(IDS), hf(IDS).logits) < 1e-4


def test_an_imported_run_reuses_the_hf_tokenizer_and_generates(tmp_path, bpe, capsys):
    tiny_gpt2(tmp_path / "hf", bpe)
    run_dir, _ = imported(tmp_path, tmp_path / "hf")
    assert (run_dir / "tokenizer" / "tokenizer.json").read_bytes() == (tmp_path / "hf" / "tokenizer.json").read_bytes()
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--prompt", "Hello", "--tokens", "5", "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("Hello")


SEGMENTS = torch.tensor([[0] * 6 + [1] * 6, [0] * 12])
MASK = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])


def first_output_loss(out: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """A loss on an encoder's (B, T, C) output: cross-entropy of each position's C values against its id mod C."""
    return torch.nn.functional.cross_entropy(out.flatten(0, 1), ids.flatten() % out.shape[-1])


def test_an_imported_bert_gives_transformers_outputs_trains_the_same_and_exports_back(tmp_path):
    tok = wordpiece()
    encoder = tiny_bert(tmp_path / "encoder", tok, masked_lm=False)
    masked_lm = tiny_bert(tmp_path / "mlm", tok, masked_lm=True)
    ids = IDS % tok.get_vocab_size()
    for name, hf in (("encoder", encoder), ("mlm", masked_lm)):
        run_dir = tmp_path / f"run-{name}"
        assert main(["import", str(tmp_path / name), "--run-dir", str(run_dir)]) == 0
        config = validate(read_yaml(run_dir / "config.yaml"), Catalog.load())
        from hookformer.core import checkpoint
        from hookformer.core.assemble import Assembly

        path = checkpoint.latest(run_dir)
        ours = Assembly(config, run_dir, checkpoint=path).model().eval()
        checkpoint.load_pretrained(path, ours)
        for segments in (None, SEGMENTS):
            with torch.no_grad():
                theirs = hf(ids, attention_mask=MASK, token_type_ids=segments, output_hidden_states=True)
                heads = ["hidden", "lm", *(["pooled"] if name == "encoder" else [])]
                out = ours(ids, MASK, token_type_ids=segments, heads=heads)
            real = MASK.bool()
            assert max_diff(out["hidden"][real], theirs.hidden_states[-1][real]) < 1e-4
            if name == "encoder":
                assert max_diff(out["pooled"], theirs.pooler_output) < 1e-4
            else:
                assert max_diff(out["lm"][real], theirs.logits[real]) < 1e-4
        assert main(["export", str(run_dir), "--format", "hf", str(tmp_path / f"out-{name}")]) == 0
        auto = transformers.AutoModel if name == "encoder" else transformers.AutoModelForMaskedLM
        back = auto.from_pretrained(tmp_path / f"out-{name}").eval()
        with torch.no_grad():
            expected, got = hf(ids, token_type_ids=SEGMENTS), back(ids, token_type_ids=SEGMENTS)
            assert max_diff(got[0], expected[0]) < 1e-4  # last hidden state, or the MLM logits
        ours.train(), hf.train()
        ours_first = ours.hidden_states if name == "encoder" else ours  # what the Hugging Face class outputs first
        assert one_step_losses(ours, ids, lambda model, ids: first_output_loss(ours_first(ids), ids)) == pytest.approx(
            one_step_losses(hf, ids, lambda model, ids: first_output_loss(model(ids)[0], ids)), abs=1e-4)


def hookformer_trained(tmp_path: Path, tok, model: dict, objective: str = "clm") -> Path:
    """A tiny decoder trained by hookformer for a few steps on a text file, with the BPE tokenizer."""
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "corpus.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    config = {
        "data": {"name": "text", "paths": [str(tmp_path / "corpus.txt")], "block_size": 16,
                 "val_fraction": 0.2},
        "tokenizer": {"name": "hf_tokenizer", "path": str(tmp_path / "tokenizer.json")},
        "model": {"name": "transformer", "n_layer": 2, "n_head": 4, "d_model": 32, **model},
        "objective": {"name": objective},
        "optimizer": {"name": "adamw", "lr": 1e-2},
        "hooks": [],
        "train": {"max_steps": 3, "batch_size": 4, "eval_every": 3, "eval_batches": 1, "progress": False,
                  "sample_tokens": 0, "device": "cpu"},
    }
    (tmp_path / "run.yaml").write_text(json.dumps(config), encoding="utf-8")
    run_dir = tmp_path / "trained"
    assert main(["train", str(tmp_path / "run.yaml"), "--run-dir", str(run_dir)]) == 0
    return run_dir


LLAMA_STYLE = {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 2}
#: GPT-2's architecture, which the default run's model (RoPE, RMSNorm, SwiGLU, QK-norm, no biases) is not.
GPT2_STYLE = {"positions": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True, "qk_norm": False}


@pytest.mark.parametrize("model, architecture", [
    (GPT2_STYLE, "GPT2LMHeadModel"),
    ({**LLAMA_STYLE, "qk_norm": False, "tie_embeddings": False}, "LlamaForCausalLM"),
    ({**LLAMA_STYLE, "qk_norm": True}, "Qwen3ForCausalLM"),
], ids=["gpt2", "llama", "qwen3"])
def test_a_hookformer_trained_decoder_exports_to_a_model_transformers_loads_with_equal_logits(tmp_path, bpe, model,
                                                                                              architecture):
    run_dir = hookformer_trained(tmp_path, bpe, model)
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--format", "hf", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["architectures"] == [architecture]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    config = validate(read_yaml(run_dir / "config.yaml"), Catalog.load())
    ours = load_trained(run_dir, config)[1]
    with torch.no_grad():
        assert max_diff(ours(IDS), theirs(IDS).logits) < 1e-4
    fast = transformers.AutoTokenizer.from_pretrained(out)
    assert fast(MIXED_TEXT, add_special_tokens=False)["input_ids"] == bpe.encode(MIXED_TEXT).ids
    generated = transformers.pipeline("text-generation", model=str(out))("Hello", max_new_tokens=3, do_sample=False)
    assert generated[0]["generated_text"].startswith("Hello")


def test_a_hookformer_trained_bert_exports_to_a_masked_lm_transformers_loads_with_equal_logits(tmp_path):
    tok = wordpiece()
    bert = {**GPT2_STYLE, "causal": False, "mlp": "gelu_exact", "norm_position": "post", "embedding_norm": True,
            "type_vocab_size": 2, "default_token_type": 0, "lm_head_transform": True}
    run_dir = hookformer_trained(tmp_path, tok, bert, objective="mlm")
    assert main(["export", str(run_dir), "--format", "hf", str(tmp_path / "out")]) == 0
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out").eval()
    config = validate(read_yaml(run_dir / "config.yaml"), Catalog.load())
    from hookformer.core import checkpoint
    from hookformer.core.assemble import Assembly

    ours = Assembly(config, run_dir, checkpoint=checkpoint.latest(run_dir)).model().eval()
    checkpoint.load_pretrained(checkpoint.latest(run_dir), ours)
    ids = IDS % tok.get_vocab_size()
    with torch.no_grad():
        for segments in (None, SEGMENTS):
            assert max_diff(ours(ids, token_type_ids=segments), theirs(ids, token_type_ids=segments).logits) < 1e-4


def finetune(tmp_path: Path, pretrained: Path, data: dict, objective: str) -> Path:
    """``hookformer finetune`` of an imported run for two steps."""
    config = {"data": data, "objective": {"name": objective}, "optimizer": {"name": "adamw", "lr": 1e-2},
              "hooks": [], "metrics": ["loss"],
              "train": {"max_steps": 2, "batch_size": 4, "eval_every": 2, "eval_batches": 1, "progress": False,
                        "sample_tokens": 0, "device": "cpu"}}
    (tmp_path / "finetune.yaml").write_text(json.dumps(config), encoding="utf-8")
    run_dir = tmp_path / "finetuned"
    assert main(["finetune", str(pretrained), str(tmp_path / "finetune.yaml"), "--run-dir", str(run_dir)]) == 0
    return run_dir


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_an_imported_gpt2_fine_tuned_on_prompt_response_pairs_evaluates_and_exports_to_transformers(tmp_path, bpe,
                                                                                                     capsys):
    tiny_gpt2(tmp_path / "hf", bpe)
    run_dir, _ = imported(tmp_path, tmp_path / "hf")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"say {w}", "response": f"{w} 😀 中文"}
                                                    for w in ("hello", "world", "python", "code") * 4])
    tuned = finetune(tmp_path, run_dir, {"name": "prompt_response", "paths": [str(pairs)], "block_size": 16,
                                         "val_fraction": 0.25}, "sft")
    (tmp_path / "corpus.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    assert main(["evaluate", str(run_dir), "--set", "data.name=text", "--set",
                 f"data.paths=[{json.dumps(str(tmp_path / 'corpus.txt'))}]", "--set", "data.block_size=16"]) == 0
    assert "loss" in capsys.readouterr().out
    assert main(["export", str(tuned), "--format", "hf", str(tmp_path / "out")]) == 0
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ours = load_trained(tuned, validate(read_yaml(tuned / "config.yaml"), Catalog.load()))[1]
    with torch.no_grad():
        assert max_diff(ours(IDS), theirs(IDS).logits) < 1e-4


def test_an_imported_run_resumes_training_from_its_weights_with_a_fresh_optimizer(tmp_path, bpe):
    tiny_gpt2(tmp_path / "hf", bpe)
    run_dir, _ = imported(tmp_path, tmp_path / "hf")
    (tmp_path / "corpus.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    assert main(["train", "--resume", str(run_dir), "--set", "data.name=text", "--set",
                 f"data.paths=[{json.dumps(str(tmp_path / 'corpus.txt'))}]", "--set", "data.block_size=16",
                 "--set", "train.max_steps=2", "--set", "train.batch_size=2", "--set", "train.sample_tokens=0",
                 "--set", "hooks=[]", "--set", "train.progress=false", "--set", "train.device=cpu"]) == 0
    from hookformer.core import checkpoint

    assert checkpoint.latest(run_dir).name == "step_000002"


def test_an_imported_bert_fine_tunes_on_labeled_data_and_sentence_pairs_with_its_wordpiece_ids(tmp_path):
    tok = wordpiece()
    tiny_bert(tmp_path / "hf", tok, masked_lm=False)
    run_dir = tmp_path / "run"
    assert main(["import", str(tmp_path / "hf"), "--run-dir", str(run_dir)]) == 0
    records = write_jsonl(tmp_path / "train.jsonl", [{"text": text, "label": str(n % 2)}
                                                      for n, text in enumerate(CORPUS)])
    tuned = finetune(tmp_path, run_dir, {"name": "labeled", "train_files": [str(records)], "max_length": 24},
                     "classification")
    assert (tuned / "tokenizer" / "tokenizer.json").read_bytes() == (tmp_path / "hf" / "tokenizer.json").read_bytes()
    sentences = "\n\n".join(f"Doc {n} says hello. It has two sentences. Then a third one follows." for n in range(40))
    (tmp_path / "docs.txt").write_text(sentences, encoding="utf-8")
    shutil.rmtree(tmp_path / "finetuned")
    finetune(tmp_path, run_dir, {"name": "sentences", "block_size": 24, "task": "sop",
                                 "source": {"name": "text", "paths": [str(tmp_path / "docs.txt")]}}, "sop")


def test_a_sharded_llama_and_a_mistral_without_window_import_with_equal_logits(tmp_path, bpe):
    hf = tiny_llama(tmp_path / "llama", bpe)
    hf.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    shutil.copy(tmp_path / "llama" / "tokenizer.json", tmp_path / "sharded")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    torch.manual_seed(0)
    mistral = transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32, sliding_window=None)).eval()
    save_hf(mistral, bpe, tmp_path / "mistral")
    for name, theirs in (("sharded", hf), ("mistral", mistral)):
        _, ours = imported(tmp_path / name, tmp_path / name)
        with torch.no_grad():
            assert max_diff(ours(IDS), theirs(IDS).logits) < 1e-4


@pytest.mark.parametrize("family", ["llama", "qwen3_tied", "qwen3_untied"])
def test_an_imported_then_exported_rope_decoder_round_trips_its_weights(tmp_path, bpe, family):
    hf = DECODERS[family](tmp_path / "hf", bpe)
    run_dir, _ = imported(tmp_path, tmp_path / "hf")
    assert main(["export", str(run_dir), "--format", "hf", str(tmp_path / "out")]) == 0
    back = type(hf).from_pretrained(tmp_path / "out")
    assert back.config.tie_word_embeddings == hf.config.tie_word_embeddings
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize("make", [byte_level_bpe, wordpiece], ids=["byte_level_bpe", "wordpiece"])
def test_the_hf_tokenizer_gives_the_tokenizers_library_ids_on_mixed_script_text(tmp_path, make):
    from hookformer.core.parts import BuildContext
    from hookformer.plugins.tokenizers.hf import HFTokenizerOptions, build

    tok = make()
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = build(HFTokenizerOptions(path=str(tmp_path / "tokenizer.json")), BuildContext(run_dir=tmp_path / "run"))
    expected = tok.encode(MIXED_TEXT, add_special_tokens=False).ids
    assert ours.encode(MIXED_TEXT) == expected and ours.encode_batch([MIXED_TEXT]) == [expected]
    assert ours.decode(expected) == tok.decode(expected)
    vocab = tok.get_vocab()
    if make is wordpiece:
        assert (ours.special.cls, ours.special.sep, ours.special.mask, ours.special.pad) == (
            vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"], vocab["[PAD]"])
    else:
        assert ours.special.bos == ours.special.eos == vocab["<|endoftext|>"]
    reloaded = build(HFTokenizerOptions(), BuildContext(run_dir=tmp_path / "run"))  # the run's own copy
    assert reloaded.fingerprint() == ours.fingerprint() and reloaded.encode(MIXED_TEXT) == expected


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _shard_missing(folder: Path) -> None:
    weights = (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    names = json.loads(weights.read_bytes()[8:8 + int.from_bytes(weights.read_bytes()[:8], "little")])
    weight_map = {name: f"model-0000{1 + n % 2}-of-00002.safetensors"
                  for n, name in enumerate(k for k in names if k != "__metadata__")}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _config_edit(**fields):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **fields}))
    return edit


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _bigger_tokenizer(folder: Path) -> None:
    byte_level_bpe(400).save(str(folder / "tokenizer.json"))


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "config.json").unlink(), "not a Hugging Face model directory"),
    (_truncate, "truncated"),
    (_shard_missing, "is missing"),
    (_config_edit(n_embd=64, n_head=4), "disagree with its config.json"),
    (_pickle_only, "pickle files are never read"),
    (_bigger_tokenizer, "the tokenizer has"),
    (_config_edit(model_type="t5"), "has no hookformer family"),
    (_config_edit(activation_function="relu"), "activation_function"),
    (_config_edit(model_type="mistral", architectures=["MistralForCausalLM"]), "lacks the field 'hidden_size'"),
    (_config_edit(architectures=["GPT2ForSequenceClassification"]), "is not read by any family"),
], ids=["not_a_model", "truncated", "missing_shard", "shape_vs_config", "bin_only", "tokenizer_vocab", "unknown_type",
        "unsupported_option", "fields_of_another_family", "unread_architecture"])
def test_a_bad_hf_directory_is_refused_with_exit_code_2_and_leaves_nothing(tmp_path, bpe, capsys, damage, message):
    tiny_gpt2(tmp_path / "hf", bpe)
    damage(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--run-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


@pytest.mark.parametrize("overrides, edit, message", [
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, {}, "of type 'linear'"),
    ({}, {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 16}, "sliding_window"),
    ({}, {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, "biases on its q/k/v"),
    ({"attention_bias": True}, {}, "attention_bias"),
], ids=["rope_scaling", "sliding_window", "qwen2", "attention_bias"])
def test_a_llama_style_setting_the_transformer_lacks_is_refused_naming_it(tmp_path, bpe, capsys, overrides, edit,
                                                                          message):
    tiny_llama(tmp_path / "hf", bpe, **overrides)
    _config_edit(**edit)(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--run-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"attention_bias": True}, "attention_bias"),
    ({"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1}, "sliding_window = 16 on layers [1]"),
    ({"head_dim": 16}, "head_dim"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "of type 'linear'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
], ids=["attention_bias", "sliding_window", "head_dim", "rope_scaling", "hidden_act"])
def test_a_qwen3_setting_the_transformer_lacks_is_refused_naming_it(tmp_path, bpe, capsys, overrides, message):
    tiny_qwen3(tmp_path / "hf", bpe, **overrides)
    assert main(["import", str(tmp_path / "hf"), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "qwen3" in err
    assert not (tmp_path / "run").exists()


def test_a_qwen3_config_without_sliding_window_slides_qwen3configs_default_window_and_is_refused(tmp_path, bpe,
                                                                                                  capsys):
    tiny_qwen3(tmp_path / "hf", bpe, use_sliding_window=True, max_position_embeddings=8192, max_window_layers=1)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    del config["sliding_window"]  # transformers reads the missing key as 4096
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert main(["import", str(tmp_path / "hf"), "--run-dir", str(tmp_path / "run")]) == 2
    assert "sliding_window = 4096 on layers [1]" in capsys.readouterr().err


def test_import_and_export_refuse_an_existing_target_and_export_a_model_no_family_expresses(tmp_path, bpe, capsys):
    tiny_gpt2(tmp_path / "hf", bpe)
    run_dir, _ = imported(tmp_path, tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--run-dir", str(run_dir)]) == 2  # the run exists
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["export", str(run_dir), "--format", "hf", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--format", "hf", str(tmp_path / "out")]) == 0
    config = read_yaml(run_dir / "config.yaml")
    config["model"]["qk_norm"] = True
    (run_dir / "config.yaml").write_text(json.dumps(config))
    shutil.rmtree(tmp_path / "out")
    assert main(["export", str(run_dir), "--format", "hf", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no Hugging Face family expresses this model" in err and "qk_norm" in err
    assert not (tmp_path / "out").exists()
