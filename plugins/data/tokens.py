"""The one path from documents to training blocks, shared by the map-style source (``pipeline.PackedSource``) and the
streaming one (``streaming.StreamingSource``):

documents -> :func:`document_tokens` (each document's ids, cut into pieces of at most ``max_document_tokens``, an
end-of-document token after each piece) -> one token stream (:func:`token_stream`, or the flattened cached column of
the map-style path) -> :func:`cut_blocks` into consecutive ``block_size`` blocks -> :func:`blocks_table` (with
``document_ids`` under ``document_mask``, see ``packing.py``).

Every option that shapes a document's tokens or the blocks is applied here, so both modes honour it the same way.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from hookformer.core.parts import Tokenizer
from hookformer.plugins.data.packing import with_document_ids


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


def document_tokens(tokenizer: Tokenizer, texts: Sequence[str], max_document_tokens: int | None) -> pa.ListArray:
    """Each of ``texts`` tokenized, cut by ``max_document_tokens`` (None: no cut), eos after every piece."""
    return token_lists(tokenizer.encode_batch(list(texts)), tokenizer.special.eos, max_document_tokens)


def token_stream(tokenizer: Tokenizer, texts: Sequence[str], max_document_tokens: int | None) -> np.ndarray:
    """:func:`document_tokens` of ``texts`` as one int32 stream, in order."""
    return pc.list_flatten(document_tokens(tokenizer, texts, max_document_tokens)).to_numpy()


def cut_blocks(stream: np.ndarray, block_size: int, max_blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The consecutive whole blocks at the start of ``stream`` (at most ``max_blocks``), as an (N, block_size) view,
    and the tokens after them (a block never wraps: what is left is either dropped or waits for more tokens)."""
    n_blocks = len(stream) // block_size
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    end = n_blocks * block_size
    return stream[:end].reshape(n_blocks, block_size), stream[end:]


def blocks_table(blocks: np.ndarray, eos: int, document_mask: bool) -> torch.Tensor | dict[str, torch.Tensor]:
    """Blocks as training data: an int64 (N, block_size) tensor; with ``document_mask``, the examples table of the
    blocks and their ``document_ids``."""
    tensor = torch.from_numpy(blocks.astype(np.int64))
    return with_document_ids(tensor, eos) if document_mask else tensor
