"""The map-style pipeline, from a documents ``Dataset`` (one ``text`` column) to packed blocks.

Pipeline: drop blank documents -> the cleaning chain (``hookformer.core.cleaning``; cached) -> split by document
(seeded) -> tokenize with ``Dataset.map`` through ``tokens.document_tokens`` (eos after every document, or every
piece of ``max_document_tokens``), cached on disk under a fingerprint of (content, cleaning, tokenizer, split) ->
flatten each split to one token stream -> ``tokens.cut_blocks`` into non-overlapping (N, block_size) int64 blocks,
the remainder dropped. The streaming mode (``streaming.py``) goes through the same ``tokens.py`` functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hookformer.core.cleaning import CleaningChain
from hookformer.core.datacache import digest, quiet_datasets
from hookformer.core.errors import DataError
from hookformer.core.parts import Cleaner, Tokenizer
from hookformer.plugins.data.common import DataOptions, cache_root
from hookformer.plugins.data.tokens import blocks_table, cut_blocks, document_tokens

#: Part of every token-cache key: bump it when the tokenized or packed output of the same input changes.
PIPELINE_VERSION = 2
_TOKEN_FEATURES = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})


def text_mask(documents: datasets.Dataset, predicate: Callable[[pa.ChunkedArray], pa.ChunkedArray]) -> np.ndarray:
    """``predicate`` (Arrow strings -> Arrow booleans) over the ``text`` column, batch by batch, as a numpy mask.
    Goes through the Arrow format rather than Python strings, and respects earlier ``select``s."""
    batches = documents.with_format("arrow").iter(batch_size=65536)
    masks = [predicate(batch["text"]).to_numpy(zero_copy_only=False) for batch in batches]
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


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

    applies_cleaning = True

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
            blocks[split] = self._blocks(split, stream)
        self.report.update(
            tokenizer=tokenizer.fingerprint(),
            tokens=tokens,
            blocks={split: len(packed) for split, packed in blocks.items()},
            tokens_dropped={split: tokens[split] - blocks[split].size for split in blocks},
            pieces=pieces,  # documents, or more with max_document_tokens: every piece ends with eos
            cache_hit=hits,
        )
        eos, mask = tokenizer.special.eos, self._options.document_mask
        return {split: blocks_table(packed, eos, mask) for split, packed in blocks.items()}

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
            return pa.table({"input_ids": document_tokens(tokenizer, batch.column("text").to_pylist(), cut)})

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

    def _blocks(self, split: str, stream: np.ndarray) -> np.ndarray:
        blocks, _ = cut_blocks(stream, self.block_size)  # the remainder is dropped
        if not len(blocks):
            more = "data.val_fraction larger, " if split == "validation" else ""
            raise DataError(
                f"the {split} split has {len(stream)} tokens, fewer than one block of data.block_size="
                f"{self.block_size}: set data.block_size below {len(stream)}, or make {more}the corpus larger"
            )
        return blocks
