"""Cleaning step ``nfkc``: Unicode normalization (NFKC by default), so that visually identical text is spelled the
same way: compatibility characters (ligatures such as "ﬁ", full-width letters, non-breaking spaces) become their plain
forms and combining sequences are composed. It runs before deduplication, so near-identical spellings match."""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep


class NfkcOptions(PartOptions):
    form: Literal["NFKC", "NFC", "NFKD", "NFD"] = Field(
        "NFKC", description="the Unicode normalization form: NFKC also folds compatibility characters (ligatures, "
                            "full-width forms, non-breaking spaces); NFC only composes combining sequences")


class Nfkc(CleaningStep):
    name = "nfkc"

    def clean(self, text: str) -> str:
        form = self.options.form
        # is_normalized answers fast for text that needs nothing (ASCII always), which is most text.
        return text if unicodedata.is_normalized(form, text) else unicodedata.normalize(form, text)


def build(options: NfkcOptions, ctx) -> Nfkc:
    return Nfkc(options)
