"""Cleaning step ``strip_markup``: removes stray HTML and XML markup left in text by scraping and conversions.

It is conservative: it removes only what cannot be prose, so text *about* markup or code with ``<`` and ``>`` stays.

- comments ``<!-- ... -->``, declarations ``<!DOCTYPE ...>`` and processing instructions ``<?xml ...?>``;
  ``<![CDATA[ ... ]]>`` keeps its content;
- ``<script>`` and ``<style>`` elements with their content (code, never prose);
- tags of HTML elements (names case-insensitive) and of XML elements with a namespace prefix (``<w:t>``), when they
  are plainly markup: a tag with an attribute value (``<a href="...">``), a self-closing tag (``<br/>``), a void
  element (``<br>``, ``<hr>``, ``<wbr>``), or a bare tag whose element has both a start and an end tag in the
  document (``<p>...</p>``). A lone ``<body>`` or ``<input>`` is a placeholder in prose or code, and stays, as do
  ``<a statement>`` (an attribute without a value) and names that are not HTML elements (``List<String>``, ``<T>``).
  Tags of block elements (p, div, li, br, tr, h1...) become a newline so paragraphs do not run together; the others
  vanish;
- character references ending in ``;``: named (``&amp;``, ``&nbsp;``) and numeric (``&#39;``, ``&#x27;``) ones
  become their character; an unknown name or one without ``;`` (``AT&T``, ``?a=1&copy=2``) is left alone.

Known limit: text that discusses HTML with real tag pairs (``write <b>bold</b>``) loses them. Put this step before
``strip_control`` (a reference may produce a control character) and before ``whitespace`` (removed tags leave spaces
and blank lines).
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
#: Elements that never have an end tag: a bare ``<br>`` is markup.
VOID_ELEMENTS = frozenset({"br", "hr", "wbr"})

_ATTRIBUTES = r"""(?:\s+[^\s"'<>/=]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>=`]+))?)*"""
_NAME = r"[A-Za-z][A-Za-z0-9]*(?::[A-Za-z][\w.-]*)?"
_TAG = re.compile(rf"<(/?)({_NAME})({_ATTRIBUTES})\s*(/?)>")
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
            tags = _TAG.findall(text)
            if tags:
                starts = {name.lower() for slash, name, _, _ in tags if not slash}
                paired = starts & {name.lower() for slash, name, _, _ in tags if slash}
                text = _TAG.sub(lambda match: self._tag(match, paired), text)
        if self.options.references and "&" in text:
            text = _REFERENCE.sub(lambda match: html.unescape(match[0]), text)
        return text

    def _tag(self, match: re.Match, paired: set[str]) -> str:
        """The replacement of one tag: a newline, nothing, or the tag itself when it may not be markup."""
        name = match[2].lower()
        if not (name in BLOCK_ELEMENTS or name in self._inline or ":" in name):
            return match[0]
        if not ("=" in match[3] or match[4] or name in VOID_ELEMENTS or name in paired):
            return match[0]
        return "\n" if name in BLOCK_ELEMENTS else ""


def build(options: StripMarkupOptions, ctx) -> StripMarkup:
    return StripMarkup(options)
