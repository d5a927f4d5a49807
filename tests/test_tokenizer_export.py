"""The built-in tokenizers' Hugging Face form (``save_hf``, written by ``hookformer export``): transformers'
AutoTokenizer loads it with no custom code and gives exactly hookformer's ids, and decodes them back to the text.
Real SentencePiece models trained here on a small handmade multilingual corpus; real transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from hookformer.core.cli import main  # noqa: E402
from hookformer.core.config import read_yaml, validate  # noqa: E402
from hookformer.core.parts import BuildContext  # noqa: E402
from hookformer.plugins.tokenizers.sentencepiece import MODEL_PATH, SentencePieceTokenizer  # noqa: E402
from hookformer.registry.catalog import Catalog  # noqa: E402

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.",
    "Tokenizers split text into pieces, and the pieces into ids that the model reads.",
    "今天天气很好，我们去公园散步。中文的句子也在这里，模型读取文本。",
    "def train(model, data):\n    for batch in data:\n        loss = model(batch)\n        loss.backward()\n",
    "class Fox:\n    def jump(self, height=2):\n        return height * 2  # twice as high\n",
    "emoji 😀 🚀 🎉 party time, python 🐍 and tea 🍵",
    "    indented line\n\n\ttabbed line   with   spaces   ",
] * 8
#: Mixed-script texts: English, Chinese, indented code with newlines, emoji (some unseen in training), characters
#: outside the vocabulary, leading/trailing/repeated spaces, names that only look like special tokens, U+2581.
MIXED = [
    "",
    " ",
    "   leading, trailing and   repeated   spaces   ",
    "Hello world, the model reads text.\n今天的天气很好。\ndef f(x):\n    return x ** 2  # 😀🚀\n",
    "if fox:\n\tjump()\n\n\n        deep   indent\r\n",
    "unseen characters: 饕餮 Ωμέγα ﬁ e\u0301 👨\u200d👩\u200d👧 🇫🇷",
    "<s> </s> <pad> <unk> <mask> <cls> <sep> <0x41> only look like special tokens",
    "a literal \u2581 and \u2581\u2581 next to  spaces",
    "*" * 23 + "\n" + "==== ---- ____",
]


class Corpus:
    """What a tokenizer uses of the data stage: its training documents."""

    def __init__(self, documents: list[str]):
        self.documents = documents

    def texts(self):
        return iter(self.documents)


def build(name: str, run_dir: Path, **options):
    entry = Catalog.load().get("tokenizer", name)
    return entry.spec.build(entry.spec.options_model()(**options), BuildContext(run_dir=run_dir, data=Corpus(CORPUS)))


@pytest.fixture(scope="module")
def sentencepiece_bpe(tmp_path_factory):
    return build("sentencepiece", tmp_path_factory.mktemp("bpe"), model_type="bpe", vocab_size=400,
                 sentinel_tokens=3)


def assert_transformers_agrees(tokenizer, folder: Path) -> None:
    """AutoTokenizer of ``folder`` gives ``tokenizer.encode``'s ids on every MIXED text (with and without its default
    special tokens: it adds none) and decodes them back to the text."""
    fast = transformers.AutoTokenizer.from_pretrained(folder)
    for text in MIXED:
        ids = tokenizer.encode(text)
        assert fast(text, add_special_tokens=False)["input_ids"] == ids, text
        assert fast(text)["input_ids"] == ids, text
        assert fast.decode(ids) == text
    special = tokenizer.special
    assert (fast.pad_token_id, fast.bos_token_id, fast.eos_token_id, fast.unk_token_id, fast.mask_token_id,
            fast.cls_token_id, fast.sep_token_id) == (special.pad, special.bos, special.eos, special.unk, special.mask,
                                                      special.cls, special.sep)
    assert len(fast) == tokenizer.vocab_size
    framed = [special.bos, *tokenizer.encode("中文 ok"), special.eos]
    assert fast.decode(framed, skip_special_tokens=True) == "中文 ok"


def test_the_byte_tokenizers_hugging_face_form_gives_its_ids_and_decodes_back(tmp_path):
    tokenizer = build("byte", tmp_path)
    tokenizer.save_hf(tmp_path / "hf")
    assert_transformers_agrees(tokenizer, tmp_path / "hf")


def test_a_sentencepiece_bpe_models_hugging_face_form_gives_its_ids_and_decodes_back(sentencepiece_bpe, tmp_path):
    assert sentencepiece_bpe.save_hf(tmp_path / "hf") is None
    assert_transformers_agrees(sentencepiece_bpe, tmp_path / "hf")
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "fill <extra_id_0> and<extra_id_2>, not <extra_id_7>"  # sentinels are one id each, as in SentencePiece
    assert fast(text)["input_ids"] == sentencepiece_bpe.encode(text)
    assert fast.decode(sentencepiece_bpe.encode(text)) == text


def test_a_sentencepiece_bpe_models_hugging_face_form_agrees_on_every_concatenation_of_its_pieces(
        sentencepiece_bpe, tmp_path):
    """Merge order is where BPE conversions go wrong; texts built from the model's own pieces exercise every merge."""
    import random

    sentencepiece_bpe.save_hf(tmp_path / "hf")
    fast = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    pieces = [fast.id_to_token(i) for i in range(7, sentencepiece_bpe.vocab_size)]
    rng = random.Random(0)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(2, 8))) for _ in range(3000)]
    assert [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)] == [
        sentencepiece_bpe.encode(t) for t in texts]


