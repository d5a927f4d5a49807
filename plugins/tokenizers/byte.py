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

    def decode(self, ids: Iterable[int]) -> str:
        """Bytes back to text. Special and out-of-range ids are dropped; byte sequences that are not valid UTF-8
        (a model can generate them) become U+FFFD."""
        return bytes(i for i in map(int, ids) if 0 <= i < 256).decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        return "byte-utf8-v1"


def build(options: ByteTokenizerOptions, ctx: BuildContext) -> ByteTokenizer:
    return ByteTokenizer()
