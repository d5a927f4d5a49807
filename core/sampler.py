"""The order in which training examples are visited: a seeded permutation per epoch, with a resumable position, or
consecutive segments of contiguous streams (segment recurrence); and the examples table (a dict of tensors with one
row per example) that data parts hand to the engine."""

from __future__ import annotations

import torch


class BlockSampler:
    """Yields batches of block indices. The position (epoch, index) goes into every checkpoint, so a resumed run
    sees exactly the batches the uninterrupted run would have seen."""

    def __init__(self, num_blocks: int, seed: int):
        self.num_blocks = num_blocks
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_blocks, generator=generator)

    def next_batch(self, batch_size: int) -> torch.Tensor:
        """The next ``batch_size`` indices; an epoch boundary inside a batch continues with the next permutation."""
        parts, needed = [], batch_size
        while needed:
            if self.index == self.num_blocks:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(needed, self.num_blocks - self.index)
            parts.append(self._order[self.index:self.index + take])
            self.index += take
            needed -= take
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "num_blocks": self.num_blocks, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if "num_blocks" not in state:
            raise ValueError("the checkpoint's data position was taken by another kind of data source (a stream?), "
                             "not by an examples table: resume with the data options the run was saved with")
        if state["num_blocks"] != self.num_blocks:
            raise ValueError(f"the checkpoint was taken with {state['num_blocks']} training blocks, the data now has "
                             f"{self.num_blocks}: the data or data options changed since the run was saved")
        self.seed = state["seed"]
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._permutation(self.epoch)


def as_table(split) -> dict[str, torch.Tensor]:
    """A data split as an examples table: a bare tensor becomes ``{"input_ids": tensor}``; every field must have the
    same number of rows."""
    table = {"input_ids": split} if isinstance(split, torch.Tensor) else dict(split)
    if "input_ids" not in table:
        raise ValueError(f"an examples table needs an input_ids field; it has: {', '.join(table) or 'nothing'}")
    rows = {name: len(tensor) for name, tensor in table.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"the fields of an examples table must have the same number of rows, got {rows}")
    return table


def table_rows(table: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    """The rows ``index`` (a slice or index tensor) of every field of an examples table."""
    return {name: tensor[index] for name, tensor in table.items()}


class TableStream:
    """A :class:`~hookformer.core.parts.BatchStream` over an examples table, in :class:`BlockSampler` order."""

    def __init__(self, table: dict[str, torch.Tensor], seed: int):
        self.table = table
        self.sampler = BlockSampler(len(table["input_ids"]), seed)

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        return table_rows(self.table, self.sampler.next_batch(batch_size))

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


class SegmentStreams:
    """A :class:`~hookformer.core.parts.BatchStream` for segment recurrence (a model's segment memory, e.g. the
    transformer's ``memory_length``; ``train.order: streams`` trains on it): the rows of a packed ``input_ids`` (N, T) read in order as one token stream,
    cut into ``streams`` contiguous streams of ``segment_length``-token segments (T by default); batch n holds segment
    n of every stream, so row i of each batch continues row i of the one before. The tail that does not fill a
    segment of every stream is left out; after the last segment the streams start over (``starts_over`` says when:
    a custom loop then starts a new memory). The position (epoch, segment) is the state: a run resumed from it sees
    the same batches, but whatever memory the model held is not part of it (a resumed loop starts with an empty
    memory). Only ``input_ids`` is read: segments cross document boundaries, as a stream does."""

    def __init__(self, input_ids: torch.Tensor, streams: int, segment_length: int | None = None):
        length = segment_length or input_ids.shape[-1]
        per_stream = input_ids.numel() // streams // length * length
        if streams < 1 or length < 1 or per_stream == 0:
            raise ValueError(f"{input_ids.numel()} tokens cannot be cut into {streams} streams of at least one "
                             f"{length}-token segment: use fewer streams (the batch size), shorter segments, or more "
                             "data")
        self.streams, self.segment_length = streams, length
        self.segments = input_ids.flatten()[:streams * per_stream].view(streams, per_stream)
        self.num_segments = per_stream // length
        self.epoch = 0
        self.index = 0

    @property
    def starts_over(self) -> bool:
        """Whether the next batch is the first segment of every stream (no earlier segment to remember)."""
        return self.index == 0

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The next segment of every stream: ``{"input_ids": (streams, segment_length)}``."""
        if batch_size != self.streams:
            raise ValueError(f"the segment streams were cut for batches of {self.streams} rows (one per stream), "
                             f"asked for {batch_size}: each row must continue the same stream")
        start = self.index * self.segment_length
        batch = {"input_ids": self.segments[:, start:start + self.segment_length]}
        self.index += 1
        if self.index == self.num_segments:
            self.epoch, self.index = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "streams": self.streams,
                "num_segments": self.num_segments, "segment_length": self.segment_length}

    def load_state_dict(self, state: dict) -> None:
        layout = {key: state.get(key) for key in ("streams", "num_segments", "segment_length")}
        if layout != {key: getattr(self, key) for key in layout}:
            raise ValueError(f"the checkpoint's data position was taken on segment streams cut as {layout}, the data "
                             f"is now cut as streams {self.streams}, num_segments {self.num_segments}, segment_length "
                             f"{self.segment_length}: resume with the data, batch size and options it was saved with")
        self.epoch, self.index = state["epoch"], state["index"]
