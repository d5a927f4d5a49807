"""Tokenizer part ``byte``: ids 0..255 are the UTF-8 bytes of the text, 256..262 the special tokens.

Needs no training and no files, and round-trips any UTF-8 text exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from hookformer.core.parts import BuildContext, PartOptions, SpecialTokens

#: Names of the special tokens in the Hugging Face files, by role (as SentencePiece names them).
HF_SPECIAL_NAMES = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>", "cls": "<cls>",
                    "sep": "<sep>"}


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

    def save_hf(self, folder: Path) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (``hookformer export``): a BPE with the 256 byte
        tokens ``<0x00>``..``<0xFF>`` at their byte values, no other piece and no merge, so byte fallback spells every
        character in its UTF-8 bytes, exactly as :meth:`encode`."""
        from tokenizers import Tokenizer, models

        vocab = {f"<0x{b:02X}>": b for b in range(256)}
        vocab.update({HF_SPECIAL_NAMES[role]: getattr(self.special, role) for role in HF_SPECIAL_NAMES})
        write_hf_files(folder, Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True)))


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


def write_hf_files(folder: Path, tokenizer) -> None:
    """Save a ``tokenizers.Tokenizer`` whose model's vocabulary names the special tokens as :data:`HF_SPECIAL_NAMES`,
    with a byte-fallback decoder and a ``tokenizer_config.json`` naming the special tokens. ``split_special_tokens``:
    text that spells a special token's name is ordinary text, as in hookformer (which never produces special ids from
    text)."""
    from tokenizers import AddedToken, decoders

    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(HF_SPECIAL_NAMES[role], special=True, normalized=False)
                                  for role in HF_SPECIAL_NAMES])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "split_special_tokens": True,
                "clean_up_tokenization_spaces": False,
                **{f"{role}_token": name for role, name in HF_SPECIAL_NAMES.items()}}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")


def build(options: ByteTokenizerOptions, ctx: BuildContext) -> ByteTokenizer:
    return ByteTokenizer()
