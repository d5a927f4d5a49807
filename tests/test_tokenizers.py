"""The tokenizer parts: exact round trips of any UTF-8 text, the shared special tokens, and the SentencePiece model's
life cycle (trained once per run and reloaded, or given as a file), with clear errors. Real models, trained on the
Python documentation that ships with CPython."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import pytest
import sentencepiece as spm
from hookformer.core.errors import ConfigError, DataError
from hookformer.core.parts import BuildContext, SpecialTokens, Tokenizer
from hookformer.plugins.tokenizers.sentencepiece import (
    MODEL_PATH,
    RESERVED_IDS,
    training_sentences,
)
from hookformer.registry.catalog import Catalog
from pydantic import ValidationError

HARD_TEXTS = [
    "",
    " ",
    "\n",
    "   leading and trailing   ",
    "runs  of   spaces\t\ttabs\n\nand\r\nnewlines\n",
    "中文字符和标点，测试。",
    "emoji 😀 👍🏽 👨\u200d👩\u200d👧 🇫🇷",
    "combining e\u0301 a\u0308 next to precomposed é ä",
    "NFKC would change these: ﬁ ① ｆｕｌｌ \u212b",
    "a literal \u2581 and \u2581\u2581, sentencepiece's own space symbol",
    "<s> </s> <pad> <unk> <mask> <cls> <sep> only look like special tokens",
    "controls \x00 \x07 \x7f and separators \u2028 \u2029 \x0b \x0c",
    "\u200b zero width space, \ufeff byte order mark",
    "def f(x):\n    return x  # indented code\n",
]


class Corpus:
    """What a tokenizer uses of the data stage: its training documents."""

    def __init__(self, documents: list[str]):
        self.documents = documents

    def texts(self):
        return iter(self.documents)


class NoTraining:
    """A data stage whose text must not be read: building with it proves the tokenizer was loaded, not trained."""

    def texts(self):
        raise AssertionError("the tokenizer read the training text again")


def python_docs(total_chars: int = 200_000) -> list[str]:
    """Deterministic documents, about ``total_chars`` characters: the pydoc topics in name order."""
    from pydoc_data.topics import topics

    documents, size = [], 0
    for name in sorted(topics):
        if size >= total_chars:
            break
        documents.append(topics[name])
        size += len(topics[name])
    return documents


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="module")
def docs() -> Corpus:
    return Corpus(python_docs())


def build(catalog: Catalog, name: str, run_dir: Path, data=None, **options):
    entry = catalog.get("tokenizer", name)
    return entry.spec.build(entry.spec.options_model()(**options), BuildContext(run_dir=run_dir, data=data))


@pytest.fixture(scope="module")
def trained(catalog, docs, tmp_path_factory) -> dict:
    """A SentencePiece tokenizer of each model type, trained on the docs, with its run directory."""
    runs = {}
    for model_type in ("bpe", "unigram"):
        run_dir = tmp_path_factory.mktemp(model_type)
        tok = build(catalog, "sentencepiece", run_dir, docs, model_type=model_type, vocab_size=400)
        runs[model_type] = tok, run_dir
    return runs


@pytest.fixture(params=["byte", "bpe", "unigram"])
def tokenizer(request, catalog, trained, tmp_path):
    if request.param == "byte":
        return build(catalog, "byte", tmp_path)
    return trained[request.param][0]


# -- both tokenizers -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", HARD_TEXTS)
def test_every_tokenizer_round_trips_any_utf8_text_exactly(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_every_tokenizer_round_trips_its_training_documents_exactly(tokenizer, docs):
    for document in docs.documents[:20]:
        assert tokenizer.decode(tokenizer.encode(document)) == document


def test_every_tokenizer_follows_the_tokenizer_protocol(tokenizer):
    assert isinstance(tokenizer, Tokenizer)


def test_every_tokenizer_reserves_seven_distinct_special_tokens_inside_its_vocabulary(tokenizer):
    special = tokenizer.special
    assert isinstance(special, SpecialTokens)
    assert len(special.ids()) == 7
    assert all(0 <= i < tokenizer.vocab_size for i in special.ids())


def test_encoding_never_produces_special_ids_even_for_text_that_spells_them(tokenizer):
    for text in HARD_TEXTS:
        assert not set(tokenizer.encode(text)) & tokenizer.special.ids()


def test_decode_drops_special_ids(tokenizer):
    special = tokenizer.special
    ids = [special.bos] + tokenizer.encode("hello") + [special.eos, special.pad, special.unk, special.mask]
    assert tokenizer.decode(ids) == "hello"
    assert tokenizer.decode(sorted(special.ids())) == ""


def test_decode_of_random_ids_returns_text_without_crashing(tokenizer):
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(-5, tokenizer.vocab_size + 5) for _ in range(rng.randrange(0, 40))]
        assert isinstance(tokenizer.decode(ids), str)


def test_decode_turns_invalid_utf8_into_replacement_characters(tokenizer):
    first_byte_of_emoji = tokenizer.encode("😀")[:1]  # a byte id for both (no emoji in the training text)
    assert tokenizer.decode(first_byte_of_emoji + tokenizer.encode("ok")) == "\ufffdok"


def test_encode_batch_equals_encoding_each_text(tokenizer, docs):
    texts = HARD_TEXTS + docs.documents[:20]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(text) for text in texts]


def test_pickling_keeps_encodings_and_fingerprint(tokenizer, docs):
    copy = pickle.loads(pickle.dumps(tokenizer))
    texts = HARD_TEXTS + docs.documents[:5]
    assert copy.encode_batch(texts) == tokenizer.encode_batch(texts)
    assert copy.fingerprint() == tokenizer.fingerprint()
    assert copy.special == tokenizer.special


# -- byte ------------------------------------------------------------------------------------------------------------

def test_byte_tokenizer_ids_are_the_utf8_bytes_then_the_special_tokens(catalog, tmp_path):
    tok = build(catalog, "byte", tmp_path)
    assert tok.encode("aé") == [0x61, 0xC3, 0xA9]
    assert tok.special == SpecialTokens(pad=256, bos=257, eos=258, unk=259, mask=260, cls=261, sep=262)
    assert tok.vocab_size == 263
    assert not any(tmp_path.iterdir())  # nothing to save


# -- sentencepiece: vocabulary ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_has_the_requested_vocab_size_and_fixed_special_ids(trained, model_type):
    tok = trained[model_type][0]
    assert tok.vocab_size == 400
    assert tok.special == SpecialTokens(pad=0, unk=1, bos=2, eos=3, mask=4, cls=5, sep=6)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_learns_multi_character_pieces_and_keeps_newline_one_id(trained, docs, model_type):
    tok = trained[model_type][0]
    text = docs.documents[0]
    assert len(tok.encode(text)) < 0.8 * len(text)
    assert len(tok.encode("\n")) == 1


def test_sentencepiece_model_types_give_different_fingerprints(trained):
    assert trained["bpe"][0].fingerprint() != trained["unigram"][0].fingerprint()


def test_vocab_size_below_the_reserved_ids_is_rejected_by_the_options(catalog):
    with pytest.raises(ValidationError):
        catalog.get("tokenizer", "sentencepiece").spec.options_model()(vocab_size=RESERVED_IDS)


# -- sentencepiece: training and reloading ---------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_trained_model_is_saved_in_the_run_dir_and_reloaded_instead_of_retrained(catalog, trained, model_type):
    tok, run_dir = trained[model_type]
    assert (run_dir / MODEL_PATH).is_file()
    again = build(catalog, "sentencepiece", run_dir, NoTraining(), model_type=model_type, vocab_size=400)
    assert again.fingerprint() == tok.fingerprint()


def test_training_is_deterministic(catalog, trained, docs, tmp_path):
    again = build(catalog, "sentencepiece", tmp_path, docs, model_type="bpe", vocab_size=400)
    assert again.fingerprint() == trained["bpe"][0].fingerprint()


def test_training_writes_nothing_to_stdout_or_stderr(catalog, docs, tmp_path, capfd):
    capfd.readouterr()
    build(catalog, "sentencepiece", tmp_path, docs, vocab_size=400)
    assert capfd.readouterr() == ("", "")


def test_documents_without_newlines_are_trained_on_not_skipped_as_too_long(catalog, docs, tmp_path):
    one_line = Corpus([" ".join(" ".join(docs.documents).split())])  # sentencepiece skips lines over 4192 bytes
    tok = build(catalog, "sentencepiece", tmp_path, one_line, vocab_size=400)
    assert len(tok.encode(docs.documents[0])) < 0.8 * len(docs.documents[0])


def test_training_sentences_are_lines_cut_into_chunks_up_to_max_training_chars():
    documents = ["first line\n\nsecond\n", "x" * 2500]
    assert list(training_sentences(documents, 10_000)) == ["first line", "second", "x" * 1024, "x" * 1024, "x" * 452]
    assert list(training_sentences(documents, 13)) == ["first line", "sec"]


def test_too_small_a_corpus_for_the_vocab_size_is_a_data_error_suggesting_a_smaller_vocab(catalog, tmp_path):
    small = Corpus(["the quick brown fox jumps over the lazy dog\n" * 3])
    with pytest.raises(DataError, match=r"too small for tokenizer.vocab_size 2000.*smaller tokenizer.vocab_size"):
        build(catalog, "sentencepiece", tmp_path, small, vocab_size=2000)
    assert not (tmp_path / MODEL_PATH).exists()


def test_more_characters_than_the_vocab_holds_is_a_config_error_saying_how_large_to_make_it(catalog, tmp_path):
    many_characters = Corpus(["".join(chr(0x4E00 + i) for i in range(100))])
    with pytest.raises(ConfigError, match=rf"vocab_size 300 is too small.*at least {RESERVED_IDS + 100}"):
        build(catalog, "sentencepiece", tmp_path, many_characters, vocab_size=300)


def test_a_data_error_while_reading_the_training_text_keeps_its_type(catalog, tmp_path):
    class Unreadable:
        def texts(self):
            yield "a first document"
            raise DataError("corpus.txt is not valid UTF-8")

    with pytest.raises(DataError, match="corpus.txt"):
        build(catalog, "sentencepiece", tmp_path, Unreadable(), vocab_size=300)


def test_training_text_without_any_text_is_a_data_error(catalog, tmp_path):
    with pytest.raises(DataError, match="no text"):
        build(catalog, "sentencepiece", tmp_path, Corpus(["", "\n\n"]), vocab_size=300)


# -- sentencepiece: model_file ---------------------------------------------------------------------------------------

def test_model_file_is_used_instead_of_training_and_copied_into_the_run_dir(catalog, trained, tmp_path):
    tok, source_run = trained["unigram"]
    model_file = tmp_path / "elsewhere" / "my.model"
    model_file.parent.mkdir()
    model_file.write_bytes((source_run / MODEL_PATH).read_bytes())
    run_dir = tmp_path / "run"
    loaded = build(catalog, "sentencepiece", run_dir, NoTraining(), model_file=str(model_file))
    assert loaded.fingerprint() == tok.fingerprint()
    assert (run_dir / MODEL_PATH).read_bytes() == model_file.read_bytes()
    # Resuming that run with the same option loads the same model.
    assert build(catalog, "sentencepiece", run_dir, NoTraining(), model_file=str(model_file)).fingerprint() == \
        tok.fingerprint()


def test_missing_model_file_is_a_config_error_naming_the_option(catalog, tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer.model_file: .*nope.model not found"):
        build(catalog, "sentencepiece", tmp_path, NoTraining(), model_file=str(tmp_path / "nope.model"))


def test_model_file_that_differs_from_the_runs_own_model_is_a_config_error(catalog, trained, tmp_path):
    _, bpe_run = trained["bpe"]
    _, unigram_run = trained["unigram"]
    with pytest.raises(ConfigError, match="differs from"):
        build(catalog, "sentencepiece", bpe_run, NoTraining(), model_file=str(unigram_run / MODEL_PATH))


def test_model_file_that_is_not_a_sentencepiece_model_is_a_config_error(catalog, tmp_path):
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a SentencePiece model"):
        build(catalog, "sentencepiece", tmp_path / "run", NoTraining(), model_file=str(garbage))


def _foreign_model(path: Path, docs: Corpus, **settings) -> str:
    """A model trained by sentencepiece with its own defaults (NFKC, dummy prefix, no byte fallback) plus
    ``settings``."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(docs.documents), model_writer=model, vocab_size=300,
                                   minloglevel=2, **settings)
    path.write_bytes(model.getvalue())
    return str(path)


def test_model_file_without_the_special_tokens_is_a_config_error(catalog, docs, tmp_path):
    model_file = _foreign_model(tmp_path / "plain.model", docs)  # sentencepiece's defaults: no pad, no mask
    with pytest.raises(ConfigError, match="lacks special tokens"):
        build(catalog, "sentencepiece", tmp_path / "run", NoTraining(), model_file=model_file)


def test_model_file_that_does_not_round_trip_text_is_a_config_error(catalog, docs, tmp_path):
    model_file = _foreign_model(tmp_path / "nfkc.model", docs, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                                control_symbols=["<mask>", "<cls>", "<sep>"])
    with pytest.raises(ConfigError, match="does not round-trip"):
        build(catalog, "sentencepiece", tmp_path / "run", NoTraining(), model_file=model_file)
