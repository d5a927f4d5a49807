"""Data part ``stdlib_areas``: a labeled task that needs no download, for the fine-tuning demo.

Each example is a docstring of the standard library (the same extraction as the ``builtin`` corpus: modules, classes
and functions, parsed with ``ast``), labeled with the area of the library its module belongs to (:data:`AREAS`).
Modules outside the mapping (GUI, packaging, importing and introspection, ...) are left out; the data report counts
them. Docstrings are split into training and validation at random (seeded), so sibling docstrings of one module can
land on both sides: the task is recognizing an area's vocabulary and subject, not generalizing to unseen modules.
The run's ``cleaning`` steps clean the docstrings as for ``labeled`` (after the split, training first).
"""

from __future__ import annotations

import json

from pydantic import Field

from hookformer.core.parts import BuildContext, PartOptions
from hookformer.plugins.data.common import cache_root, held_out_split
from hookformer.plugins.data.labeled import Examples, LabeledSource
from hookformer.plugins.data.python_docs import corpus_file

#: The areas (class names, in label-id order) and the top-level standard-library modules of each.
AREAS: dict[str, tuple[str, ...]] = {
    "text": ("string", "re", "difflib", "textwrap", "unicodedata", "stringprep", "codecs", "encodings", "locale",
             "gettext", "shlex", "html", "_markupbase"),
    "numbers_and_dates": ("_pydecimal", "decimal", "fractions", "numbers", "statistics", "random", "secrets",
                          "colorsys", "datetime", "calendar", "_strptime", "zoneinfo"),
    "data_formats": ("json", "csv", "configparser", "tomllib", "plistlib", "pickle", "pickletools", "copyreg",
                     "shelve", "dbm", "sqlite3", "xml", "base64", "quopri", "uu", "xdrlib", "netrc"),
    "files": ("os", "pathlib", "ntpath", "posixpath", "genericpath", "shutil", "tempfile", "glob", "fnmatch",
              "fileinput", "filecmp", "stat", "io", "_pyio", "tarfile", "zipfile", "gzip", "bz2", "lzma",
              "_compression", "zipapp", "chunk", "linecache"),
    "networking": ("socket", "ssl", "selectors", "socketserver", "http", "urllib", "ftplib", "nntplib", "telnetlib",
                   "xmlrpc", "ipaddress", "wsgiref", "cgi", "cgitb", "webbrowser", "nturl2path"),
    "email": ("email", "mailbox", "smtplib", "smtpd", "imaplib", "poplib", "mailcap", "mimetypes"),
    "concurrency": ("threading", "_threading_local", "multiprocessing", "concurrent", "asyncio", "asynchat",
                    "asyncore", "queue", "sched", "subprocess", "signal", "pty"),
    "testing_and_debugging": ("unittest", "doctest", "pdb", "bdb", "trace", "traceback", "faulthandler", "profile",
                              "cProfile", "pstats", "timeit", "tracemalloc"),
}
_AREA_OF = {module: area for area, modules in AREAS.items() for module in modules}


class StdlibAreasOptions(PartOptions):
    max_length: int = Field(128, ge=4, description="tokens per docstring, special tokens included (the model's "
                            "context length); longer docstrings are truncated")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of the docstrings held out for validation")
    cache_dir: str | None = Field(None, description="where the extracted docstrings are cached (default: "
                                  "$HOOKFORMER_CACHE/data, or ~/.cache/hookformer/data)")


def area_of(qualified_name: str) -> str | None:
    """The area of a docstring's qualified name (``email.message.Message.get`` -> email), or None."""
    return _AREA_OF.get(qualified_name.split(".", 1)[0])


def build(options: StdlibAreasOptions, ctx: BuildContext) -> LabeledSource:
    path, seconds = corpus_file(cache_root(options), ["docstrings"])
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    labeled = [(record["text"], area_of(record["name"])) for record in records]
    labeled = [(text, area) for text, area in labeled if area is not None]
    ids = {area: i for i, area in enumerate(AREAS)}
    splits = {}
    for name, chosen in zip(("train", "validation"), held_out_split(len(labeled), options.val_fraction, ctx.seed)):
        splits[name] = Examples([labeled[i][0] for i in chosen], [ids[labeled[i][1]] for i in chosen])
    report = {"source": "stdlib_areas", "corpus": str(path), "extraction_seconds": seconds,
              "docstrings": {"read": len(records), "outside_the_areas": len(records) - len(labeled)}}
    return LabeledSource("sequence_classification", splits, list(AREAS), max_length=options.max_length,
                         report=report, cleaners=ctx.cleaners)
