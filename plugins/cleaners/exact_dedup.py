"""Cleaning step ``exact_dedup``: keeps the first of documents that are the same text up to case and spacing.

A document's key is a 128-bit BLAKE2b hash of its text casefolded (``str.casefold``: a stronger ``lower`` that also
folds "ß" to "ss") with every run of whitespace made one space and the ends stripped, so copies that differ only in
capitalization, indentation or line wrapping count as one. The step is stateful: it remembers the key of every
document it kept (16 bytes each) and removes later documents with a known key, in document order. Put it after the
steps that edit text, so it compares cleaned documents.
"""

from __future__ import annotations

import hashlib

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep


class ExactDedupOptions(PartOptions):
    pass


class ExactDedup(CleaningStep):
    name = "exact_dedup"
    stateful = True

    def __init__(self, options: ExactDedupOptions):
        super().__init__(options)
        self._seen: set[bytes] = set()

    def clean(self, text: str) -> str | None:
        key = hashlib.blake2b(" ".join(text.casefold().split()).encode(), digest_size=16).digest()
        if key in self._seen:
            return None
        self._seen.add(key)
        return text

    def state_dict(self) -> dict:
        """The keys seen so far (16 bytes each), for a streamed run's checkpoint."""
        return {"seen": b"".join(self._seen)}

    def load_state_dict(self, state: dict) -> None:
        keys = state["seen"]
        self._seen = {keys[i:i + 16] for i in range(0, len(keys), 16)}


def build(options: ExactDedupOptions, ctx) -> ExactDedup:
    return ExactDedup(options)
