"""Samplers: a per-epoch seeded shuffle sharded over ranks that can start mid-epoch, and an eval shard.

Resuming a killed run needs the exact batch order of the interrupted epoch from the batch where it
stopped; the training sampler derives its permutation from (seed, epoch) alone and skips the
batches already done, without decoding them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from .rng import derive_seed


class EpochShuffleSampler(Sampler[int]):
    """DistributedSampler's layout (padded to a multiple of the world size, rank r takes every
    r-th index) over a permutation seeded by (seed, epoch), starting after ``skip_batches``."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.per_rank = -(-size // world_size)
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, skip_batches: int, batch_size: int) -> None:
        """Shuffle for ``epoch`` and begin after ``skip_batches`` batches of ``batch_size``."""
        self.epoch = epoch
        self.start = min(skip_batches * batch_size, self.per_rank)

    def _rank_indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]  # pad by repeating, as DistributedSampler does
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


class ShardSampler(Sampler[int]):
    """Rank r evaluates items r, r + world, ...: every item exactly once over all ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, limit: int | None = None) -> None:
        self.indices = list(range(size if limit is None else min(size, limit)))[rank::world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
