"""Reading tables: CSV, TSV, Parquet and JSON Lines files, and datasets saved with `datasets`' ``save_to_disk``, each
down to one ``text`` column taken from the column the config names (``text_field``).

Every file's columns are checked before anything is loaded, so a missing column is reported with the file and the
columns it has, and a file that cannot be read (permissions, a corrupt Parquet footer) is named.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from hookformer.core.datacache import quiet_datasets
from hookformer.core.errors import DataError
from hookformer.plugins.data.common import hf_cache

#: The delimiter of each delimited format.
DELIMITERS = {"csv": ",", "tsv": "\t"}


def text_column(dataset: datasets.Dataset, text_field: str, where: str) -> datasets.Dataset:
    """``dataset`` reduced to its ``text_field`` column, renamed ``text``; DataError naming ``where`` and the
    available columns when the column is missing or does not hold text."""
    if text_field not in dataset.column_names:
        raise DataError(f'{where} has no column "{text_field}" (data.text_field); its columns are: '
                        f"{', '.join(dataset.column_names) or 'none'}. Set data.text_field to the one that holds "
                        f"the text.")
    feature = dataset.features[text_field]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise DataError(f'{where}: column "{text_field}" (data.text_field) holds {feature}, not text. Set '
                        f"data.text_field to a column of strings (columns: {', '.join(dataset.column_names)}).")
    dataset = dataset.select_columns([text_field])
    return dataset if text_field == "text" else dataset.rename_column(text_field, "text")


def read_delimited(files: Sequence[Path], fmt: str, text_field: str, root: Path) -> datasets.Dataset:
    """CSV or TSV files with a header row -> a ``text`` Dataset from column ``text_field``. Bytes that are not UTF-8
    become U+FFFD (the caller applies the ``invalid_utf8`` policy); empty cells are empty texts."""
    for path in files:
        columns = _header(path, fmt)
        if text_field not in columns:
            raise DataError(f'{path} has no column "{text_field}" (data.text_field); its columns are: '
                            f"{', '.join(columns) or 'none'}. Set data.text_field to the one that holds the text.")
    settings = dict(sep=DELIMITERS[fmt], usecols=[text_field], encoding_errors="replace",
                    features=datasets.Features({text_field: datasets.Value("string")}))
    try:
        loaded = _load(fmt, "csv", files, root, **settings)
    except (datasets.exceptions.DatasetGenerationError, ValueError) as exc:
        raise DataError(_first_bad_file(files, fmt, root, settings) or f"cannot read the {fmt.upper()} files "
                        f"{', '.join(map(str, files))}: {_cause(exc)}") from None
    return text_column(loaded, text_field, str(files[0]))


def read_parquet(files: Sequence[Path], text_field: str, root: Path) -> datasets.Dataset:
    """Parquet files -> a ``text`` Dataset from column ``text_field`` (only that column is read)."""
    for path in files:
        try:
            schema = pq.read_schema(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}. Check that it is readable.") from None
        except pa.ArrowException as exc:
            raise DataError(f"{path} is not a readable Parquet file ({exc}). Replace the file or leave it out of "
                            f"data.paths.") from None
        if text_field not in schema.names:
            raise DataError(f'{path} has no column "{text_field}" (data.text_field); its columns are: '
                            f"{', '.join(schema.names) or 'none'}. Set data.text_field to the one that holds the text.")
        column_type = schema.field(text_field).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
            raise DataError(f'{path}: column "{text_field}" (data.text_field) holds {column_type}, not text. Set '
                            f"data.text_field to a column of strings (columns: {', '.join(schema.names)}).")
    try:
        loaded = _load("parquet", "parquet", files, root, columns=[text_field])
    except (datasets.exceptions.DatasetGenerationError, pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read the Parquet files {', '.join(map(str, files))}: {_cause(exc)}") from None
    return text_column(loaded, text_field, str(files[0]))


def read_saved(path: Path, split: str | None, text_field: str) -> tuple[datasets.Dataset, str | None]:
    """The ``split`` of a dataset saved with ``save_to_disk`` at ``path`` -> a ``text`` Dataset and the split name
    (None for a saved ``Dataset``, which has no splits)."""
    if not path.exists():
        raise DataError(f'data.path: "{path}" not found. Give the folder a dataset was saved to with save_to_disk.')
    try:
        with quiet_datasets():
            loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f'data.path: "{path}" is not a dataset saved with save_to_disk (it lacks the '
                        f"dataset_info.json / state.json files such a folder holds).") from None
    except OSError as exc:
        raise DataError(f'cannot read the saved dataset "{path}": {exc.strerror or exc}.') from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None and len(splits) != 1:
            raise DataError(f'data.split: "{path}" holds the splits {", ".join(splits)}; choose one.')
        split = split if split is not None else splits[0]
        if split not in loaded:
            raise DataError(f'data.split: "{path}" has no split "{split}"; its splits are: {", ".join(splits)}.')
        loaded = loaded[split]
        where = f'split "{split}" of {path}'
    elif split is not None:
        raise DataError(f'data.split: "{path}" holds one dataset, not a DatasetDict of splits; leave data.split '
                        f"out (it is {split!r}).")
    else:
        where = str(path)
    return text_column(loaded, text_field, where), split


def _header(path: Path, fmt: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        return next(csv.reader(handle, delimiter=DELIMITERS[fmt]), [])


def _load(fmt: str, builder: str, files: Sequence[Path], root: Path, **settings) -> datasets.Dataset:
    with quiet_datasets():
        return datasets.load_dataset(builder, data_files=[str(path) for path in files], split="train",
                                     cache_dir=hf_cache(root), **settings)


def _first_bad_file(files: Sequence[Path], fmt: str, root: Path, settings: dict) -> str | None:
    """Error path only: load the files one by one to name the first that fails, with the reader's reason."""
    for path in files:
        try:
            _load(fmt, "csv", [path], root, **settings)
        except (datasets.exceptions.DatasetGenerationError, ValueError) as exc:
            return f"cannot read {path} as {fmt.upper()}: {_cause(exc)}"
    return None


