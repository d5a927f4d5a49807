"""Cleaning step ``repetition_filter``: removes documents that repeat themselves: boilerplate, spam, generated text,
scraped pages that are mostly navigation. The rules and default thresholds are Gopher's (Rae et al. 2021, "Scaling
Language Models", appendix A); a document is removed when any rule exceeds its threshold:

- duplicate lines: the share of a document's non-blank lines that repeat an earlier line of it (default 0.30), and
  the share of its line characters in such lines (default 0.20);
- the top n-gram, for n = 2, 3, 4: the share of the document's characters covered by the occurrences of its most
  repeated word n-gram (the one covering the most characters; defaults 0.20, 0.18, 0.16);
- duplicate n-grams, for n = 5 to 10: the share of characters in word n-grams that occur earlier in the document,
  each character counted once however many such n-grams overlap it (defaults 0.15, 0.14, ..., 0.10).

Words are whitespace-separated, and "characters" are the characters of the words (whitespace is not counted), so
re-indenting a document does not change its scores. A batch is scored at once with Arrow and numpy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep

_FRACTION = dict(ge=0.0, le=1.0)
#: Odd 64-bit multipliers for the rolling n-gram hash and for mixing the document index and keys.
_ROLL = np.uint64(0x9E3779B97F4A7C15)
_DOC = np.uint64(0xD6E8FEB86659FD93)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


class RepetitionFilterOptions(PartOptions):
    max_duplicate_line_fraction: float = Field(0.30, **_FRACTION, description="remove a document when more than "
                                               "this share of its non-blank lines repeat an earlier line")
    max_duplicate_line_char_fraction: float = Field(0.20, **_FRACTION, description="remove a document when more "
                                                    "than this share of its line characters are in repeated lines")
    max_top_ngram_char_fraction: dict[int, float] = Field(
        {2: 0.20, 3: 0.18, 4: 0.16}, description="n -> remove a document when the occurrences of its most repeated "
        "word n-gram cover more than this share of its characters ({} disables the rule)")
    max_duplicate_ngram_char_fraction: dict[int, float] = Field(
        {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}, description="n -> remove a document when more than "
        "this share of its characters are in word n-grams that occur earlier in it ({} disables the rule)")


class RepetitionFilter(CleaningStep):
    name = "repetition_filter"

    def __call__(self, texts: list[str]) -> list[str | None]:
        scores = self.scores(texts)
        o = self.options
        bad = (scores["duplicate_lines"] > o.max_duplicate_line_fraction) | (
            scores["duplicate_line_chars"] > o.max_duplicate_line_char_fraction)
        for n, limit in o.max_top_ngram_char_fraction.items():
            bad |= scores[f"top_{n}gram_chars"] > limit
        for n, limit in o.max_duplicate_ngram_char_fraction.items():
            bad |= scores[f"duplicate_{n}gram_chars"] > limit
        return [None if drop else text for text, drop in zip(texts, bad.tolist())]

    def scores(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Every rule's score for every document of the batch: ``duplicate_lines``, ``duplicate_line_chars``,
        ``top_{n}gram_chars`` and ``duplicate_{n}gram_chars`` for the n of the options."""
        array = pa.array(texts, pa.large_string())
        scores = _line_scores(array)
        words = pc.utf8_split_whitespace(array)
        doc = _list_parent_indices(words)
        flat = pc.list_flatten(words)
        ids = pc.dictionary_encode(flat).indices.to_numpy(zero_copy_only=False).astype(np.uint64)
        chars = pc.utf8_length(flat).to_numpy(zero_copy_only=False).astype(np.int64)
        total_chars = np.bincount(doc, weights=chars, minlength=len(texts))
        char_prefix = np.concatenate([[0], np.cumsum(chars)])
        wanted = {*self.options.max_top_ngram_char_fraction, *self.options.max_duplicate_ngram_char_fraction}
        hashes = ids.copy()
        for n in range(1, max(wanted, default=0) + 1):
            if n > 1:
                hashes = hashes[:-1] * _ROLL + ids[n - 1:]
            if n not in wanted:
                continue
            # n-grams that do not cross a document boundary, keyed by (document, n-gram).
            start = np.flatnonzero(doc[: len(hashes)] == doc[n - 1:]) if len(hashes) else np.zeros(0, np.int64)
            position, first = _group(hashes[start] + doc[start].astype(np.uint64) * _DOC)
            if n in self.options.max_top_ngram_char_fraction:
                top = self._top_ngram(position, first, start, n, char_prefix, doc, len(texts))
                scores[f"top_{n}gram_chars"] = self._covered(top, n, chars, doc, total_chars)
            if n in self.options.max_duplicate_ngram_char_fraction:
                repeats = start[position[~first]]
                scores[f"duplicate_{n}gram_chars"] = self._covered(repeats, n, chars, doc, total_chars)
        return scores

    @staticmethod
    def _top_ngram(position: np.ndarray, first: np.ndarray, start: np.ndarray, n: int, char_prefix: np.ndarray,
                   doc: np.ndarray, n_docs: int) -> np.ndarray:
        """The start of every occurrence of each document's top n-gram: the repeated one whose occurrences hold the
        most characters (of equals, the one that comes first)."""
        opens = np.flatnonzero(first)
        counts = np.diff(opens, append=len(position))
        first_start = start[position[opens]]
        weight = np.where(counts > 1, counts * (char_prefix[first_start + n] - char_prefix[first_start]), 0)
        owner = doc[first_start]
        best = np.zeros(n_docs, dtype=weight.dtype)
        np.maximum.at(best, owner, weight)
        tied = (weight == best[owner]) & (weight > 0)
        earliest = np.full(n_docs, np.iinfo(np.int64).max)
        np.minimum.at(earliest, owner[tied], first_start[tied])
        chosen = tied & (first_start == earliest[owner])
        return start[position[chosen[np.cumsum(first) - 1]]]

    @staticmethod
    def _covered(starts: np.ndarray, n: int, chars: np.ndarray, doc: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Per document, the share of its word characters inside at least one of the n-grams at ``starts``."""
        depth = np.cumsum(np.bincount(starts, minlength=len(chars) + 1)
                          - np.bincount(starts + n, minlength=len(chars) + 1))[: len(chars)]
        return _share(np.bincount(doc, weights=chars * (depth > 0), minlength=len(total)), total)


def _line_scores(array: pa.Array) -> dict[str, np.ndarray]:
    """The duplicate-line scores: lines are stripped, blank ones ignored, a repeat is an exact copy."""
    lines = pc.split_pattern(array, "\n")
    doc = _list_parent_indices(lines)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lines))
    chars = pc.utf8_length(flat).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = chars > 0
    doc, chars = doc[keep], chars[keep]
    ids = pc.dictionary_encode(flat.filter(pa.array(keep))).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    position, first = _group((ids * len(array) + doc).astype(np.uint64))
    repeat = np.zeros(len(ids), dtype=bool)
    repeat[position[~first]] = True
    n = len(array)
    return {
        "duplicate_lines": _share(np.bincount(doc, weights=repeat, minlength=n), np.bincount(doc, minlength=n)),
        "duplicate_line_chars": _share(np.bincount(doc, weights=chars * repeat, minlength=n),
                                       np.bincount(doc, weights=chars, minlength=n)),
    }


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal keys grouped with one sort: the positions of the keys ordered by key, then by position, and whether each
    is the first of its key. Keys are mixed, cut to the bits the positions leave free and sorted together with the
    positions; two different keys meet with probability about 2^-(64 - log2 len(keys)) per pair, negligible here."""
    bits = max(1, len(keys).bit_length())
    mixed = (keys * _MIX) >> np.uint64(bits) << np.uint64(bits)
    packed = np.sort(mixed | np.arange(len(keys), dtype=np.uint64))
    position = (packed & np.uint64((1 << bits) - 1)).astype(np.int64)
    key = packed >> np.uint64(bits)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    return position, first


def _list_parent_indices(lists: pa.Array) -> np.ndarray:
    return pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.divide(part, whole, out=np.zeros(len(part)), where=whole > 0)


def build(options: RepetitionFilterOptions, ctx) -> RepetitionFilter:
    return RepetitionFilter(options)
