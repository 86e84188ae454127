"""A sampler whose order and augmentation seeds are pure functions of (seed, epoch).

It yields (index, sample_seed) pairs: the dataset seeds each sample's augmentations with the
pair's seed. Shuffling, augmentation and sharding across processes then reproduce exactly,
whatever the number of DataLoader workers, and a run resumed in the middle of an epoch picks up
the very batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Shards one epoch's order across `world_size` processes, like DistributedSampler.

    shuffle: a new permutation every epoch (training); else the dataset order (evaluation).
    pad: repeat a few samples so every process gets the same count (training under DDP needs
        equal step counts); evaluation shards without padding, so nothing is counted twice.
    seeded: yield (index, sample_seed) pairs rather than bare indices.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        seeded: bool = True,
    ) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.seeded = seeded
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; skip the first `start` items of this process's share (resume)."""
        self.epoch = epoch
        self.start = start

    def _share(self) -> tuple[list[int], list[int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        seeds = torch.randint(0, 2**31 - 1, (len(order),), generator=generator).tolist()
        if self.pad and self.world_size > 1:
            extra = -len(order) % self.world_size
            order += order[:extra]
            seeds += seeds[:extra]
        return order[self.rank :: self.world_size], seeds[self.rank :: self.world_size]

    def __iter__(self) -> Iterator:
        order, seeds = self._share()
        if self.seeded:
            return iter(list(zip(order, seeds))[self.start :])
        return iter(order[self.start :])

    def __len__(self) -> int:
        if self.pad and self.world_size > 1:
            per_rank = -(-self.num_samples // self.world_size)
        else:
            per_rank = len(range(self.rank, self.num_samples, self.world_size))
        return max(per_rank - self.start, 0)
