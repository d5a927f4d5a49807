"""The model-family recipes (plugins/{bert,roberta,bert_wwm_zh,macbert,electra}.yaml) and RoBERTa's full-sentence
blocks (data part ``sentences``, ``task: full_sentences``)."""

import json
from pathlib import Path

import pytest
import torch
from hookformer.core.cli import main
from hookformer.core.config import compose, recipes, validate
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.sentences import SentencesOptions, split_sentences
from hookformer.plugins.data.sentences import build as build_sentences
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.registry.catalog import Catalog

FAMILIES = ["bert", "roberta", "bert_wwm_zh", "macbert", "electra"]
ENGLISH = ["The cat sat on the mat. It was warm there. The dog watched it from the door.",
           "Rain fell all day. Nobody went out. The streets were empty by noon.",
           "Bread needs flour and water. Salt helps the taste. Yeast makes it rise."]
CHINESE = ["我们在北京大学学习自然语言处理。今天天气很好。我们一起去公园散步吧。",
           "中国人民喜欢喝茶。饺子是传统的食物。春节的时候大家一起吃饺子。",
           "北京是中国的首都。上海是一个大城市。长江是中国最长的河流。"]


@pytest.fixture(scope="module")
def catalog():
    return Catalog.load()


def objectives(config) -> dict:
    """{name: options} of the config's objective, or of each part of a combined one."""
    objective = config.parts["objective"]
    if objective.name != "combined":
        return {objective.name: objective.options}
    return {part.name: part.options for part in objective.options.objectives}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_family_recipe_is_shipped_with_an_underscored_name_and_validates_over_the_default_run(name, catalog):
    assert name in recipes() and name.isidentifier()  # recipe names follow stdlib_areas: '_', not '-'
    config = validate(compose(Path(name), []), catalog)
    assert config.parts["model"].options.causal is False  # every family here pretrains an encoder


def test_bert_is_mlm_plus_nsp_on_sentence_pairs(catalog):
    config = validate(compose(Path("bert"), []), catalog)
    assert set(objectives(config)) == {"mlm", "nsp"} and objectives(config)["mlm"]["masking"] == "token"
    assert config.parts["data"].options.task == "nsp" and config.parts["model"].options.type_vocab_size == 2


def test_roberta_is_dynamic_mlm_without_nsp_on_full_sentence_blocks(catalog):
    config = validate(compose(Path("roberta"), []), catalog)
    assert config.parts["objective"].name == "mlm" and config.parts["data"].options.task == "full_sentences"


def test_bert_wwm_zh_masks_whole_words_segmented_by_jieba(catalog):
    mlm = objectives(validate(compose(Path("bert_wwm_zh"), []), catalog))["mlm"]
    assert (mlm["masking"], mlm["word_boundaries"]) == ("whole_word", "jieba")


def test_macbert_masks_ngrams_and_corrects_with_similar_words_plus_sop(catalog):
    parts = objectives(validate(compose(Path("macbert"), []), catalog))
    mlm = parts["mlm"]
    assert set(parts) == {"mlm", "sop"}
    assert (mlm["masking"], mlm["span_lengths"], mlm["max_span_words"]) == ("span", "macbert", 4)
    assert (mlm["replace_with_mask"], mlm["replace_with_similar"], mlm["replace_with_random"]) == (0.0, 0.8, 0.1)


def test_electras_generator_is_a_quarter_of_the_default_width(catalog):
    config = validate(compose(Path("electra"), []), catalog)
    assert config.parts["objective"].name == "electra"
    assert 4 * config.parts["objective"].options.generator_d_model == config.parts["model"].options.d_model


def test_full_sentence_blocks_hold_whole_consecutive_sentences_across_documents(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in ENGLISH * 4))
    byte = ByteTokenizer()
    options = SentencesOptions(task="full_sentences", block_size=96, val_fraction=0.25,
                               source={"name": "text", "paths": [str(corpus)]}, cache_dir=str(tmp_path / "cache"))
    source = build_sentences(options, BuildContext(run_dir=tmp_path, seed=0))
    tables = source.prepare(byte)
    sentences = sorted({sentence for text in ENGLISH for sentence in split_sentences(text)}, key=len, reverse=True)

    def whole_sentences(text: str) -> bool:
        """Whether ``text`` is corpus sentences one after the other (the part joins their tokens as they are)."""
        while text:
            sentence = next((s for s in sentences if text.startswith(s)), None)
            if sentence is None:
                return False
            text = text[len(sentence):]
        return True

    for table in tables.values():
        assert set(table) == {"input_ids", "attention_mask"}
        for ids, mask in zip(table["input_ids"], table["attention_mask"]):
            tokens = ids[mask.bool()].tolist()
            assert tokens[0] == byte.special.cls and tokens[-1] == byte.special.sep
            documents, current = [], []
            for token in tokens[1:-1]:
                if token == byte.special.sep:
                    documents.append(current)
                    current = []
                else:
                    current.append(token)
            for document in [*documents, current]:
                assert whole_sentences(byte.decode(document)), byte.decode(document)
    # Blocks run on into the next document, after a [sep].
    train = tables["train"]["input_ids"]
    inner = train[:, 1:] == byte.special.sep
    assert inner.sum() > len(train)


def test_full_sentence_data_conforms(data_conformance, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in ENGLISH * 4))
    data_conformance("sentences", {"task": "full_sentences", "block_size": 64, "val_fraction": 0.25,
                                   "source": {"name": "text", "paths": [str(corpus)]}})


@pytest.mark.slow
@pytest.mark.parametrize("name,language", [("bert", "en"), ("roberta", "en"), ("bert_wwm_zh", "zh"),
                                           ("macbert", "en"), ("electra", "en")])
def test_hookformer_train_runs_the_family_recipe_on_a_users_files(name, language, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join((ENGLISH if language == "en" else CHINESE) * 20), encoding="utf-8")
    packed = name == "electra"  # electra reads packed blocks (data: builtin or text), the others sentences
    data = ["data.name=text", f"data.paths=[{corpus}]"] if packed else \
        ["data.source.name=text", f"data.source.paths=[{corpus}]"]
    shrink = [*data, "data.block_size=48", "tokenizer.name=byte", "model.n_layer=1", "model.n_head=2",
              "model.d_model=32", "train.max_steps=3", "train.batch_size=4", "train.eval_every=3",
              "train.eval_batches=1", "train.checkpoint_every=3", "train.progress=false", "hooks=[]"]
    if packed:
        shrink.append("objective.generator_d_model=8")
    args = ["train", name, "--run-dir", str(tmp_path / "run")]
    for assignment in shrink:
        args += ["--set", assignment]
    assert main(args) == 0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert torch.isfinite(torch.tensor([r["loss"] for r in history if "loss" in r])).all()
    assert any("val_loss" in r for r in history)
