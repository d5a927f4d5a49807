"""Data part ``text``: local text and JSON Lines files, read with `datasets`.

Every file's bytes are scanned once before reading, for bytes that are not valid UTF-8, so the report can count
them whatever the ``invalid_utf8`` policy.
"""

from __future__ import annotations

import codecs
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import pyarrow.compute as pc
from pydantic import Field

from hookformer.core.checkpoint import write_atomically
from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.pipeline import (DataOptions, PackedSource, cache_root, files_fingerprint, hf_cache,
                                              quiet_datasets, read_jsonl, text_mask)

_JSONL_SUFFIXES = {".jsonl", ".json"}
#: What the "surrogateescape" decoder turns each invalid byte into; valid UTF-8 never decodes to these.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_REPLACEMENT = "\ufffd"


class TextFilesOptions(DataOptions):
    paths: list[str] = Field(min_length=1, description="files or glob patterns (** matches any depth); relative "
                             "to the working directory")
    format: Literal["auto", "text", "jsonl"] = Field("auto", description="auto: files ending in .jsonl or .json "
                                                     "are JSON Lines, others are text")
    text_field: str = Field("text", description="JSON Lines: the field of each record that holds its text")
    sample_by: Literal["document", "paragraph", "line"] = Field(
        "paragraph", description="text files: one document per file, per paragraph (blank-line separated) or per line")
    invalid_utf8: Literal["replace", "skip", "error"] = Field(
        "replace", description="bytes that are not valid UTF-8: replace = they become U+FFFD; skip = documents "
        "containing them (or any U+FFFD) are dropped; error = stop, naming the file and line of the first one. "
        "The data report counts them in every mode")


@dataclass(frozen=True)
class Utf8Scan:
    """What one pass over a file's bytes found: ``invalid_bytes`` that are not UTF-8, the first on ``first_line``."""

    invalid_bytes: int
    first_line: int | None


def scan_utf8(path: Path, chunk_size: int = 1 << 24) -> Utf8Scan:
    """Count the bytes of ``path`` that are not valid UTF-8, and find the line of the first one."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    invalid, lines_before, first_line = 0, 0, None
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            text = decoder.decode(chunk, final=not chunk)
            found = _ESCAPED_BYTE.search(text)
            if found:
                invalid += len(_ESCAPED_BYTE.findall(text))
                if first_line is None:
                    first_line = lines_before + text.count("\n", 0, found.start()) + 1
            lines_before += text.count("\n")
            if not chunk:
                return Utf8Scan(invalid, first_line)


def resolve_paths(patterns: list[str], field: str = "data.paths") -> list[Path]:
    """Files named by ``patterns`` (paths or globs; the option ``field`` in errors), in the given order, globs sorted,
    each file once."""
    files: dict[Path, None] = {}
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(f'{field}: the pattern "{pattern}" matches no file (working directory '
                                f"{os.getcwd()})")
        elif os.path.isdir(expanded):
            raise DataError(f'{field}: "{pattern}" is a directory; name its files, e.g. "{pattern}/**/*.txt"')
        elif not os.path.isfile(expanded):
            raise DataError(f'{field}: file "{pattern}" not found (working directory {os.getcwd()})')
        else:
            matches = [expanded]
        files.update((Path(match).absolute(), None) for match in matches)
    return list(files)


def build(options: TextFilesOptions, ctx: BuildContext) -> PackedSource:
    files = resolve_paths(options.paths)
    root = cache_root(options)
    scans = {path: scan_utf8(path) for path in files}
    bad = {path: scan for path, scan in scans.items() if scan.invalid_bytes}
    if bad and options.invalid_utf8 == "error":
        path, scan = next(iter(bad.items()))
        raise DataError(f"{path}, line {scan.first_line}: bytes that are not valid UTF-8 ({scan.invalid_bytes} in "
                        f"this file); fix the file or set data.invalid_utf8 to replace or skip")
    is_jsonl = {path: _is_jsonl(path, options.format) for path in files}
    documents = _read(files, is_jsonl, set(bad), options, root)

    # Documents holding U+FFFD after decoding: replaced ones, or (under "skip") ones to drop.
    check = bool(bad) or options.invalid_utf8 == "skip"
    marked = text_mask(documents, lambda texts: pc.match_substring(texts, _REPLACEMENT)) if check else None
    if marked is not None and options.invalid_utf8 == "skip":
        documents = documents.select(np.flatnonzero(~marked), keep_in_memory=True)
    report = {
        "source": "text",
        "format": {str(path): "jsonl" if jsonl else "text" for path, jsonl in is_jsonl.items()},
        "invalid_utf8": {
            "policy": options.invalid_utf8,
            "bytes": sum(scan.invalid_bytes for scan in bad.values()),
            "files": {str(path): scan.invalid_bytes for path, scan in bad.items()},
            "documents": int(marked.sum()) if marked is not None else 0,
        },
    }
    fingerprint = files_fingerprint(files, format=options.format, text_field=options.text_field,
                                    sample_by=options.sample_by, invalid_utf8=options.invalid_utf8)
    return PackedSource(documents, files=files, fingerprint=fingerprint, options=options, seed=ctx.seed,
                        report=report)


def _read(files: list[Path], is_jsonl: dict[Path, bool], bad: set[Path], options: TextFilesOptions,
          root: Path) -> datasets.Dataset:
    """All documents of ``files``: text files first (one `datasets` load), then JSONL files (another)."""
    # Empty files are left out: `datasets` fails on them, and they hold no document anyway.
    files = [path for path in files if path.stat().st_size]
    parts = []
    text_files = [str(path) for path in files if not is_jsonl[path]]
    if text_files:
        with quiet_datasets():
            parts.append(datasets.load_dataset("text", data_files=text_files, split="train", cache_dir=hf_cache(root),
                                               sample_by=options.sample_by, encoding_errors="replace"))
    jsonl_files = [path for path in files if is_jsonl[path]]
    if jsonl_files:
        load_as = [_utf8_repaired(path, root) if path in bad else path for path in jsonl_files]
        parts.append(read_jsonl(load_as, options.text_field, root, shown_as=jsonl_files))
    if not parts:
        return datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")}))
    return datasets.concatenate_datasets(parts)


def _is_jsonl(path: Path, fmt: str) -> bool:
    return fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() in _JSONL_SUFFIXES)


def _utf8_repaired(path: Path, root: Path) -> Path:
    """A copy of a JSONL file with invalid bytes replaced by U+FFFD, cached by the file's fingerprint.

    Needed because `datasets` hands JSON Lines bytes to pyarrow as they are (``encoding_errors`` applies only to
    other encodings), and pyarrow stores invalid UTF-8 in string columns unchecked: they fail later, on access.
    """
    copy = root / "utf8-repaired" / f"{files_fingerprint([path])}.jsonl"
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(copy, path.read_bytes().decode("utf-8", errors="replace"))
    return copy
