"""Streaming mode of the ``text`` data source (``data.streaming: true``): the corpus is read lazily with `datasets`
(``load_dataset(..., streaming=True)``), a batch of documents at a time, and never held in memory as a whole.

documents, file by file -> blank ones dropped -> the cleaning chain -> held out or not, by a hash of the text ->
tokenized in batches, eos after every document (or every piece of ``max_document_tokens``) -> cut into blocks of
``block_size`` -> a seeded shuffle buffer of ``shuffle_buffer`` blocks -> training batches. Tokenizing, cutting and
the blocks' ``document_ids`` go through ``tokens.py``, the functions the map-style pipeline uses.

- Validation: a document is held out when a hash of its (cleaned) text falls below ``val_fraction``: the same
  documents are held out in every run over the corpus, whatever the seed, and copies of a document fall on the same
  side. The held-out documents from the start of the corpus are materialized, up to ``validation_blocks`` blocks, so
  evaluation reads a table; training never sees a held-out document, wherever it is.
- Epochs: when the files are exhausted the stream starts over with the files in a new seed-derived order. The
  shuffle buffer and the unfinished block carry over; the cleaning chain starts afresh (so a deduplication step does
  not remove the whole corpus in the second epoch).
- Resume: the stream's ``state_dict`` holds the epoch, the reading position (`datasets`' own state of the
  unshuffled reader, exact between read batches), the tokens read but not yet cut into a block, the shuffle buffer's
  blocks, its RNG state and the state of stateful cleaning steps, so a resumed stream continues with the very blocks
  the uninterrupted one would have drawn. (`datasets`' own shuffling is not used: its buffer is not in its state.)
  The checkpoint holds about ``shuffle_buffer x block_size x 4`` bytes of it, plus the tokens of one read batch.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np
import pyarrow as pa
import torch
from pydantic import Field

from hookformer.core.cleaning import CleaningChain
from hookformer.core.datacache import digest, quiet_datasets
from hookformer.core.errors import ConfigError, DataError
from hookformer.core.parts import PartOptions, Tokenizer
from hookformer.core.sampler import as_table
from hookformer.plugins.data.common import cache_root, hf_cache
from hookformer.plugins.data.tabular import first_bad_record
from hookformer.plugins.data.tokens import blocks_table, cut_blocks, token_stream

#: Documents read, cleaned and tokenized at a time: the granularity of the reading position, and a bound on the
#: tokens a checkpoint holds besides the shuffle buffer.
READ_BATCH = 64
_REPLACEMENT = "\ufffd"


class StreamingOptions(PartOptions):
    """The options of streaming mode (see this module's docstring and the README)."""

    streaming: bool = Field(False, description="read the corpus lazily, never all of it at once; documents are then "
                            "held out for validation by a hash of their text, each with probability val_fraction")
    shuffle_buffer: int = Field(1024, ge=1, description="streaming: each training block is drawn at random from a "
                                "buffer of this many blocks (1: file order); checkpoints hold it, about "
                                "shuffle_buffer x block_size x 4 bytes")
    validation_blocks: int = Field(512, ge=1, description="streaming: the validation blocks kept, from the held-out "
                                   "documents at the start of the corpus")


@dataclass(frozen=True)
class StreamFile:
    """A corpus file as the streaming source reads it."""

    path: Path  # the file named in errors and the report
    jsonl: bool
    read_from: Path  # the file itself, or a UTF-8-repaired copy of a JSONL file with invalid bytes
    invalid_bytes: int = 0


def held_out(text: str, fraction: float) -> bool:
    """Whether a document is a validation document: a hash of its text, uniform in [0, 1), falls below ``fraction``."""
    hashed = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(hashed, "little") < fraction * 2 ** 64


class DocumentReader:
    """The documents of ``files``, in that order, read lazily in batches of raw texts: the text files through one
    `datasets` text loader, then the JSONL files through one JSON loader. ``state_dict`` is exact between batches."""

    def __init__(self, files: list[StreamFile], options, root: Path):
        self.options = options
        self._groups = [group for group in ([f for f in files if not f.jsonl], [f for f in files if f.jsonl]) if group]
        self._loaders = [self._load(group, root) for group in self._groups]
        self.group = 0
        self._batches = None

    def _load(self, group: list[StreamFile], root: Path) -> datasets.IterableDataset:
        data_files = [str(f.read_from) for f in group]
        with self._errors(group), quiet_datasets():
            if group[0].jsonl:
                loader = datasets.load_dataset("json", data_files=data_files, split="train", streaming=True,
                                               cache_dir=hf_cache(root))
            else:
                loader = datasets.load_dataset("text", data_files=data_files, split="train", streaming=True,
                                               cache_dir=hf_cache(root), sample_by=self.options.sample_by,
                                               encoding_errors="replace")
        return loader.with_format("arrow")

    def next_texts(self) -> list[str] | None:
        """The next batch of raw documents; None once every file has been read."""
        while self.group < len(self._groups):
            group = self._groups[self.group]
            with self._errors(group):
                if self._batches is None:
                    self._batches = self._loaders[self.group].iter(batch_size=READ_BATCH)
                table = next(self._batches, None)
            if table is not None:
                return self._texts(table, group)
            self.group, self._batches = self.group + 1, None
        return None

    def _texts(self, table: pa.Table, group: list[StreamFile]) -> list[str]:
        field = self.options.text_field if group[0].jsonl else "text"
        column = table.column(field) if field in table.column_names else None
        if column is None or not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type) \
                or column.null_count:
            shown = [f.path for f in group]
            raise DataError(first_bad_record(shown, field) or f'some records of {", ".join(map(str, shown))} have no '
                            f'text field "{field}" (data.text_field)')
        return column.to_pylist()

    @contextlib.contextmanager
    def _errors(self, group: list[StreamFile]) -> Iterator[None]:
        """JSON Lines that cannot be read become a DataError naming the file and line of the first bad record."""
        try:
            yield
        except (datasets.exceptions.DatasetGenerationError, pa.ArrowInvalid, ValueError) as exc:
            if not group[0].jsonl:
                raise
            shown = [f.path for f in group]
            raise DataError(first_bad_record(shown, self.options.text_field)
                            or f"cannot read the JSONL files {', '.join(map(str, shown))}: {exc}") from exc

    def state_dict(self) -> dict:
        started = self._batches is not None
        return {"group": self.group, "position": self._loaders[self.group].state_dict() if started else None}

    def load_state_dict(self, state: dict) -> None:
        self.group, self._batches = state["group"], None
        if state["position"] is not None:
            self._loaders[self.group].load_state_dict(state["position"])


