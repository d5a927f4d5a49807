"""Data part ``code_summaries``: a sequence-to-sequence task that needs no download, for the encoder-decoder demo.

Each example is a function, method or class of the standard library (parsed with ``ast`` from the sources CPython
ships, as for the ``builtin`` corpus): the source is its code without the docstring (dedented, decorators left out),
the target is the docstring's first sentence (its first paragraph, whitespace collapsed, up to the first ``.``, ``!``
or ``?`` that ends a sentence). Definitions whose body is only the docstring, summaries of fewer than
``min_summary_words`` words or more than ``max_summary_words``, and exact duplicate sources are left out.

The split is by module: whole modules (files, e.g. ``email.message``) are drawn at random (seeded) into validation
until it holds ``val_fraction`` of the examples, so no module has examples on both sides and the model is scored on
code it has never seen. The examples are extracted once per Python version into a JSONL file in the cache; the
tables are built like those of data part ``pairs`` (same fields, truncation and report).
"""

from __future__ import annotations

import ast
import json
import platform
import re
import sys
import sysconfig
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import Field, model_validator

from hookformer.core.checkpoint import write_atomically
from hookformer.core.parts import BuildContext, PartOptions
from hookformer.plugins.data.common import cache_root
from hookformer.plugins.data.pairs import Pairs, PairsSource
from hookformer.plugins.data.python_docs import stdlib_modules

#: Part of the cache file name: bump it when extraction changes, so cached examples are rebuilt.
EXTRACTION_VERSION = 1
#: Sources are cut to this many characters when extracted (the token limit cuts them further).
MAX_SOURCE_CHARS = 4000
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s+[A-Z(`'\"]|$)")
_NAME = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)")
_WORD_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\d|\b)|[A-Z]?[a-z]+|[A-Z]+|\d+")


class CodeSummariesOptions(PartOptions):
    max_source_tokens: int = Field(256, ge=2, le=1_000_000, description="longest source (code), its "
                                   "end-of-sequence token included; longer ones lose their end")
    max_target_tokens: int = Field(48, ge=2, le=1_000_000, description="longest target (summary), its "
                                   "end-of-sequence token included; longer ones lose their end")
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5, description="share of the examples held out for validation, "
                                "drawn as whole modules")
    min_summary_words: int = Field(3, ge=1, description="leave out definitions whose summary has fewer words")
    max_summary_words: int = Field(30, ge=1, description="leave out definitions whose summary has more words")
    max_examples: int | None = Field(None, ge=2, description="use only the first this many examples (in module "
                                     "order, before the split); null: all")
    cache_dir: str | None = Field(None, description="where the extracted examples are cached (default: "
                                  "$HOOKFORMER_CACHE/data, or ~/.cache/hookformer/data)")

    @model_validator(mode="after")
    def _words(self):
        if self.max_summary_words < self.min_summary_words:
            raise ValueError(f"data.max_summary_words ({self.max_summary_words}) is below data.min_summary_words "
                             f"({self.min_summary_words})")
        return self


def first_sentence(docstring: str) -> str:
    """The first sentence of a docstring's first paragraph, whitespace collapsed (the whole paragraph when no
    sentence end is found)."""
    paragraph = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    match = _SENTENCE.match(paragraph)
    return match.group(1) if match else paragraph


def without_docstring(lines: list[str], node: ast.AST) -> str | None:
    """The source of definition ``node`` (from the module's ``lines``) with its docstring statement removed,
    dedented; None when nothing but the docstring is in its body or the docstring shares the header's line."""
    docstring = node.body[0]
    if len(node.body) == 1 or docstring.lineno == node.lineno:
        return None
    kept = lines[node.lineno - 1:docstring.lineno - 1] + lines[docstring.end_lineno:node.end_lineno]
    return textwrap.dedent("".join(kept)).rstrip()[:MAX_SOURCE_CHARS]


def definitions(module: str, source: bytes, tree: ast.Module) -> Iterator[dict]:
    """{"module", "name", "source", "summary"} of every documented function, method and class of one module."""
    lines = source.decode("utf-8", errors="replace").splitlines(keepends=True)
    for node in ast.walk(tree):
        if not isinstance(node, _DEFINITIONS):
            continue
        docstring = ast.get_docstring(node, clean=True)
        code = without_docstring(lines, node) if docstring else None
        if code:
            yield {"module": module, "name": node.name, "source": code, "summary": first_sentence(docstring)}


def extract() -> list[dict]:
    """Every example of the standard library in module order, exact duplicate sources dropped."""
    records, seen = [], set()
    for module, source, tree in stdlib_modules(Path(sysconfig.get_paths()["stdlib"])):
        for record in definitions(module, source, tree):
            if record["source"] not in seen:
                seen.add(record["source"])
                records.append(record)
    return records


def examples_file(root: Path) -> tuple[Path, float | None]:
    """The cached examples of this Python, extracted if missing; and the seconds extraction took (None: cached)."""
    path = root / "builtin" / (f"code-summaries-v{EXTRACTION_VERSION}-{sys.implementation.name}-"
                               f"{platform.python_version()}.jsonl")
    if path.exists():
        return path, None
    start = time.perf_counter()
    records = extract()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    return path, time.perf_counter() - start


def split_by_module(records: list[dict], val_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Whole modules, drawn in a seeded order, go to validation until it holds ``val_fraction`` of the records."""
    modules = sorted({record["module"] for record in records})
    sizes = Counter(record["module"] for record in records)
    held_out, count = set(), 0
    for index in np.random.default_rng(seed).permutation(len(modules)):
        if count >= max(1, round(len(records) * val_fraction)):
            break
        held_out.add(modules[index])
        count += sizes[modules[index]]
    return {"train": [r for r in records if r["module"] not in held_out],
            "validation": [r for r in records if r["module"] in held_out]}


def name_words(source: str) -> str:
    """Baseline summary: the defined name, split into lower-case words (``HTTPServer.get_request`` -> "get
    request", ``HTTPServer`` -> "http server")."""
    match = _NAME.match(source)
    return " ".join(part.lower() for part in _WORD_PARTS.findall(match.group(1))) if match else ""


def most_frequent(summaries: list[str]) -> str:
    """Baseline summary: the most frequent training summary (the first in order among ties)."""
    return Counter(summaries).most_common(1)[0][0]


def build(options: CodeSummariesOptions, ctx: BuildContext) -> PairsSource:
    path, seconds = examples_file(cache_root(options))
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    in_bounds = [r for r in records
                 if options.min_summary_words <= len(r["summary"].split()) <= options.max_summary_words]
    kept = in_bounds[:options.max_examples] if options.max_examples is not None else in_bounds
    splits = split_by_module(kept, options.val_fraction, ctx.seed)
    report = {"source": "code_summaries", "corpus": str(path), "extraction_seconds": seconds,
              "definitions": {"read": len(records), "summary_length_out_of_bounds": len(records) - len(in_bounds),
                              "kept": len(kept)},
              "modules": {split: len({r["module"] for r in rows}) for split, rows in splits.items()}}
    return PairsSource({split: Pairs([r["source"] for r in rows], [r["summary"] for r in rows])
                        for split, rows in splits.items()},
                       max_source_tokens=options.max_source_tokens, max_target_tokens=options.max_target_tokens,
                       report=report)
