"""What the data parts share: reading JSONL through `datasets`, and the pipeline from a documents ``Dataset`` (one
``text`` column) to packed blocks.

Pipeline: drop blank documents -> the cleaning chain (``cleaning.py``; cached) -> split by document (seeded) ->
tokenize with ``Dataset.map``, eos after every document (or every piece of ``max_document_tokens``), cached on disk
under a fingerprint of (content, cleaning, tokenizer, split) -> flatten each split to one token stream -> pack into
non-overlapping (N, block_size) int64 blocks, the remainder dropped.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from hookformer.core.errors import DataError
from hookformer.core.parts import Cleaner, Tokenizer
from hookformer.plugins.data.cleaning import CleaningChain
from hookformer.plugins.data.common import (DataOptions, cache_root, digest, files_fingerprint, hf_cache,
                                            quiet_datasets)
from hookformer.plugins.data.packing import with_document_ids

#: Part of every token-cache key: bump it when the tokenized or packed output of the same input changes.
PIPELINE_VERSION = 2
_TOKEN_FEATURES = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})


def text_mask(documents: datasets.Dataset, predicate: Callable[[pa.ChunkedArray], pa.ChunkedArray]) -> np.ndarray:
    """``predicate`` (Arrow strings -> Arrow booleans) over the ``text`` column, batch by batch, as a numpy mask.
    Goes through the Arrow format rather than Python strings, and respects earlier ``select``s."""
    batches = documents.with_format("arrow").iter(batch_size=65536)
    masks = [predicate(batch["text"]).to_numpy(zero_copy_only=False) for batch in batches]
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


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
        raise DataError(_first_bad_record(shown_as, text_field) or f"cannot read the JSONL files "
                        f"{', '.join(map(str, shown_as))}: {exc}") from exc
    column_type = loaded.data.schema.field(text_field).type if text_field in loaded.column_names else pa.null()
    is_text = pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
    if not is_text or loaded.data[text_field].null_count:
        raise DataError(_first_bad_record(shown_as, text_field)
                        or f'some records of {", ".join(map(str, shown_as))} have no text field "{text_field}" '
                           f"(data.text_field)")
    loaded = loaded.select_columns([text_field])
    return loaded if text_field == "text" else loaded.rename_column(text_field, "text")


def _first_bad_record(files: Sequence[Path], text_field: str) -> str | None:
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


def token_lists(encoded: list[list[int]], eos: int, cut: int | None = None) -> pa.ListArray:
    """Tokenized documents as one Arrow list of int32 per document, with ``eos`` after each document, or after each
    piece of at most ``cut`` tokens (an empty document is a lone ``eos``). Built with numpy from the flat ids."""
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32, count=int(lengths.sum()))
    pieces = np.ones_like(lengths) if cut is None else np.maximum(1, -(-lengths // cut))
    offsets = np.concatenate([[0], np.cumsum(lengths + pieces)])
    # A token's place: its document's start, its index in the document, plus the eos of the pieces before it.
    index = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    place = np.repeat(offsets[:-1], lengths) + index + (index // cut if cut is not None else 0)
    values = np.full(offsets[-1], eos, dtype=np.int32)
    values[place] = flat
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values))


def _non_blank(texts: pa.ChunkedArray) -> pa.ChunkedArray:
    """True where a document has text; a missing value (an empty CSV cell) is blank."""
    return pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(texts), ""), False)


class PackedSource:
    """A :class:`~hookformer.core.parts.DataSource` over a documents ``Dataset``.

    ``files`` are what the corpus was read from (named in errors and the report); ``fingerprint`` identifies their
    content and every option that shaped the documents. ``cleaners`` (``BuildContext.cleaners``) clean the
    documents before they are split; the cleaned documents are cached under the fingerprint and the chain's, and the
    token cache under both plus the tokenizer's and the split. ``report`` starts with what the part read and gains
    the cleaning counts and the split, token and block counts.
    """

    def __init__(self, documents: datasets.Dataset, *, files: Sequence[Path], fingerprint: str,
                 options: DataOptions, seed: int, report: dict, cleaners: Sequence[Cleaner] = ()):
        self.block_size = options.block_size
        self.report = report
        self._options = options
        self._root = cache_root(options)
        keep = np.flatnonzero(text_mask(documents, _non_blank))
        if len(keep) == 0:
            raise DataError(f"the corpus is empty (no document with text) in: {', '.join(map(str, files))}")
        blank = len(documents) - len(keep)
        if blank:
            documents = documents.select(keep, keep_in_memory=True)
        chain = CleaningChain(cleaners, examples=options.report_examples)
        documents = chain.apply(documents, source_fingerprint=fingerprint, cache_dir=self._root / "cleaned",
                                num_proc=options.num_proc)
        self._key = (PIPELINE_VERSION, fingerprint, chain.fingerprint(), seed, options.val_fraction,
                     options.max_document_tokens)
        if len(documents) < 2:
            cleaned = " after cleaning" if chain.steps else ""
            raise DataError(f"the corpus has a single document{cleaned} ({', '.join(map(str, files))}): at least two "
                            f"are needed, one for training and one for validation")
        # Split by document, so no document straddles training and validation.
        order = np.random.default_rng(seed).permutation(len(documents))
        n_validation = max(1, round(len(documents) * options.val_fraction))
        self._splits = {
            "train": documents.select(np.sort(order[n_validation:]), keep_in_memory=True),
            "validation": documents.select(np.sort(order[:n_validation]), keep_in_memory=True),
        }
        report.update(
            files=[str(path) for path in files],
            bytes=sum(path.stat().st_size for path in files),
            cleaning=chain.report(),
            cleaning_cache_hit=chain.cache_hit,
            documents={"train": len(self._splits["train"]), "validation": n_validation, "blank_dropped": blank},
            block_size=self.block_size,
        )

    def documents(self, split: str) -> Iterator[str]:
        """The raw documents of ``split`` ("train" or "validation"), in the order they are tokenized."""
        for batch in self._splits[split].iter(batch_size=1024):
            yield from batch["text"]

    def texts(self) -> Iterator[str]:
        """Raw training documents (to train a tokenizer); validation documents are never among them."""
        return self.documents("train")

    def prepare(self, tokenizer: Tokenizer) -> dict:
        """Tokenize (or load the cached tokens of) both splits and pack each into (N, block_size) int64 blocks;
        with ``document_mask``, each split is a table of the blocks and their ``document_ids``."""
        blocks, tokens, hits, pieces = {}, {}, {}, {}
        for split in self._splits:
            stream, hits[split] = self._token_stream(split, tokenizer)
            tokens[split] = len(stream)
            pieces[split] = int(np.count_nonzero(stream == tokenizer.special.eos))
            blocks[split] = self._pack(split, stream)
        self.report.update(
            tokenizer=tokenizer.fingerprint(),
            tokens=tokens,
            blocks={split: len(packed) for split, packed in blocks.items()},
            tokens_dropped={split: tokens[split] - blocks[split].numel() for split in blocks},
            pieces=pieces,  # documents, or more with max_document_tokens: every piece ends with eos
            cache_hit=hits,
        )
        if self._options.document_mask:
            return {split: with_document_ids(packed, tokenizer.special.eos) for split, packed in blocks.items()}
        return blocks

    def _token_stream(self, split: str, tokenizer: Tokenizer) -> tuple[np.ndarray, bool]:
        """The split's documents as one token stream, eos after each; and whether it came from the cache."""
        eos = tokenizer.special.eos
        fingerprint = digest(*self._key, tokenizer.fingerprint(), eos, split)
        cache_file = self._root / "tokens" / f"{fingerprint}.arrow"
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # map() writes one file, or one per process with a suffix; either set is reused whatever num_proc is now.
        hit = any(cache_file.parent.glob(f"{fingerprint}*.arrow"))

        cut = self._options.max_document_tokens

        def encode(batch: pa.Table) -> pa.Table:
            encoded = tokenizer.encode_batch(batch.column("text").to_pylist())
            return pa.table({"input_ids": token_lists(encoded, eos, cut)})

        docs = self._splits[split]
        with quiet_datasets():
            # In and out as Arrow: the ids go to the cache file without a Python list per document.
            tokenized = docs.with_format("arrow").map(
                encode, batched=True, remove_columns=docs.column_names, features=_TOKEN_FEATURES,
                # num_proc=1 would still start a one-process pool; None tokenizes in this process.
                num_proc=self._options.num_proc if self._options.num_proc > 1 else None,
                new_fingerprint=fingerprint, cache_file_name=str(cache_file),
            )
        # Flatten the Arrow list column directly: no Python list per document.
        stream = pc.list_flatten(tokenized.data.column("input_ids")).to_numpy()
        return stream, hit

    def _pack(self, split: str, stream: np.ndarray) -> torch.Tensor:
        n_blocks = len(stream) // self.block_size
        if n_blocks == 0:
            more = "data.val_fraction larger, " if split == "validation" else ""
            raise DataError(
                f"the {split} split has {len(stream)} tokens, fewer than one block of data.block_size="
                f"{self.block_size}: set data.block_size below {len(stream)}, or make {more}the corpus larger"
            )
        packed = stream[: n_blocks * self.block_size].astype(np.int64).reshape(n_blocks, self.block_size)
        return torch.from_numpy(packed)
