"""Cleaning step ``strip_control``: removes control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F)
except newline and tab. Line endings are normalized first: "\\r\\n" and a lone "\\r" become "\\n", so old Windows and
Mac text keeps its lines. Such characters are noise from binary data, terminal escapes and broken conversions; left
in, they cost vocabulary entries and teach the model nothing."""

from __future__ import annotations

import re

from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep

#: Every C0 and C1 control character but tab (U+0009) and newline (U+000A).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class StripControlOptions(PartOptions):
    line_endings: bool = Field(True, description='turn "\\r\\n" and lone "\\r" into "\\n" before removing control '
                                                 'characters (false: "\\r" is removed like the others)')


class StripControl(CleaningStep):
    name = "strip_control"

    def clean(self, text: str) -> str:
        if self.options.line_endings and "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return _CONTROL.sub("", text) if _CONTROL.search(text) else text


def build(options: StripControlOptions, ctx) -> StripControl:
    return StripControl(options)
