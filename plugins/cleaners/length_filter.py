"""Cleaning step ``length_filter``: removes documents that are too short to teach anything (menu items, captions,
stubs) or longer than you want (dumps, logs), counted in characters and in words.

"Words" are whitespace-separated pieces of text, not tokens: cleaning runs before the tokenizer is trained, so no
token count exists yet. As a rule of thumb English prose has about 1.3 SentencePiece tokens per word at a 32k
vocabulary, more at smaller ones; ``data.max_document_tokens`` cuts long documents by tokens later instead.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep


class LengthFilterOptions(PartOptions):
    min_chars: int = Field(0, ge=0, description="remove documents with fewer characters")
    max_chars: int | None = Field(None, ge=1, description="remove documents with more characters (null: no limit)")
    min_words: int = Field(0, ge=0, description="remove documents with fewer whitespace-separated words")
    max_words: int | None = Field(None, ge=1, description="remove documents with more whitespace-separated words "
                                                          "(null: no limit)")

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "LengthFilterOptions":
        for low, high in (("min_chars", "max_chars"), ("min_words", "max_words")):
            if getattr(self, high) is not None and getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is larger than {high} ({getattr(self, high)}): "
                                 f"every document would be removed")
        return self


class LengthFilter(CleaningStep):
    name = "length_filter"

    def clean(self, text: str) -> str | None:
        o = self.options
        if len(text) < o.min_chars or (o.max_chars is not None and len(text) > o.max_chars):
            return None
        if o.min_words or o.max_words is not None:
            words = len(text.split())
            if words < o.min_words or (o.max_words is not None and words > o.max_words):
                return None
        return text


def build(options: LengthFilterOptions, ctx) -> LengthFilter:
    return LengthFilter(options)
