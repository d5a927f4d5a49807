"""Token offsets (``encode_with_offsets``) of the built-in tokenizers: the ids of ``encode`` and, for each token, the
characters of the text it covers, on English, Chinese, code and emoji text; checked against sentencepiece's and the
tokenizers library's own offsets, and by the tokenizer kit."""

from __future__ import annotations

import pytest
from hookformer.core.parts import BuildContext
from hookformer.plugins.tokenizers.byte import ByteTokenizer, char_spans
from hookformer.registry.catalog import Catalog
from hookformer.testing import MIXED_TEXTS, check_offsets, check_tokenizer
from hookformer.testing.tokenizer import corpus
from test_hf_interop import byte_level_bpe, wordpiece

TEXTS = MIXED_TEXTS + (
    "Return the absolute value of x.",
    "北京是中国的首都，上海是最大的城市。",
    "    for key, value in sorted(items.items()):\n        yield f'{key}={value!r}'\n",
    "rockets 🚀🚀 and a family 👨\u200d👩\u200d👧 ride",
    "a literal \u2581 and \u2581\u2581, sentencepiece's own space symbol",
    "trailing blanks \t\n",
    "controls \x00 \x07 \x7f, separators \u2028 \u2029 \x0b \x0c, \u200b zero width, NFKC bait ﬁ ① ｆｕｌｌ",
)


def spelled(text: str, offsets) -> str:
    """The text the tokens cover, each character once: consecutive tokens of one character share its span."""
    return "".join(text[max(start, previous[1]):end] for previous, (start, end) in zip([(0, 0)] + offsets, offsets))


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """Trained SentencePiece models (BPE and unigram) on mixed-script text and Python's documentation: English,
    Chinese and code get multi-character pieces, rare emoji fall back to byte pieces."""
    catalog = Catalog.load()
    entry = catalog.get("tokenizer", "sentencepiece")

    from pydoc_data.topics import topics

    class Corpus:
        def texts(self):
            return iter([corpus(), "\n".join(TEXTS[7:10] * 30), *(topics[name] for name in sorted(topics)[:40])])

    built = {}
    for model_type in ("bpe", "unigram"):
        options = entry.spec.options_model()(model_type=model_type, vocab_size=600)
        built[model_type] = entry.spec.build(options, BuildContext(tmp_path_factory.mktemp(model_type), data=Corpus()))
    return built


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """hf_tokenizer parts of a byte-level BPE and a WordPiece, each with ``library``, the tokenizers object it was
    saved from."""
    from hookformer.plugins.tokenizers.hf import HFTokenizerOptions, build

    built = {}
    for make in (byte_level_bpe, wordpiece):
        folder = tmp_path_factory.mktemp(make.__name__)
        library = make()
        library.save(str(folder / "tokenizer.json"))
        built[make.__name__] = build(HFTokenizerOptions(path=str(folder / "tokenizer.json")),
                                     BuildContext(run_dir=folder / "run"))
        built[make.__name__].library = library
    return built


@pytest.fixture(params=["byte", "bpe", "unigram", "byte_level_bpe"])
def lossless(request, sentencepiece, hf):
    """Every built-in tokenizer that round-trips any text."""
    if request.param == "byte":
        return ByteTokenizer()
    return sentencepiece.get(request.param) or hf[request.param]


def test_offsets_give_the_ids_of_encode_and_spans_that_spell_every_word(lossless):
    check_offsets(lossless, TEXTS)


def test_offsets_of_a_lossless_tokenizer_cover_every_character_once_in_order(lossless):
    for text in TEXTS:
        assert spelled(text, lossless.encode_with_offsets(text)[1]) == text


def test_byte_tokens_of_one_character_each_cover_that_character():
    ids, offsets = ByteTokenizer().encode_with_offsets("aé😀")
    assert ids == list("aé😀".encode("utf-8"))
    assert offsets == [(0, 1), (1, 2), (1, 2), (2, 3), (2, 3), (2, 3), (2, 3)]