def _cause(exc: BaseException) -> str:
    """The innermost reason of a `datasets` error (its own wrapper says only that generation failed)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).strip().rstrip(".")


#: Suffixes of files of labeled records (labeled and prompt_response data) and the format each is read as.
RECORD_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def record_format(path: Path, option: str) -> str:
    """The format of a file of records: ``option`` (the part's ``format``) unless it is auto, else by suffix."""
    if option != "auto":
        return option
    if path.suffix.lower() not in RECORD_FORMATS:
        raise DataError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; name the file .csv, .tsv "
                        f"or .jsonl, or set data.format")
    return RECORD_FORMATS[path.suffix.lower()]


def read_jsonl(files: Sequence[Path], text_field: str, root: Path,
               shown_as: Sequence[Path] | None = None) -> datasets.Dataset:
    """JSON Lines files -> a Dataset with one ``text`` column holding each record's ``text_field``.

    ``shown_as`` names the files in error messages when ``files`` are stand-ins (UTF-8-repaired copies).
    """
    shown_as = shown_as or files
    try:
        with quiet_datasets():
            loaded = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train",
                                          cache_dir=hf_cache(root))
    except (datasets.exceptions.DatasetGenerationError, pa.ArrowInvalid, ValueError) as exc:
        raise DataError(first_bad_record(shown_as, text_field) or f"cannot read the JSONL files "
                        f"{', '.join(map(str, shown_as))}: {exc}") from exc
    column_type = loaded.data.schema.field(text_field).type if text_field in loaded.column_names else pa.null()
    is_text = pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
    if not is_text or loaded.data[text_field].null_count:
        raise DataError(first_bad_record(shown_as, text_field)
                        or f'some records of {", ".join(map(str, shown_as))} have no text field "{text_field}" '
                           f"(data.text_field)")
    loaded = loaded.select_columns([text_field])
    return loaded if text_field == "text" else loaded.rename_column(text_field, "text")


def first_bad_record(files: Sequence[Path], text_field: str) -> str | None:
    """Error path only: find the first record that is not JSON or lacks a string ``text_field``, by file and line."""
    for path in files:
        with open(path, "rb") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}, line {line_number}"
                try:
                    record = json.loads(line.decode("utf-8", errors="replace"))
                except ValueError as exc:
                    return f"{where}: not valid JSON ({exc})"
                if not isinstance(record, dict) or text_field not in record:
                    return (f'{where}: the record has no field "{text_field}"; set data.text_field to the field '
                            f"that holds the text")
                if not isinstance(record[text_field], str):
                    return (f'{where}: field "{text_field}" (data.text_field) holds '
                            f"{type(record[text_field]).__name__}, not text")
    return None
