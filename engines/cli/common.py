"""Pieces the engine command lines share: logging, dataset image lists, calibration sets."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from common import Modality
from engines.calibration import CalibrationSet, build_calibration_set, find_images
from engines.sidecar import Preprocessing

__all__ = ["DATASETS", "calibration_from_args", "configure_logging", "dataset_items"]

DATASETS = ("sysu", "regdb")

# Libraries that narrate every graph pass at INFO; their warnings still show.
_CHATTY = ("onnxscript", "onnx_ir", "torch.onnx", "torch._export", "torch.export", "root")


def configure_logging(verbose: bool = False) -> None:
    """INFO for this project (DEBUG with ``verbose``), WARNING for the exporters' internals."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in _CHATTY:
        if name != "root":
            logging.getLogger(name).setLevel(logging.WARNING)


def dataset_items(
    dataset: str, root: str | os.PathLike[str], *, split: str = "train", regdb_trial: int = 1
) -> list[tuple[str, Modality]]:
    """(image path, modality) of a dataset split, read with the trainer's dataset readers.

    Args:
        dataset: ``sysu`` (also the synthetic generator's layout) or ``regdb``.
        root: dataset folder.
        split: ``train`` (calibration, PCA fitting) or ``test``.
        regdb_trial: RegDB split 1..10.
    """
    from trainer.data import regdb, sysu_mm01

    if dataset == "sysu":
        if split == "train":
            samples = sysu_mm01.load_train_samples(root)
        else:
            test = sysu_mm01.load_test_set(root)
            samples = list(test.query) + list(test.gallery_pool)
    elif dataset == "regdb":
        if split == "train":
            samples = regdb.load_train_samples(root, regdb_trial)
        else:
            visible, thermal = regdb.load_test_samples(root, regdb_trial)
            samples = visible + thermal
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return [(s.path, Modality(s.modality)) for s in samples]


def calibration_from_args(
    spec: Preprocessing,
    *,
    images: Sequence[str] = (),
    dataset: str | None = None,
    data_root: str | None = None,
    regdb_trial: int = 1,
    count: int = 256,
    seed: int = 0,
) -> CalibrationSet:
    """A calibration set from image files/folders (modality guessed) or a dataset's training split."""
    items: list[tuple[str | Path, Modality | None]] = []
    if dataset:
        if not data_root:
            raise ValueError("--calibration-dataset needs --data-root")
        items.extend(dataset_items(dataset, data_root, split="train", regdb_trial=regdb_trial))
    if images:
        items.extend((path, None) for path in find_images(images))
    if not items:
        raise ValueError(
            "INT8 needs calibration images: --calibration PATH... or --calibration-dataset with --data-root"
        )
    return build_calibration_set(items, spec, count=count, seed=seed)