def test_char_spans_refuses_tokens_that_do_not_spell_the_text():
    with pytest.raises(ValueError, match="spell 2 bytes, the text has 3"):
        char_spans("abc", [1, 1])


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_offsets_match_the_librarys_offset_mapping(sentencepiece, model_type):
    """sentencepiece's own character offsets give a byte piece that does not end its character an empty span (and the
    last one the character); ours give every byte piece of a character the character."""
    import sentencepiece as spm

    tok = sentencepiece[model_type]
    processor = spm.SentencePieceProcessor(model_proto=tok.model_proto)
    for text in (t for t in TEXTS if "\u2581" not in t):  # the library reads a literal U+2581 as a space
        try:
            reference = processor.encode(text, return_type="offset_mapping")
        except ValueError:
            pytest.skip(f"sentencepiece {spm.__version__} has no offset_mapping")
        ids, offsets = tok.encode_with_offsets(text)
        assert ids == reference["ids"]
        for n, ((start, end), (ref_start, ref_end)) in enumerate(zip(offsets, reference["offsets"])):
            if ref_start == ref_end:  # a leading byte piece: ours covers the character the later pieces end
                assert (start, end) == (ref_start, ref_start + 1), (text, n)
            else:
                assert (start, end) == (ref_start, ref_end), (text, n)


def test_sentencepiece_spells_a_literal_space_symbol_in_byte_pieces_that_each_cover_it(sentencepiece):
    tok = sentencepiece["bpe"]
    text = "x\u2581y"
    ids, offsets = tok.encode_with_offsets(text)
    symbol = [span for span in offsets if span == (1, 2)]
    assert len(symbol) == 3 and ids == tok.encode(text) and spelled(text, offsets) == text


def test_sentencepiece_piece_with_a_space_symbol_covers_the_space(sentencepiece):
    tok = sentencepiece["bpe"]
    text = "the value"
    ids, offsets = tok.encode_with_offsets(text)
    pieces = [tok._sp.id_to_piece(i) for i in ids]
    space_piece = next(n for n, piece in enumerate(pieces) if piece.startswith("\u2581") and len(piece) > 1)
    start, end = offsets[space_piece]
    assert text[start] == " " and text[start:end] == pieces[space_piece].replace("\u2581", " ")


@pytest.mark.parametrize("name", ["byte_level_bpe", "wordpiece"])
def test_hf_tokenizer_offsets_are_the_tokenizers_librarys_character_offsets(hf, name):
    tok = hf[name]
    for text in TEXTS:
        encoding = tok.library.encode(text, add_special_tokens=False)
        assert tok.encode_with_offsets(text) == (encoding.ids, [tuple(span) for span in encoding.offsets])


def test_byte_level_bpe_offsets_are_characters_not_bytes(hf):
    text = "中文 😀"
    ids, offsets = hf["byte_level_bpe"].encode_with_offsets(text)
    assert max(end for _, end in offsets) == len(text) == 4  # 11 UTF-8 bytes
    assert spelled(text, offsets) == text


@pytest.mark.parametrize("name", ["byte", "bpe", "unigram"])
def test_the_tokenizer_kit_checks_the_offsets_of_the_builtin_tokenizers(sentencepiece, name):
    # The GPT-2 style hf_tokenizer is left out: its one special token plays every role, which the kit refuses.
    check_tokenizer(ByteTokenizer() if name == "byte" else sentencepiece[name], texts=TEXTS)


class ShiftedOffsets(ByteTokenizer):
    """Offsets one character late: the tokens of a word spell the next characters."""

    def encode_with_offsets(self, text):
        ids, offsets = super().encode_with_offsets(text)
        return ids, [(min(start + 1, len(text)), min(end + 1, len(text))) for start, end in offsets]


class OffsetsOfOtherIds(ByteTokenizer):
    def encode_with_offsets(self, text):
        ids, offsets = super().encode_with_offsets(text)
        return ids[::-1], offsets


def test_the_tokenizer_kit_fails_offsets_that_do_not_spell_the_words():
    with pytest.raises(AssertionError, match="the tokens of 'The' spell"):
        check_tokenizer(ShiftedOffsets())


def test_the_tokenizer_kit_fails_offsets_whose_ids_differ_from_encode():
    with pytest.raises(AssertionError, match="other ids than encode"):
        check_tokenizer(OffsetsOfOtherIds())
