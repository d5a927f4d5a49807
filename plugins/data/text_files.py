"""Data part ``text``: local files read with `datasets`: plain text, JSON Lines, CSV, TSV and Parquet, named by
path, folder or glob.

Every text-like file's bytes (all formats but Parquet, whose strings are UTF-8 by construction) are scanned once
before reading, for bytes that are not valid UTF-8, so the report can count them whatever the ``invalid_utf8``
policy, and the error names the file and line of the first one.
"""

from __future__ import annotations

import codecs
import glob
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import datasets
import numpy as np
import pyarrow.compute as pc
from pydantic import Field, model_validator

from hookformer.core.checkpoint import write_atomically
from hookformer.core.datacache import quiet_datasets
from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext
from hookformer.plugins.data.common import DataOptions, cache_root, files_fingerprint, hf_cache, refuse_unhonoured
from hookformer.plugins.data.pipeline import PackedSource, text_mask
from hookformer.plugins.data.streaming import StreamFile, StreamingOptions, StreamingSource
from hookformer.plugins.data.tabular import read_delimited, read_jsonl, read_parquet

Format = Literal["text", "jsonl", "csv", "tsv", "parquet"]
#: The format ``format: auto`` gives a file by its suffix; any other suffix is text.
FORMAT_OF_SUFFIX: dict[str, Format] = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
                                       ".parquet": "parquet"}
#: What the "surrogateescape" decoder turns each invalid byte into; valid UTF-8 never decodes to these.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_REPLACEMENT = "\ufffd"


class TextFilesOptions(StreamingOptions, DataOptions):
    paths: list[str] = Field(min_length=1, description="files, folders (their files at any depth, by suffix: see "
                             "folder_suffixes) or glob patterns (** matches any depth); relative to the working "
                             "directory")
    format: Literal["auto", "text", "jsonl", "csv", "tsv", "parquet"] = Field(
        "auto", description="auto: by suffix, .jsonl and .json are JSON Lines, .csv CSV, .tsv TSV, .parquet "
        "Parquet, anything else text; or one format for every file")
    text_field: str = Field("text", description="JSON Lines, CSV, TSV, Parquet: the field or column that holds the "
                            "text (CSV and TSV files need a header row)")
    folder_suffixes: list[str] = Field(
        [".txt", ".md", ".rst", ".jsonl", ".json", ".csv", ".tsv", ".parquet"], min_length=1,
        description="a folder in paths stands for its files with these suffixes, at any depth; hidden files and "
        "folders (.git) are left out")
    sample_by: Literal["document", "paragraph", "line"] = Field(
        "paragraph", description="text files: one document per file, per paragraph (blank-line separated) or per line")
    invalid_utf8: Literal["replace", "skip", "error"] = Field(
        "replace", description="bytes that are not valid UTF-8: replace = they become U+FFFD; skip = documents "
        "containing them (or any U+FFFD) are dropped; error = stop, naming the file and line of the first one. "
        "The data report counts them in every mode")

    @model_validator(mode="after")
    def _honoured_in_this_mode(self):
        """Every option works in both modes except these, refused in the mode that cannot honour them (the file
        formats streaming cannot read are refused when the files are known: see ``build``)."""
        if self.streaming:
            refuse_unhonoured(self, ["num_proc"], "streaming reads, cleans and tokenizes a batch at a time in the "
                              "training process", "set data.streaming: false to clean and tokenize in processes")
        else:
            refuse_unhonoured(self, ["shuffle_buffer", "validation_blocks"], "they are options of streaming mode "
                              "(map-style data draws batches from a permutation of every block and validates on "
                              "every held-out block)", "set data.streaming: true")
        return self


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


def resolve_paths(patterns: list[str], folder_suffixes: Sequence[str] = (), field: str = "data.paths") -> list[Path]:
    """Files named by ``patterns`` (paths, globs, and folders when ``folder_suffixes`` says which of their files to
    take; the option ``field`` in errors), in the given order, the files of a glob or folder sorted, each file once."""
    files: dict[Path, None] = {}
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(f'{field}: the pattern "{pattern}" matches no file (working directory '
                                f"{os.getcwd()})")
        elif os.path.isdir(expanded):
            if not folder_suffixes:
                raise DataError(f'{field}: "{pattern}" is a directory; name its files, e.g. "{pattern}/**/*.csv"')
            matches = folder_files(Path(expanded), folder_suffixes)
            if not matches:
                raise DataError(f'{field}: the folder "{pattern}" holds no file ending in '
                                f"{', '.join(folder_suffixes)} (data.folder_suffixes)")
        elif not os.path.isfile(expanded):
            raise DataError(f'{field}: file "{pattern}" not found (working directory {os.getcwd()})')
        else:
            matches = [expanded]
        files.update((Path(match).absolute(), None) for match in matches)
    return list(files)


