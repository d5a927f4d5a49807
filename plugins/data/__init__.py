"""Built-in data sources."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("data", "text", "local files, folders and globs: text, JSON Lines, CSV, TSV and Parquet, read with "
                 "`datasets`, cleaned, tokenized and packed",
                 factory=f"{_HERE}.text_files:build", options=f"{_HERE}.text_files:TextFilesOptions"),
        PartSpec("data", "builtin", "the Python documentation corpus shipped with CPython (pydoc topics and the "
                 "standard library's docstrings): no download", factory=f"{_HERE}.python_docs:build",
                 options=f"{_HERE}.python_docs:PythonDocsOptions"),
        PartSpec("data", "saved", "a dataset written with `datasets`' save_to_disk (one split, one text column)",
                 factory=f"{_HERE}.saved:build", options=f"{_HERE}.saved:SavedOptions"),
    ]
