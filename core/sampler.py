"""The order in which training blocks are visited: a seeded permutation per epoch, with a resumable position."""

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
        if state["num_blocks"] != self.num_blocks:
            raise ValueError(f"the checkpoint was taken with {state['num_blocks']} training blocks, the data now has "
                             f"{self.num_blocks}: the data or data options changed since the run was saved")
        self.seed = state["seed"]
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._permutation(self.epoch)
