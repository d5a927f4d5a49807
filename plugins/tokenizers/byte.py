"""Tokenizer part ``byte``: ids 0..255 are the UTF-8 bytes of the text, 256..262 the special tokens.

Needs no training and no files, and round-trips any UTF-8 text exactly.
"""

from __future__ import annotations

from typing import Iterable

from hookformer.core.parts import BuildContext, PartOptions, SpecialTokens


class ByteTokenizerOptions(PartOptions):
    """The byte tokenizer has no options."""


class ByteTokenizer:
    """UTF-8 bytes plus pad, bos, eos, unk, mask, cls, sep (in that order after the 256 byte ids)."""

    special = SpecialTokens(pad=256, bos=257, eos=258, unk=259, mask=260, cls=261, sep=262)
    vocab_size = 263

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """``encode(text)`` and the character span of each byte token (every byte of a character covers it)."""
        ids = self.encode(text)
        return ids, char_spans(text, [1] * len(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Bytes back to text. Special and out-of-range ids are dropped; byte sequences that are not valid UTF-8
        (a model can generate them) become U+FFFD."""
        return bytes(i for i in map(int, ids) if 0 <= i < 256).decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        return "byte-utf8-v1"


def char_spans(text: str, byte_lengths: Iterable[int]) -> list[tuple[int, int]]:
    """The character spans ``(start, end)`` in ``text`` of consecutive tokens that spell its UTF-8 bytes, given each
    token's length in bytes: a token holding some of a character's bytes covers the whole character."""
    char_of_byte = [i for i, char in enumerate(text) for _ in range(len(char.encode("utf-8")))]
    char_of_byte.append(len(text))
    spans, byte = [], 0
    for length in byte_lengths:
        start = char_of_byte[byte]
        byte += length
        spans.append((start, char_of_byte[byte - 1] + 1 if length else start))
    if byte != len(char_of_byte) - 1:
        raise ValueError(f"the tokens spell {byte} bytes, the text has {len(char_of_byte) - 1}")
    return spans


def build(options: ByteTokenizerOptions, ctx: BuildContext) -> ByteTokenizer:
    return ByteTokenizer()
