"""What packed blocks share, map-style or streamed: the document each token of a block comes from."""

from __future__ import annotations

import torch


def document_ids(blocks: torch.Tensor, eos: int) -> torch.Tensor:
    """(N, T) int32: for every token of the packed ``blocks`` (N, T), the index within its block of the document
    it belongs to. Documents are separated by ``eos``, which belongs to the document it ends; a block that starts
    inside a document numbers that document 0. No tokenizer produces ``eos`` from text, so the blocks alone say
    where documents end."""
    ends = (blocks == eos).to(torch.int32)
    return ends.cumsum(1, dtype=torch.int32) - ends


def with_document_ids(blocks: torch.Tensor, eos: int) -> dict[str, torch.Tensor]:
    """The examples table of packed ``blocks`` with their ``document_ids`` (attention then stays inside a
    document)."""
    return {"input_ids": blocks, "document_ids": document_ids(blocks, eos)}