@pytest.fixture(scope="module")
def sentencepiece_unigram(tmp_path_factory):
    return build("sentencepiece", tmp_path_factory.mktemp("unigram"), model_type="unigram", vocab_size=350,
                 sentinel_tokens=3)


def processor(tokenizer):
    """SentencePiece itself, on the tokenizer part's model."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=tokenizer.model_proto)


def piece_joins(tokenizer, count: int = 3000) -> list[str]:
    """Texts made of the model's own text pieces (real spaces for U+2581): 2 to 8 of them, ``count`` texts."""
    import random

    sp = processor(tokenizer)
    pieces = [sp.id_to_piece(i).replace("\u2581", " ") for i in range(tokenizer.vocab_size)
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))]
    rng = random.Random(0)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(2, 8))) for _ in range(count)]


def test_a_sentencepiece_unigram_models_hugging_face_form_gives_its_ids_and_decodes_back(sentencepiece_unigram,
                                                                                          tmp_path):
    assert sentencepiece_unigram.save_hf(tmp_path / "hf") is None
    assert_transformers_agrees(sentencepiece_unigram, tmp_path / "hf")
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    runs = [char * n for char in " \t*=-eo天😀" for n in range(1, 60)]
    texts = piece_joins(sentencepiece_unigram) + runs + ["fill <extra_id_0> and<extra_id_2>, not <extra_id_7>"]
    assert fast(texts, add_special_tokens=False)["input_ids"] == sentencepiece_unigram.encode_batch(texts)
    assert [sentencepiece_unigram.encode(t) for t in texts] == sentencepiece_unigram.encode_batch(texts)


def test_a_unigram_model_segments_as_sentencepiece_up_to_the_order_of_equal_scoring_pieces(sentencepiece_unigram):
    """hookformer encodes a unigram model with tokenizers' Unigram (float64 sums; its exported form). It picks
    SentencePiece's own segmentation, except where several orderings of the same pieces score equally (runs of
    spaces), which SentencePiece breaks by the float32 rounding of its running sums: there the pieces are the same
    multiset in another order. A literal U+2581 is spelled in bytes either way. (Text spelling a control piece's
    name, ``<s>``, is segmented around its ``<``: see the next test.)"""
    import sentencepiece.sentencepiece_model_pb2 as model_pb2

    sp = processor(sentencepiece_unigram)
    scores = [p.score for p in model_pb2.ModelProto.FromString(sentencepiece_unigram.model_proto).pieces]
    lines = [line for document in CORPUS for line in document.split("\n")]
    for text in MIXED[:-2] + lines:  # MIXED[-2] holds a literal U+2581, which SentencePiece reads as a space
        assert sentencepiece_unigram.encode(text) == sp.encode(text), text
    texts = piece_joins(sentencepiece_unigram) + [char * n for char in " \t*=-" for n in range(1, 60)]
    differ = [(ours, sp.encode(text)) for text, ours in zip(texts, sentencepiece_unigram.encode_batch(texts))
              if ours != sp.encode(text)]
    assert differ, "no tie found: the test would check nothing"
    for ours, theirs in differ:
        assert sorted(ours) == sorted(theirs) and sum(scores[i] for i in ours) == sum(scores[i] for i in theirs)


