"""The torch ``Dataset`` for training and the one entry point that loads training samples."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from trainer.data import regdb, sysu_mm01
from trainer.data.images import CorruptPolicy, load_image
from trainer.data.samples import LabelledSample, Sample

__all__ = ["DatasetName", "ReIDImageDataset", "SampleImageDataset", "load_train_samples"]

DatasetName = Literal["sysu", "regdb"]


def load_train_samples(
    root: str | os.PathLike[str],
    dataset: DatasetName = "sysu",
    trial: int = 1,
    *,
    on_corrupt: CorruptPolicy = "error",
) -> list[LabelledSample]:
    """Training samples of ``dataset`` with labels relabelled to 0..N-1 (``pid`` kept).

    ``sysu``: train + val ids, all six cameras (``trial`` unused). ``regdb``: the training split of
    ``trial`` (1..10; MPANet trains on trial 1). Synthetic sets are read the same way, since the
    generator writes the real layouts.
    """
    if dataset == "sysu":
        return sysu_mm01.load_train_samples(root, on_corrupt=on_corrupt)
    if dataset == "regdb":
        return regdb.load_train_samples(root, trial, on_corrupt=on_corrupt)
    raise ValueError(f"dataset must be 'sysu' or 'regdb', got {dataset!r}")


class ReIDImageDataset(Dataset):
    """Training images: item i is ``(image, label, modality_flag, camid)``.

    ``image`` is ``transform(PIL RGB image)`` (a float32 (3, H, W) tensor for the spec transforms);
    ``label``, ``modality_flag`` (0 visible, 1 infrared) and ``camid`` are int64 scalar tensors.
    An unreadable image raises :class:`~trainer.data.images.ImageReadError` naming its path.
    """

    def __init__(self, samples: Sequence[LabelledSample], transform: Callable[[Image.Image], torch.Tensor]):
        for index, sample in enumerate(samples[:1]):
            if not isinstance(sample, LabelledSample) or sample.label < 0:
                raise TypeError(
                    f"sample {index} must be a LabelledSample with a label >= 0 (use load_train_samples "
                    f"or trainer.data.relabel), got {sample!r}"
                )
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = self.transform(load_image(sample.path))
        return (
            image,
            torch.tensor(sample.label, dtype=torch.int64),
            torch.tensor(sample.modality.flag, dtype=torch.int64),
            torch.tensor(sample.camid, dtype=torch.int64),
        )


class SampleImageDataset(Dataset):
    """Test images for feature extraction: item i is ``transform(image of samples[i])``."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], object]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> object:
        return self.transform(load_image(self.samples[index].path))
