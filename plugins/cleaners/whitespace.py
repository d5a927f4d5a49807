"""Cleaning step ``whitespace``: normalizes spacing without touching the words.

Lines are the pieces between "\\n". Within a line, every run of whitespace after the first word (spaces, tabs,
no-break and other Unicode spaces, and any other whitespace character such as "\\r" or form feed) becomes one space;
indentation (the whitespace a line starts with) is kept as it is by default, because it is meaning in code and verse.
Whitespace at the end of lines goes, more than ``max_blank_lines`` consecutive blank lines become that many, and the
document loses its leading and trailing blank lines. Lines are never joined, so the line-based steps
(``repetition_filter``) see the same lines.
"""

from __future__ import annotations

from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep


class WhitespaceOptions(PartOptions):
    keep_indentation: bool = Field(True, description="keep the whitespace lines start with (code, verse); false "
                                                     "removes it")
    max_blank_lines: int = Field(2, ge=0, description="longer runs of blank lines are cut to this many")


class Whitespace(CleaningStep):
    name = "whitespace"

    def clean(self, text: str) -> str:
        keep_indentation, max_blank = self.options.keep_indentation, self.options.max_blank_lines
        lines: list[str] = []
        blank = 0
        for line in text.split("\n"):
            words = line.split()  # str.split() without arguments: any run of whitespace, ends dropped
            if not words:
                blank += 1
                continue
            if lines and blank:
                lines += [""] * min(blank, max_blank)
            blank = 0
            body = " ".join(words)
            if keep_indentation and line[0].isspace():
                body = line[: len(line) - len(line.lstrip())] + body
            lines.append(body)
        return "\n".join(lines)


def build(options: WhitespaceOptions, ctx) -> Whitespace:
    return Whitespace(options)
