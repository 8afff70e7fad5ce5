"""Per-sample augmentation seeds: each item of an epoch is augmented with a seed derived from
(run seed, epoch, position in the epoch), whatever worker loads it and whether the epoch was resumed
halfway. That is what makes kill -9 + ``--resume`` end with the same weights as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from trainer.training.reproducibility import derive_seed


class SeededSampler(Sampler[tuple[int, int]]):
    """Wraps an index sampler with ``set_epoch``/``set_start_batch``; yields ``(index, seed)``.

    Args:
        sampler: e.g. :class:`trainer.data.sampler.CrossModalitySampler` (deterministic per epoch).
        seed: the run seed.
        batch_size: items per batch of this rank (to translate skipped batches into positions).
        rank: the process rank (ranks get different seeds for their different items).
    """

    def __init__(self, sampler: Any, seed: int, batch_size: int, rank: int = 0) -> None:
        self.sampler = sampler
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start_batch = 0
        self.sampler.set_epoch(epoch)

    def set_start_batch(self, batch: int) -> None:
        """Skip the first ``batch`` batches of the current epoch (mid-epoch resume)."""
        self.start_batch = batch
        self.sampler.set_start_batch(batch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        offset = self.start_batch * self.batch_size
        for position, index in enumerate(self.sampler, start=offset):
            yield int(index), derive_seed(self.seed, self.epoch, self.rank, position)


class SeededDataset(Dataset):
    """Wraps a map-style dataset: item ``(index, seed)`` -> ``dataset[index]`` drawn under ``seed``.

    The global torch RNG (which torchvision's random transforms use) is forked, so the caller's RNG
    stream is untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
