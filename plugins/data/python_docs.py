"""Data part ``builtin``: the Python documentation that ships with CPython, so a run needs no download.

Two kinds of document: the language reference topics of ``pydoc_data.topics`` (one per topic), and the module, class
and function docstrings of the standard library, found by parsing its source with ``ast`` (importing modules could
run their side effects). The corpus is written once per Python version to a JSONL file in the cache, then read like
any JSONL source.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import platform
import sys
import sysconfig
import time
import warnings
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field

from hookformer.core.checkpoint import write_atomically
from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.common import DataOptions, cache_root, files_fingerprint
from hookformer.plugins.data.pipeline import PackedSource
from hookformer.plugins.data.tabular import read_jsonl

#: Part of the corpus file name: bump it when extraction changes, so cached corpora are rebuilt.
CORPUS_VERSION = 1
MIN_CHARS = 40
#: Directories of the standard library tree that are not documentation: test suites, tools, installed packages.
SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo",
                       "__phello__", "__pycache__", "lib-dynload", "ensurepip"})
_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)  # the nodes that can hold a definition

Kind = Literal["topics", "docstrings"]


class PythonDocsOptions(DataOptions):
    include: list[Kind] = Field(["topics", "docstrings"], min_length=1,
                                description="topics: the language reference topics of pydoc; docstrings: the "
                                            "standard library's module, class and function docstrings")


def topic_documents() -> Iterator[tuple[str, str]]:
    """(name, text) of every pydoc topic, sorted by name."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise DataError("this Python has no pydoc_data (some distributions leave it out): set data.include to "
                        "[docstrings] or use the text data source") from exc
    for name in sorted(topics):
        yield f"topic {name}", topics[name]


def stdlib_modules(stdlib: Path) -> Iterator[tuple[str, bytes, ast.Module]]:
    """(module name, source, parsed tree) of the Python files under ``stdlib``, in sorted path order, without test
    suites and installed packages; files that do not parse (another Python version's) are left out."""
    for directory, subdirs, files in os.walk(stdlib):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and not d.startswith("config-"))
        for name in sorted(f for f in files if f.endswith(".py")):
            path = Path(directory, name)
            module = ".".join(path.relative_to(stdlib).with_suffix("").parts).removesuffix(".__init__")
            source = path.read_bytes()
            try:
                with warnings.catch_warnings():  # invalid escape sequences and the like are not our concern
                    warnings.simplefilter("ignore")
                    tree = ast.parse(source, filename=str(path))
            except (SyntaxError, ValueError):  # a file for another Python version, or not Python at all
                continue
            yield module, source, tree


def docstring_documents(stdlib: Path) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) of the modules, classes and functions under ``stdlib``, in sorted path
    order, without test suites and installed packages."""
    for module, _, tree in stdlib_modules(stdlib):
        yield from _docstrings(tree, module)


def _docstrings(node: ast.AST, qualname: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, (ast.Module, *_DEFINITIONS)):
        doc = ast.get_docstring(node, clean=True)  # clean=True is inspect.cleandoc
        if doc:
            yield qualname, doc
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _BLOCKS):  # definitions are statements: expressions need no visit
            yield from _docstrings(child, f"{qualname}.{child.name}" if isinstance(child, _DEFINITIONS) else qualname)


def extract(include: list[Kind]) -> list[dict]:
    """The corpus records ({"name", "text"}), topics first, in a fixed order; short and duplicate texts dropped."""
    kinds = []
    if "topics" in include:
        kinds.append(topic_documents())
    if "docstrings" in include:
        kinds.append(docstring_documents(Path(sysconfig.get_paths()["stdlib"])))
    records, seen = [], set()
    for name, text in itertools.chain(*kinds):
        if len(text) >= MIN_CHARS and text not in seen:
            seen.add(text)
            records.append({"name": name, "text": text})
    return records


def corpus_file(root: Path, include: list[Kind]) -> tuple[Path, float | None]:
    """The corpus JSONL file for this Python and ``include``, extracted if missing; and the seconds extraction
    took (None when the file was already there)."""
    kinds = "+".join(kind for kind in ("topics", "docstrings") if kind in include)
    path = root / "builtin" / (f"python-docs-v{CORPUS_VERSION}-{sys.implementation.name}-"
                               f"{platform.python_version()}-{kinds}.jsonl")
    if path.exists():
        return path, None
    start = time.perf_counter()
    records = extract(include)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    return path, time.perf_counter() - start


def build(options: PythonDocsOptions, ctx: BuildContext) -> PackedSource:
    root = cache_root(options)
    path, seconds = corpus_file(root, options.include)
    documents = read_jsonl([path], "text", root)
    report = {
        "source": "builtin",
        "corpus": {"include": options.include, "documents": len(documents),
                   "megabytes": round(path.stat().st_size / 1e6, 2), "extraction_seconds": seconds},
    }
    return PackedSource(documents, files=[path], fingerprint=files_fingerprint([path]), options=options,
                        seed=ctx.seed, report=report, cleaners=ctx.cleaners)
