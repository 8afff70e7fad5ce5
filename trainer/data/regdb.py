"""RegDB in its real folder layout (spec section 4.5).

Layout read here (``root`` is the dataset folder)::

    root/Visible/<id>/<image>.bmp    root/Thermal/<id>/<image>.bmp
    root/idx/train_visible_{t}.txt   root/idx/train_thermal_{t}.txt    (t = 1..10)
    root/idx/test_visible_{t}.txt    root/idx/test_thermal_{t}.txt

Each split line is ``<path relative to root> <integer label>``; the label is the identity (``pid``).
Visible samples get camid 2 and thermal samples camid 3 (as MPANet assigns them); the searches use no
camera filtering. Searches: ``visible_to_thermal`` (query = visible test images, gallery = thermal
test images; the AGW default) and ``thermal_to_visible`` (swapped).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from common import Modality
from trainer.data.images import CorruptPolicy, apply_corrupt_policy
from trainer.data.samples import DatasetError, LabelledSample, Sample, relabel

__all__ = [
    "DIRECTIONS",
    "MODALITY_CAMID",
    "NUM_TRIALS",
    "SearchDirection",
    "load_split_file",
    "load_test_split",
    "load_test_samples",
    "load_train_samples",
    "split_file",
]

NUM_TRIALS = 10
MODALITY_CAMID = {Modality.VISIBLE: 2, Modality.INFRARED: 3}
SearchDirection = Literal["visible_to_thermal", "thermal_to_visible"]
DIRECTIONS: tuple[SearchDirection, ...] = ("visible_to_thermal", "thermal_to_visible")
_FOLDERS = {Modality.VISIBLE: "Visible", Modality.INFRARED: "Thermal"}
_FILE_WORD = {Modality.VISIBLE: "visible", Modality.INFRARED: "thermal"}


def _check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(
            f"RegDB root {path} does not exist or is not a folder (expected Visible/, Thermal/ and idx/)"
        )
    missing = [name for name in ("Visible", "Thermal", "idx") if not (path / name).is_dir()]
    if missing:
        raise DatasetError(
            f"RegDB root {path} lacks folder(s) {', '.join(missing)} (expected Visible/, Thermal/ and idx/)"
        )
    return path


def split_file(
    root: str | os.PathLike[str], part: Literal["train", "test"], modality: Modality, trial: int
) -> Path:
    """Path of ``idx/{part}_{visible|thermal}_{trial}.txt``."""
    if not 1 <= trial <= NUM_TRIALS:
        raise ValueError(f"RegDB trial must be 1..{NUM_TRIALS}, got {trial!r}")
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    return Path(root) / "idx" / f"{part}_{_FILE_WORD[Modality.parse(modality)]}_{trial}.txt"


def load_split_file(
    root: str | os.PathLike[str], file: str | os.PathLike[str], modality: Modality
) -> list[Sample]:
    """Parse one RegDB split file into samples, checking that every listed image exists.

    Raises:
        DatasetError: the file is missing or empty, a line is not ``<relative path> <integer label>``,
            or a listed image does not exist (the message names the file, line and image path).
    """
    base = Path(root)
    path = Path(file)
    if not path.is_file():
        raise DatasetError(
            f"RegDB split file {path} does not exist (expected lines '<relative path> <label>')"
        )
    modality = Modality.parse(modality)
    samples: list[Sample] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{number}: expected '<relative path> <integer label>', got {line!r}")
        relative, label_text = parts[0].strip(), parts[1].strip()
        try:
            label = int(label_text)
        except ValueError:
            raise DatasetError(
                f"{path}:{number}: label {label_text!r} is not an integer (line {line!r})"
            ) from None
        image = base / relative
        if not image.is_file():
            raise DatasetError(f"{path}:{number}: image {image} does not exist (listed as {relative!r})")
        samples.append(Sample(str(image), label, MODALITY_CAMID[modality], modality))
    if not samples:
        raise DatasetError(f"RegDB split file {path} lists no images")
    return samples


def _load_part(
    root: str | os.PathLike[str], part: Literal["train", "test"], trial: int
) -> tuple[list[Sample], list[Sample]]:
    base = _check_root(root)
    visible = load_split_file(base, split_file(base, part, Modality.VISIBLE, trial), Modality.VISIBLE)
    thermal = load_split_file(base, split_file(base, part, Modality.INFRARED, trial), Modality.INFRARED)
    only_visible = sorted({s.pid for s in visible} - {s.pid for s in thermal})
    only_thermal = sorted({s.pid for s in thermal} - {s.pid for s in visible})
    if only_visible or only_thermal:
        what = []
        if only_visible:
            what.append(
                f"ids {only_visible[:10]} have no images in {split_file(base, part, Modality.INFRARED, trial)}"
            )
        if only_thermal:
            what.append(
                f"ids {only_thermal[:10]} have no images in {split_file(base, part, Modality.VISIBLE, trial)}"
            )
        raise DatasetError(f"RegDB {part} split {trial}: every id needs both modalities; " + "; ".join(what))
    return visible, thermal


def load_train_samples(
    root: str | os.PathLike[str], trial: int = 1, *, on_corrupt: CorruptPolicy = "error"
) -> list[LabelledSample]:
    """Training samples of RegDB trial ``trial`` (1..10): visible then thermal, relabelled 0..N-1."""
    visible, thermal = _load_part(root, "train", trial)
    kept = apply_corrupt_policy(visible + thermal, on_corrupt, what=f"RegDB training split {trial} at {root}")
    return relabel(kept)


def load_test_samples(
    root: str | os.PathLike[str], trial: int = 1, *, on_corrupt: CorruptPolicy = "error"
) -> tuple[list[Sample], list[Sample]]:
    """(visible, thermal) test samples of RegDB trial ``trial`` (1..10)."""
    visible, thermal = _load_part(root, "test", trial)
    what = f"RegDB test split {trial} at {root}"
    return apply_corrupt_policy(visible, on_corrupt, what=what), apply_corrupt_policy(
        thermal, on_corrupt, what=what
    )


def load_test_split(
    root: str | os.PathLike[str],
    trial: int = 1,
    direction: SearchDirection = "visible_to_thermal",
    *,
    on_corrupt: CorruptPolicy = "error",
) -> tuple[list[Sample], list[Sample]]:
    """(query, gallery) of RegDB trial ``trial`` for one search direction."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    visible, thermal = load_test_samples(root, trial, on_corrupt=on_corrupt)
    return (visible, thermal) if direction == "visible_to_thermal" else (thermal, visible)