def folder_files(folder: Path, suffixes: list[str]) -> list[str]:
    """The files under ``folder``, at any depth, whose names end in one of ``suffixes``; hidden files and folders
    left out; sorted."""
    wanted = tuple(suffix.lower() for suffix in suffixes)
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found += [os.path.join(directory, f) for f in files if not f.startswith(".") and f.lower().endswith(wanted)]
    return sorted(found)


def build(options: TextFilesOptions, ctx: BuildContext) -> PackedSource | StreamingSource:
    files = resolve_paths(options.paths, options.folder_suffixes)
    root = cache_root(options)
    formats = {path: file_format(path, options.format) for path in files}
    scans = {path: _scan(path) for path in files if formats[path] != "parquet"}
    bad = {path: scan for path, scan in scans.items() if scan.invalid_bytes}
    if bad and options.invalid_utf8 == "error":
        path, scan = next(iter(bad.items()))
        raise DataError(f"{path}, line {scan.first_line}: bytes that are not valid UTF-8 ({scan.invalid_bytes} in "
                        f"this file); fix the file or set data.invalid_utf8 to replace or skip")
    if options.streaming:  # read lazily, never the whole corpus at once: see streaming.py
        tabular = [f"{path} ({formats[path]})" for path in files if formats[path] not in ("text", "jsonl")]
        if tabular:
            raise DataError(f"data.streaming reads text and JSONL files; these are not: {', '.join(tabular[:3])}. "
                            f"Convert them to JSONL, or set data.streaming to false")
        stream_files = [StreamFile(path, formats[path] == "jsonl", _utf8_repaired(path, root)
                                   if formats[path] == "jsonl" and path in bad else path, scans[path].invalid_bytes)
                        for path in files]
        return StreamingSource(stream_files, options=options, cleaners=ctx.cleaners, seed=ctx.seed)
    documents = _read(files, formats, set(bad), options, root)

    # Documents holding U+FFFD after decoding: replaced ones, or (under "skip") ones to drop.
    check = bool(bad) or options.invalid_utf8 == "skip"
    marked = text_mask(documents, lambda texts: pc.match_substring(texts, _REPLACEMENT)) if check else None
    if marked is not None and options.invalid_utf8 == "skip":
        documents = documents.select(np.flatnonzero(~marked), keep_in_memory=True)
    report = {
        "source": "text",
        "format": {str(path): fmt for path, fmt in formats.items()},
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
                        report=report, cleaners=ctx.cleaners)


def file_format(path: Path, fmt: str) -> Format:
    """The format ``path`` is read as under ``data.format``."""
    return FORMAT_OF_SUFFIX.get(path.suffix.lower(), "text") if fmt == "auto" else fmt


def _scan(path: Path) -> Utf8Scan:
    try:
        return scan_utf8(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}. Check that it is readable (its permissions).") \
            from None


def _read(files: list[Path], formats: dict[Path, Format], bad: set[Path], options: TextFilesOptions,
          root: Path) -> datasets.Dataset:
    """All documents of ``files``, in file order: each run of consecutive files of one format is one load."""
    # Empty files are left out: `datasets` fails on them, and they hold no document anyway.
    files = [path for path in files if path.stat().st_size]
    parts = []
    for fmt, group in itertools.groupby(files, key=formats.__getitem__):
        group = list(group)
        if fmt == "text":
            with quiet_datasets():
                parts.append(datasets.load_dataset("text", data_files=[str(path) for path in group], split="train",
                                                   cache_dir=hf_cache(root), sample_by=options.sample_by,
                                                   encoding_errors="replace"))
        elif fmt == "jsonl":
            load_as = [_utf8_repaired(path, root) if path in bad else path for path in group]
            parts.append(read_jsonl(load_as, options.text_field, root, shown_as=group))
        elif fmt == "parquet":
            parts.append(read_parquet(group, options.text_field, root))
        else:
            parts.append(read_delimited(group, fmt, options.text_field, root))
    if not parts:
        return datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")}))
    return datasets.concatenate_datasets(parts)


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