class StreamingSource:
    """A :class:`~hookformer.core.parts.DataSource` that streams ``files``: ``prepare`` returns the validation table
    and a :class:`BlockStream` of training batches. ``cleaners`` is the run's cleaning chain; a step that keeps
    state across documents must have ``state_dict()`` and ``load_state_dict()``, so that the stream can resume and
    restart it exactly."""

    applies_cleaning = True

    def __init__(self, files: list[StreamFile], *, options, cleaners: list, seed: int):
        self.block_size = options.block_size
        self.options = options
        self._root = cache_root(options)
        self._seed = seed
        self._files = [f for f in files if f.path.stat().st_size]  # `datasets` fails on empty files; no documents
        if not self._files:
            raise DataError(f"the corpus is empty (no document with text) in: {', '.join(str(f.path) for f in files)}")
        self.chain = CleaningChain(cleaners, examples=options.report_examples)
        self.stateful_cleaners = [step for step in self.chain.steps if step.stateful]
        for cleaner in self.stateful_cleaners:
            if not (hasattr(cleaner, "state_dict") and hasattr(cleaner, "load_state_dict")):
                name = getattr(cleaner, "name", "") or type(cleaner).__name__
                raise ConfigError(f'data.streaming: the cleaning step "{name}" keeps state across documents but has '
                                  f"no state_dict() / load_state_dict(), so a streamed run could neither resume it "
                                  f"exactly nor start it afresh each epoch; remove it from cleaning or set "
                                  f"data.streaming=false")
        self._cleaners_start = [cleaner.state_dict() for cleaner in self.stateful_cleaners]
        self.report = {
            "source": "text",
            "streaming": {"shuffle_buffer": options.shuffle_buffer, "validation_blocks": options.validation_blocks,
                          "val_fraction": options.val_fraction},
            "files": [str(f.path) for f in files],
            "bytes": sum(f.path.stat().st_size for f in files),
            "format": {str(f.path): "jsonl" if f.jsonl else "text" for f in files},
            "invalid_utf8": {"policy": options.invalid_utf8, "bytes": sum(f.invalid_bytes for f in files),
                             "files": {str(f.path): f.invalid_bytes for f in files if f.invalid_bytes}},
            "block_size": self.block_size,
        }

    def reader(self, epoch: int | None = None, seed: int = 0) -> DocumentReader:
        """A reader from the start of the corpus, with the cleaning chain in its initial state: the files in the
        given order (``epoch`` None), or in the seed-derived order of ``epoch``."""
        files = self._files
        if epoch is not None:
            files = [files[i] for i in np.random.default_rng([seed, epoch]).permutation(len(files))]
        for cleaner, state in zip(self.stateful_cleaners, self._cleaners_start):
            cleaner.load_state_dict(state)
        return DocumentReader(files, self.options, self._root)

    def documents(self, texts: list[str], split: str) -> list[str]:
        """The documents of ``split`` ("train" or "validation") among a batch of raw ``texts``, cleaned."""
        texts = [text for text in texts if text.strip()]
        if self.options.invalid_utf8 == "skip":
            texts = [text for text in texts if _REPLACEMENT not in text]
        validation = split == "validation"
        fraction = self.options.val_fraction
        return [text for text in self.chain.clean_batch(texts) if held_out(text, fraction) == validation]

    def tokens(self, documents: list[str], tokenizer: Tokenizer) -> np.ndarray:
        """The token ids of ``documents`` as one int32 stream (see ``tokens.token_stream``)."""
        return token_stream(tokenizer, documents, self.options.max_document_tokens)

    def table(self, blocks: np.ndarray, tokenizer: Tokenizer) -> dict[str, torch.Tensor]:
        """The examples table of packed ``blocks``: with ``document_mask``, their ``document_ids`` too."""
        return as_table(blocks_table(blocks, tokenizer.special.eos, self.options.document_mask))

    def fingerprint(self, tokenizer: Tokenizer) -> str:
        """What decides the stream: the files (names and sizes, in order), the options that shape documents and
        blocks, and the tokenizer. A stream's state is valid only for the same fingerprint."""
        # exclude_none: a max_document_tokens left unset keeps the fingerprints of streams saved before it existed.
        options = self.options.model_dump(include={"format", "text_field", "sample_by", "invalid_utf8", "block_size",
                                                    "val_fraction", "shuffle_buffer", "document_mask",
                                                    "max_document_tokens"}, exclude_none=True)
        return digest([(f.path.name, f.path.stat().st_size) for f in self._files], options, self.chain.fingerprint(),
                      tokenizer.fingerprint())

    def texts(self) -> Iterator[str]:
        """Training documents, cleaned, in file order (to train a tokenizer); held-out documents are never among
        them. Read lazily: a tokenizer that needs the first N characters reads only those."""
        reader = self.reader()
        while (texts := reader.next_texts()) is not None:
            yield from self.documents(texts, "train")

    def prepare(self, tokenizer: Tokenizer) -> dict:
        validation = self._validation(tokenizer)
        self.report["tokenizer"] = tokenizer.fingerprint()
        self.report["cleaning"] = self.chain.report()  # what the chain saw so far: tokenizer training, validation
        return {"train": BlockStream(self, tokenizer, self._seed), "validation": validation}

    def _validation(self, tokenizer: Tokenizer) -> dict[str, torch.Tensor]:
        """The validation table: held-out documents from the start of the corpus, packed, up to
        ``validation_blocks`` blocks (the remainder dropped)."""
        reader, cap = self.reader(), self.options.validation_blocks * self.block_size
        pieces, tokens, documents, read = [], 0, 0, 0
        while tokens < cap and (texts := reader.next_texts()) is not None:
            held = self.documents(texts, "validation")
            read += len(texts)
            if held:
                pieces.append(self.tokens(held, tokenizer))
                tokens += len(pieces[-1])
                documents += len(held)
        blocks, _ = cut_blocks(np.concatenate(pieces) if pieces else np.zeros(0, np.int32), self.block_size,
                               self.options.validation_blocks)
        n_blocks = len(blocks)
        self.report["validation"] = {"documents": documents, "tokens": tokens, "blocks": n_blocks,
                                     "documents_read": read, "whole_corpus_read": tokens < cap}
        if n_blocks == 0:
            raise DataError(
                f"the held-out validation documents have {tokens} tokens, fewer than one block of data.block_size="
                f"{self.block_size} ({documents} of the {read} documents of the corpus are held out, by a hash of "
                f"their text): set data.block_size below {tokens}, or make data.val_fraction or the corpus larger")
        return self.table(blocks, tokenizer)


