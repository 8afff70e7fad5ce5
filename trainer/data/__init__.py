"""Datasets for training and evaluation: SYSU-MM01 and RegDB readers, the cross-modality sampler,
transforms and the training ``Dataset``.

The readers (``sysu_mm01``, ``regdb``, ``samples``, ``images``) need numpy and PIL only; the torch
parts (``dataset``, ``sampler``, ``transforms``) are imported on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainer.data import regdb, sysu_mm01
from trainer.data.images import CorruptPolicy, ImageReadError, filter_readable, load_image, load_image_array
from trainer.data.samples import DatasetError, LabelledSample, Sample, relabel

_LAZY = {
    "CrossModalitySampler": "trainer.data.sampler",
    "ReIDImageDataset": "trainer.data.dataset",
    "SampleImageDataset": "trainer.data.dataset",
    "load_train_samples": "trainer.data.dataset",
    "build_train_transform": "trainer.data.transforms",
    "build_test_transform": "trainer.data.transforms",
    "preprocess_test": "trainer.data.transforms",
}

__all__ = [
    "CorruptPolicy",
    "DatasetError",
    "ImageReadError",
    "LabelledSample",
    "Sample",
    "filter_readable",
    "load_image",
    "load_image_array",
    "regdb",
    "relabel",
    "sysu_mm01",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer.data' has no attribute {name!r}")
