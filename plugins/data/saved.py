"""Data part ``saved``: a dataset written with `datasets`' ``save_to_disk`` (a ``Dataset``, or one split of a
``DatasetDict``), e.g. the output of your own preprocessing. Only the ``text_field`` column is used; the run splits
the documents into training and validation itself, whatever split they came from."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hookformer.core.parts import BuildContext
from hookformer.plugins.data.common import DataOptions, files_fingerprint
from hookformer.plugins.data.pipeline import PackedSource
from hookformer.plugins.data.tabular import read_saved


class SavedOptions(DataOptions):
    path: str = Field(description="the folder given to save_to_disk (relative to the working directory)")
    split: str | None = Field(None, description="the split of a saved DatasetDict to read (null: a saved Dataset, "
                              "or a DatasetDict with a single split)")
    text_field: str = Field("text", description="the column that holds the text")


def build(options: SavedOptions, ctx: BuildContext) -> PackedSource:
    path = Path(options.path).expanduser().absolute()
    documents, split = read_saved(path, options.split, options.text_field)
    files = [Path(entry["filename"]) for entry in documents.cache_files]
    report = {"source": "saved", "path": str(path), "split": split, "text_field": options.text_field}
    fingerprint = files_fingerprint(files, split=split, text_field=options.text_field)
    return PackedSource(documents, files=files, fingerprint=fingerprint, options=options, seed=ctx.seed,
                        report=report, cleaners=ctx.cleaners)
