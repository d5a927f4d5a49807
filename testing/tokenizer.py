"""Tokenizer conformance: exact round trip on mixed-script text, special ids, batch encoding, a stable fingerprint,
the same mapping when the tokenizer is built again in its run directory (how resume, evaluate and generate get
it back), and, for a tokenizer with the optional ``encode_with_offsets``, offsets that map its tokens onto the text."""

from __future__ import annotations

import re
from typing import Callable

from hookformer.core.parts import Tokenizer

#: Text a tokenizer must give back byte for byte: scripts, code, emoji, combining marks and every kind of blank.
MIXED_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "中文分词测试：你好，世界！",
    "def f(x):\n\treturn {'a': x ** 2}  # code\n",
    "emoji 😀👍🏽 and flags 🇫🇷, combining e\u0301 and ﬁ ligature",
    "  leading and trailing spaces  \n\n\ttabs\t\tand\r\nCRLF\n",
    "Ελληνικά, русский, العربية, हिन्दी, 日本語のテキスト",
    "",
)


def corpus(repeat: int = 20) -> str:
    """A small training corpus for trainable tokenizers: the mixed texts, repeated."""
    return "\n\n".join(MIXED_TEXTS * repeat)


def check_tokenizer(tokenizer: Tokenizer, rebuild: Callable[[], Tokenizer] | None = None,
                    texts: tuple[str, ...] = MIXED_TEXTS, other: Tokenizer | None = None) -> None:
    """AssertionError naming what differs unless ``tokenizer`` follows the Tokenizer protocol on ``texts``.

    ``rebuild``: builds the tokenizer again as a resumed run does (same options, same run directory); the rebuilt
    tokenizer must encode every text identically and have the same fingerprint. ``other``: a tokenizer built with
    other options; where it encodes a text differently (another mapping), its fingerprint must differ, since data
    caches are keyed by it."""
    assert isinstance(tokenizer, Tokenizer), f"{type(tokenizer).__name__} lacks a Tokenizer method or attribute"
    size = tokenizer.vocab_size
    special = tokenizer.special
    ids = [special.pad, special.bos, special.eos, special.unk, special.mask, special.cls, special.sep]
    assert len(set(ids)) == 7, f"special ids are not distinct: {special}"
    assert all(0 <= i < size for i in ids), f"special ids out of range [0, {size}): {special}"
    encoded = [tokenizer.encode(text) for text in texts]
    for text, text_ids in zip(texts, encoded):
        assert all(isinstance(i, int) and 0 <= i < size for i in text_ids), \
            f"encode({text!r}) gives ids outside [0, {size}) or not int: {text_ids}"
        assert special.unk not in text_ids, f"encode({text!r}) gives unk: the round trip cannot be exact"
        decoded = tokenizer.decode(text_ids)
        assert decoded == text, f"round trip differs: {text!r} -> {text_ids} -> {decoded!r}"
    assert tokenizer.encode_batch(list(texts)) == encoded, \
        "encode_batch(texts) differs from [encode(t) for t in texts]"
    if hasattr(tokenizer, "encode_with_offsets"):
        check_offsets(tokenizer, texts)
    fingerprint = tokenizer.fingerprint()
    assert isinstance(fingerprint, str) and fingerprint, f"fingerprint() must be a non-empty str, got {fingerprint!r}"
    assert tokenizer.fingerprint() == fingerprint, "fingerprint() changes between two calls"
    if rebuild is not None:
        again = rebuild()
        assert again.fingerprint() == fingerprint, \
            f"the rebuilt tokenizer has another fingerprint: {again.fingerprint()!r} != {fingerprint!r}"
        for text, text_ids in zip(texts, encoded):
            assert again.encode(text) == text_ids, f"the rebuilt tokenizer encodes {text!r} differently"
    if other is not None and any(other.encode(text) != text_ids for text, text_ids in zip(texts, encoded)):
        assert other.fingerprint() != fingerprint, \
            f"another mapping has the same fingerprint {fingerprint!r}: data caches would mix them"


def check_offsets(tokenizer: Tokenizer, texts: tuple[str, ...] = MIXED_TEXTS) -> None:
    """AssertionError naming what differs unless ``tokenizer.encode_with_offsets`` gives, on each text, the ids of
    ``encode`` and one ``(start, end)`` span per token, inside the text, with starts and ends never going back, such
    that the tokens touching each word (a run of non-blank characters) spell it: the new characters each adds, in
    order, are the word, give or take blanks around it (a token may carry the space before a word)."""
    for text in texts:
        ids, offsets = tokenizer.encode_with_offsets(text)
        assert list(ids) == tokenizer.encode(text), f"encode_with_offsets({text!r}) gives other ids than encode"
        assert len(offsets) == len(ids), \
            f"encode_with_offsets({text!r}) gives {len(offsets)} offsets for {len(ids)} tokens"
        for n, (start, end) in enumerate(offsets):
            assert 0 <= start <= end <= len(text), \
                f"encode_with_offsets({text!r}): token {n} span ({start}, {end}) is outside the text"
            if n:
                assert start >= offsets[n - 1][0] and end >= offsets[n - 1][1], \
                    f"encode_with_offsets({text!r}): token {n} span ({start}, {end}) goes back from {offsets[n - 1]}"
        for word in re.finditer(r"\S+", text):
            spelled, covered = [], word.start()
            for start, end in offsets:
                if start < word.end() and end > word.start() and end > covered:
                    spelled.append(text[max(start, covered):end])
                    covered = end
            assert "".join(spelled).strip() == word.group(), \
                f"encode_with_offsets({text!r}): the tokens of {word.group()!r} spell {''.join(spelled)!r}"