class BlockStream:
    """The training batches of a :class:`StreamingSource`, an endless :class:`~hookformer.core.parts.BatchStream`:
    blocks cut from the training documents in reading order, each drawn at random from a shuffle buffer."""

    def __init__(self, source: StreamingSource, tokenizer: Tokenizer, seed: int):
        self._source = source
        self._tokenizer = tokenizer
        self._fingerprint = source.fingerprint(tokenizer)
        self.seed = seed
        self._buffer = np.zeros((source.options.shuffle_buffer, source.block_size), dtype=np.int32)
        self._filled = 0
        self._rng = np.random.default_rng(seed)
        self._tail = np.zeros(0, dtype=np.int32)  # tokens read, not yet cut into a block
        self._start_epoch(0)

    def _start_epoch(self, epoch: int) -> None:
        self.epoch, self._epoch_tokens = epoch, 0
        self._reader = self._source.reader(epoch, self.seed)

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        blocks = np.stack([self._next_block() for _ in range(batch_size)])
        return self._source.table(blocks, self._tokenizer)

    def _next_block(self) -> np.ndarray:
        """Fill the buffer first; then every new block takes the place of one drawn at random."""
        while True:
            block = self._cut()
            if self._filled < len(self._buffer):
                self._buffer[self._filled] = block
                self._filled += 1
                continue
            slot = self._rng.integers(len(self._buffer))
            drawn = self._buffer[slot].copy()
            self._buffer[slot] = block
            return drawn

    def _cut(self) -> np.ndarray:
        size = self._source.block_size
        while len(self._tail) < size:
            self._read()
        (block,), self._tail = cut_blocks(self._tail, size, max_blocks=1)
        return block

    def _read(self) -> None:
        texts = self._reader.next_texts()
        if texts is None:
            if not self._epoch_tokens:
                raise DataError("streaming: a whole pass over the corpus found no training document (every document "
                                "is blank, removed by cleaning or held out for validation): make data.val_fraction "
                                "smaller or the corpus larger")
            self._start_epoch(self.epoch + 1)
            return
        documents = self._source.documents(texts, "train")
        if documents:
            tokens = self._source.tokens(documents, self._tokenizer)
            self._epoch_tokens += len(tokens)
            self._tail = np.concatenate([self._tail, tokens])

    def state_dict(self) -> dict:
        return {
            "fingerprint": self._fingerprint,
            "seed": self.seed,
            "epoch": self.epoch,
            "epoch_tokens": self._epoch_tokens,
            "reader": self._reader.state_dict(),
            "tail": torch.from_numpy(self._tail.copy()),
            "buffer": torch.from_numpy(self._buffer[: self._filled].copy()),
            "rng": self._rng.bit_generator.state,
            "cleaners": [cleaner.state_dict() for cleaner in self._source.stateful_cleaners],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != self._fingerprint:
            raise ValueError("the checkpoint's data position belongs to another data stream: the corpus files, the "
                             "data options or the tokenizer changed since the run was saved")
        self.seed = state["seed"]
        self._start_epoch(state["epoch"])
        self._epoch_tokens = state["epoch_tokens"]
        self._reader.load_state_dict(state["reader"])
        self._tail = state["tail"].numpy().copy()
        self._filled = len(state["buffer"])
        self._buffer[: self._filled] = state["buffer"].numpy()
        self._rng.bit_generator.state = state["rng"]
        for cleaner, cleaner_state in zip(self._source.stateful_cleaners, state["cleaners"]):
            cleaner.load_state_dict(cleaner_state)
