"""Cleaning step ``strip_markup``: removes stray HTML and XML markup left in text by scraping and conversions.

It is conservative: it removes only what cannot be prose, so text *about* markup or code with ``<`` and ``>`` stays.

- comments ``<!-- ... -->``, declarations ``<!DOCTYPE ...>`` and processing instructions ``<?xml ...?>``;
  ``<![CDATA[ ... ]]>`` keeps its content;
- ``<script>`` and ``<style>`` elements with their content (code, never prose);
- start, end and self-closing tags of HTML elements (``<p>``, ``</div>``, ``<br/>``, ``<a href="...">``; names
  case-insensitive, attributes well-formed) and of XML elements with a namespace prefix (``<w:t>``); tags of block
  elements (p, div, li, br, tr, h1...) become a newline so paragraphs do not run together, the others vanish;
  a name that is not an HTML element (``List<String>``, ``<T>``, ``<your name>``) is left alone;
- character references ending in ``;``: named (``&amp;``, ``&nbsp;``) and numeric (``&#39;``, ``&#x27;``) ones
  become their character; an unknown name or one without ``;`` (``AT&T``, ``?a=1&copy=2``) is left alone.

Known limit: a comparison written without spaces that happens to look like a tag with attributes (``x<b and c>y``)
is taken for a ``<b>`` tag. Put this step before ``strip_control`` (a reference may produce a control character)
and before ``whitespace`` (removed tags leave spaces and blank lines).
"""

from __future__ import annotations

import html
import re

from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep

#: Elements whose tags become a line break: removing them must not join two paragraphs.
BLOCK_ELEMENTS = frozenset("""
    address article aside blockquote body br caption dd details dialog div dl dt fieldset figcaption figure footer
    form h1 h2 h3 h4 h5 h6 head header hgroup hr html li main nav ol p pre section summary table tbody td tfoot th
    thead title tr ul
""".split())
#: Elements whose tags simply vanish.
INLINE_ELEMENTS = frozenset("""
    a abbr acronym area audio b base bdi bdo big button canvas center cite code col colgroup data datalist del dfn
    em embed font i iframe img input ins kbd label legend link map mark meta meter noscript object optgroup option
    output param picture progress q rp rt ruby s samp select slot small source span strike strong sub sup svg
    template textarea time track tt u var video wbr
""".split())

_ATTRIBUTES = r"""(?:\s+[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>=`]+))?)*"""
_NAME = r"[A-Za-z][A-Za-z0-9]*(?::[A-Za-z][\w.-]*)?"
_TAG = re.compile(rf"</?({_NAME}){_ATTRIBUTES}\s*/?>")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_DECLARATION = re.compile(r"<![A-Za-z][^<>]*>|<\?[A-Za-z][^<>]*\?>")
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_SCRIPT = re.compile(r"<(script|style)\b[^<>]*>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_REFERENCE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


class StripMarkupOptions(PartOptions):
    references: bool = Field(True, description="turn character references ending in ';' (&amp; &#39; &#x27;) into "
                                               "their characters")
    extra_elements: list[str] = Field([], description="more element names whose tags are removed (e.g. the "
                                                      "vocabulary of an XML format without namespace prefixes)")


class StripMarkup(CleaningStep):
    name = "strip_markup"

    def __init__(self, options: StripMarkupOptions):
        super().__init__(options)
        self._inline = INLINE_ELEMENTS | {name.lower() for name in options.extra_elements}

    def clean(self, text: str) -> str:
        if "<" in text:
            text = _COMMENT.sub("", text)
            text = _CDATA.sub(r"\1", text)
            text = _DECLARATION.sub("", text)
            text = _SCRIPT.sub("", text)
            text = _TAG.sub(self._tag, text)
        if self.options.references and "&" in text:
            text = _REFERENCE.sub(lambda match: html.unescape(match[0]), text)
        return text

    def _tag(self, match: re.Match) -> str:
        name = match[1].lower()
        if name in BLOCK_ELEMENTS:
            return "\n"
        if name in self._inline or ":" in name:
            return ""
        return match[0]


def build(options: StripMarkupOptions, ctx) -> StripMarkup:
    return StripMarkup(options)