def test_a_unigram_model_never_reads_a_control_or_byte_piece_from_text_that_spells_its_name(sentencepiece_unigram):
    """SentencePiece never matches control, unknown or byte pieces in the text; a Unigram over the same vocabulary
    would (score 0 beats spelling the name out, more so when a character of it is not a piece, as "<" is here)."""
    sp = processor(sentencepiece_unigram)
    assert sp.piece_to_id("<") == sp.unk_id(), "the model should lack '<', the case where the name would win"
    special = set(sentencepiece_unigram.special.ids())
    for text in ["<s>", "</s><pad>", "a<unk>b", "<mask><cls><sep>", "<0x41><0xFF>", "<<s>>", "x<s"]:
        ids = sentencepiece_unigram.encode(text)
        assert not special & set(ids) and sentencepiece_unigram.decode(ids) == text, text


@pytest.mark.slow
def test_hookformer_export_of_a_sentencepiece_run_writes_a_tokenizer_transformers_loads_with_its_ids(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    config = {
        "data": {"name": "text", "paths": [str(tmp_path / "corpus.txt")], "block_size": 16, "val_fraction": 0.2},
        "tokenizer": {"name": "sentencepiece", "model_type": "bpe", "vocab_size": 400},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16, "positions": "rope",
                  "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
        "objective": {"name": "clm"},
        "optimizer": {"name": "adamw", "lr": 1e-2},
        "hooks": [],
        "train": {"max_steps": 2, "batch_size": 4, "eval_every": 2, "eval_batches": 1, "progress": False,
                  "sample_tokens": 0, "device": "cpu"},
    }
    (tmp_path / "run.yaml").write_text(json.dumps(config), encoding="utf-8")
    run_dir, out = tmp_path / "trained", tmp_path / "exported"
    assert main(["train", str(tmp_path / "run.yaml"), "--run-dir", str(run_dir)]) == 0
    assert main(["export", str(run_dir), "--format", "hf", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    ours = SentencePieceTokenizer((run_dir / MODEL_PATH).read_bytes())
    assert validate(read_yaml(run_dir / "config.yaml"), Catalog.load()).parts["tokenizer"].name == "sentencepiece"
    generator = transformers.pipeline("text-generation", model=str(out))
    for text in MIXED:
        assert generator.tokenizer(text)["input_ids"] == ours.encode(text)
    generated = generator("The fox", max_new_tokens=3, do_sample=False)[0]["generated_text"]
    assert generated.startswith("The fox")


def test_hookformer_export_of_a_unigram_run_writes_a_tokenizer_transformers_loads_with_its_ids(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n\n".join(CORPUS), encoding="utf-8")
    config = {
        "data": {"name": "text", "paths": [str(tmp_path / "corpus.txt")], "block_size": 16, "val_fraction": 0.2},
        "tokenizer": {"name": "sentencepiece", "model_type": "unigram", "vocab_size": 350},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16},  # the default's: exports as Qwen3
        "objective": {"name": "clm"},
        "optimizer": {"name": "adamw", "lr": 1e-2},
        "hooks": [],
        "train": {"max_steps": 1, "batch_size": 4, "eval_every": 1, "eval_batches": 1, "progress": False,
                  "sample_tokens": 0, "device": "cpu"},
    }
    (tmp_path / "run.yaml").write_text(json.dumps(config), encoding="utf-8")
    assert main(["train", str(tmp_path / "run.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), "--format", "hf", str(tmp_path / "out")]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                              "tokenizer_config.json"}
    ours = SentencePieceTokenizer((tmp_path / "run" / MODEL_PATH).read_bytes())
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert [fast(text)["input_ids"] for text in MIXED] == [ours.encode(text) for text in MIXED]
