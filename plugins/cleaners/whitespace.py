"""Cleaning step ``whitespace``: normalizes spacing without touching the words.

Within a line, a run of spaces and tabs (and other horizontal spaces: no-break, em, ideographic...) after the first
word becomes one space; indentation (the whitespace a line starts with) is kept by default, because it is meaning in
code and verse. Whitespace at the end of lines goes, more than ``max_blank_lines`` consecutive blank lines become
that many, and the document loses its leading blank lines and trailing whitespace. Line breaks are never added or
joined, so the line-based steps (``repetition_filter``) see the same lines.
"""

from __future__ import annotations

import re

from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep

#: Horizontal whitespace: every whitespace character but the line breaks.
_SPACE = r"[^\S\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"
_TRAILING = re.compile(rf"{_SPACE}+$", re.MULTILINE)
#: After a non-space character: two or more spaces, or one that is not a plain space (a tab, a no-break space).
_INNER_RUN = re.compile(rf"(?<=\S)(?:{_SPACE}{{2,}}|(?! ){_SPACE})")
_INDENT = re.compile(rf"^{_SPACE}+", re.MULTILINE)


class WhitespaceOptions(PartOptions):
    keep_indentation: bool = Field(True, description="keep the whitespace lines start with (code, verse); false "
                                                     "removes it")
    max_blank_lines: int = Field(2, ge=0, description="longer runs of blank lines are cut to this many")


class Whitespace(CleaningStep):
    name = "whitespace"

    def __init__(self, options: WhitespaceOptions):
        super().__init__(options)
        self._blank_run = re.compile("\n" * (options.max_blank_lines + 2) + "+")
        self._blank_lines = "\n" * (options.max_blank_lines + 1)

    def clean(self, text: str) -> str:
        text = _TRAILING.sub("", text)
        text = _INNER_RUN.sub(" ", text)
        if not self.options.keep_indentation:
            text = _INDENT.sub("", text)
        text = self._blank_run.sub(self._blank_lines, text)
        return text.lstrip("\n").rstrip()


def build(options: WhitespaceOptions, ctx) -> Whitespace:
    return Whitespace(options)
