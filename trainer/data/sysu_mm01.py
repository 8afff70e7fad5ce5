"""SYSU-MM01 in its real folder layout (spec section 4.1-4.2).

Layout read here (``root`` is the dataset folder)::

    root/cam1 .. root/cam6/<4-digit id>/<NNNN>.jpg     (cams 3 and 6 are infrared)
    root/exp/train_id.txt, val_id.txt, test_id.txt     (one line of comma-separated ids)
    root/exp/rand_perm_cam.mat                          (optional: the official gallery picks)

Training uses the train + val ids (395 on the real set) from all six cameras. The test split's query
is every infrared image (cams 3 and 6) of the test ids; the gallery of a (mode, shots, trial) is
picked from the visible images of the test ids (cams 1, 2, 4, 5 for ``all``, cams 1, 2 for
``indoor``), either by the official ``rand_perm_cam.mat`` (row ``trial``, first ``shots`` image
numbers of each (camera, id)) or, without that file, by the AGW baseline's seeded sampling
(``random.seed(trial)``, then ``random.choice`` over the sorted files of each existing (id, camera)
folder, ids ascending, cameras in order). :attr:`SysuTestSet.sampling` says which one was used.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from common import Modality
from trainer.data.images import IMAGE_SUFFIXES, CorruptPolicy, apply_corrupt_policy
from trainer.data.samples import DatasetError, LabelledSample, Sample, relabel

__all__ = [
    "CAMERAS",
    "GALLERY_CAMERAS",
    "INFRARED_CAMERAS",
    "NUM_TRIALS",
    "GallerySampling",
    "RandPerm",
    "SearchMode",
    "SysuTestSet",
    "camera_modality",
    "load_rand_perm",
    "load_test_set",
    "load_test_split",
    "load_train_samples",
    "read_id_file",
]

CAMERAS = (1, 2, 3, 4, 5, 6)
INFRARED_CAMERAS = (3, 6)
GALLERY_CAMERAS: dict[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
NUM_TRIALS = 10
SearchMode = Literal["all", "indoor"]
GallerySampling = Literal["auto", "official", "agw"]

_LOG = logging.getLogger(__name__)


def camera_modality(camid: int) -> Modality:
    """Modality of a SYSU-MM01 camera: infrared for cams 3 and 6, visible otherwise."""
    if camid not in CAMERAS:
        raise ValueError(f"SYSU-MM01 camera ids are 1..6, got {camid!r}")
    return Modality.INFRARED if camid in INFRARED_CAMERAS else Modality.VISIBLE


# ------------------------------------------------------------------------------------------ folders


def _check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(
            f"SYSU-MM01 root {path} does not exist or is not a folder "
            "(expected a folder holding cam1..cam6/ and exp/)"
        )
    missing = [f"cam{c}" for c in CAMERAS if not (path / f"cam{c}").is_dir()]
    if missing:
        raise DatasetError(
            f"SYSU-MM01 root {path} lacks camera folder(s) {', '.join(missing)} "
            "(expected cam1..cam6, each with <4-digit id>/ subfolders of images)"
        )
    return path


def read_id_file(path: str | os.PathLike[str]) -> list[int]:
    """Read a SYSU-MM01 ``exp/*_id.txt`` file: comma-separated integer ids (one line on the real set).

    Newlines and spaces are also accepted as separators. Raises :class:`DatasetError` naming the file
    when it is missing, empty or holds a token that is not a positive integer.
    """
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"split file {file} does not exist (expected one line of comma-separated ids)")
    text = file.read_text(encoding="utf-8", errors="replace")
    tokens = [t for t in text.replace("\n", ",").replace("\r", ",").replace(" ", ",").split(",") if t]
    ids: list[int] = []
    for token in tokens:
        try:
            value = int(token)
        except ValueError:
            raise DatasetError(
                f"split file {file}: {token!r} is not an integer id (expected comma-separated ids)"
            ) from None
        if value <= 0:
            raise DatasetError(f"split file {file}: id {value} must be a positive integer")
        ids.append(value)
    if not ids:
        raise DatasetError(f"split file {file} holds no ids (expected one line of comma-separated ids)")
    return ids


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _samples_of_ids(
    root: Path, ids: Iterable[int], cameras: Sequence[int], split_files: Sequence[Path]
) -> list[Sample]:
    """All images of ``ids`` in ``cameras``, ordered by id, then camera, then file name."""
    samples: list[Sample] = []
    for pid in sorted(set(ids)):
        found = 0
        for cam in cameras:
            for image in _list_images(root / f"cam{cam}" / f"{pid:04d}"):
                samples.append(Sample(str(image), pid, cam, camera_modality(cam)))
                found += 1
        if found == 0:
            raise DatasetError(
                f"id {pid} listed in {' / '.join(str(f) for f in split_files)} has no images: expected "
                f"image files in at least one of {', '.join(str(root / f'cam{c}' / f'{pid:04d}') for c in cameras)}"
            )
    return samples


# ------------------------------------------------------------------------------------------ training


def load_train_samples(
    root: str | os.PathLike[str], *, on_corrupt: CorruptPolicy = "error"
) -> list[LabelledSample]:
    """Training samples of SYSU-MM01: the train + val ids (395 on the real set), all six cameras.

    Labels are relabelled to 0..N-1 in increasing id order; ``pid`` keeps the dataset id.

    Raises:
        DatasetError: missing root, camera folder or split file; an id without images; with
            ``on_corrupt="error"`` an unreadable image raises :class:`~trainer.data.images.ImageReadError`
            when it is loaded.
    """
    base = _check_root(root)
    files = [base / "exp" / "train_id.txt", base / "exp" / "val_id.txt"]
    ids = read_id_file(files[0]) + read_id_file(files[1])
    samples = _samples_of_ids(base, ids, CAMERAS, files)
    return relabel(apply_corrupt_policy(samples, on_corrupt, what=f"SYSU-MM01 training set at {base}"))


# -------------------------------------------------------------------------------- rand_perm_cam.mat


@dataclasses.dataclass(frozen=True)
class RandPerm:
    """The official gallery picks of ``rand_perm_cam.mat``.

    ``picks[(camid, pid)]`` is an int array (trials, n) of 1-based image numbers (row t = trial t);
    (camera, id) pairs that the file leaves empty are absent.
    """

    path: str
    picks: dict[tuple[int, int], np.ndarray]

    def counts(self) -> dict[tuple[int, int], int]:
        """Images per (camid, pid) that the file knows of (n, the number of columns)."""
        return {key: int(value.shape[1]) for key, value in self.picks.items()}


@functools.lru_cache(maxsize=4)
def _load_rand_perm_cached(path: str, mtime_ns: int) -> RandPerm:
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DatasetError(f"{path} cannot be read as a MATLAB .mat file: {exc}") from exc
    if "rand_perm_cam" not in content:
        raise DatasetError(f"{path} has no variable 'rand_perm_cam' (found {sorted(content)})")
    cells = np.asarray(content["rand_perm_cam"], dtype=object).reshape(-1)
    if cells.size != len(CAMERAS):
        raise DatasetError(
            f"{path}: rand_perm_cam must be a 6x1 cell (one per camera), got {cells.size} cells"
        )
    picks: dict[tuple[int, int], np.ndarray] = {}
    for cam, cell in zip(CAMERAS, cells, strict=True):
        entries = np.asarray(cell, dtype=object).reshape(-1)
        for index, entry in enumerate(entries):
            matrix = np.asarray(entry)
            if matrix.size == 0:
                continue
            if matrix.ndim != 2:
                raise DatasetError(
                    f"{path}: rand_perm_cam{{{cam}}}{{{index + 1}}} must be a trials x n matrix, "
                    f"got shape {matrix.shape}"
                )
            picks[(cam, index + 1)] = matrix.astype(np.int64)
    return RandPerm(path=path, picks=picks)


def load_rand_perm(path: str | os.PathLike[str]) -> RandPerm:
    """Parse an official-format ``rand_perm_cam.mat`` (6x1 cell; entry {c}{id} a 10 x n matrix)."""
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"gallery permutation file {file} does not exist")
    return _load_rand_perm_cached(str(file), file.stat().st_mtime_ns)


# ---------------------------------------------------------------------------------------------- test


@dataclasses.dataclass(frozen=True)
class SysuTestSet:
    """The SYSU-MM01 test split: the query, the pool of possible gallery images and how to pick.

    Attributes:
        root: the dataset folder.
        query: all infrared images (cams 3 and 6) of the test ids, by id, camera, file name.
        gallery_pool: all visible images (cams 1, 2, 4, 5) of the test ids, in the same order. Every
            gallery of every (mode, shots, trial) is a subset of it, so features are extracted once.
        sampling: ``"official"`` (picks from ``exp/rand_perm_cam.mat``) or ``"agw"`` (the AGW
            baseline's seeded sampling).
        rand_perm: the parsed permutation file when ``sampling == "official"``.
        skipped: image paths left out because they were unreadable (``on_corrupt="skip"``).
    """

    root: str
    query: list[Sample]
    gallery_pool: list[Sample]
    sampling: Literal["official", "agw"]
    rand_perm: RandPerm | None = None
    skipped: frozenset[str] = frozenset()

    @functools.cached_property
    def _pool_index(self) -> dict[tuple[int, int], list[tuple[str, int]]]:
        # (camid, pid) -> [(file name, pool index)] in sorted file-name order
        index: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for position, sample in enumerate(self.gallery_pool):
            index.setdefault((sample.camid, sample.pid), []).append((Path(sample.path).name, position))
        return index

    @property
    def test_ids(self) -> list[int]:
        return sorted({s.pid for s in self.query} | {s.pid for s in self.gallery_pool})

    def gallery_indices(self, mode: SearchMode, shots: int, trial: int) -> np.ndarray:
        """Indices into :attr:`gallery_pool` of the gallery of (mode, shots, trial), ascending (int64)."""
        cameras = _gallery_cameras(mode)
        if shots < 1:
            raise ValueError(f"shots must be >= 1 (1 = single-shot, 10 = multi-shot), got {shots!r}")
        if self.sampling == "official":
            return self._official_indices(cameras, shots, trial)
        return self._agw_indices(cameras, shots, trial)

    def gallery(self, mode: SearchMode, shots: int, trial: int) -> list[Sample]:
        """The gallery samples of (mode, shots, trial) (see :meth:`gallery_indices`)."""
        return [self.gallery_pool[i] for i in self.gallery_indices(mode, shots, trial)]

    def _official_indices(self, cameras: Sequence[int], shots: int, trial: int) -> np.ndarray:
        assert self.rand_perm is not None
        chosen: list[int] = []
        for pid in self.test_ids:
            for cam in cameras:
                picks = self.rand_perm.picks.get((cam, pid))
                files = self._pool_index.get((cam, pid), [])
                if picks is None:
                    if files:
                        _LOG.warning(
                            "%s has no entry for camera %d id %d although %s holds %d images; "
                            "following the file (none of them is used)",
                            self.rand_perm.path,
                            cam,
                            pid,
                            Path(self.root) / f"cam{cam}" / f"{pid:04d}",
                            len(files),
                        )
                    continue
                if not 0 <= trial < picks.shape[0]:
                    raise ValueError(
                        f"trial {trial} is out of range: {self.rand_perm.path} holds {picks.shape[0]} trials "
                        f"(rows) for camera {cam} id {pid}"
                    )
                by_number = {_image_number(name): position for name, position in files}
                for number in picks[trial, :shots].tolist():
                    if number in by_number:
                        chosen.append(by_number[number])
                        continue
                    expected = Path(self.root) / f"cam{cam}" / f"{pid:04d}" / f"{number:04d}.jpg"
                    if any(_image_number(Path(p).name) == number for p in self._skipped_in(cam, pid)):
                        continue  # unreadable and skipped by the caller's policy; already logged
                    raise DatasetError(
                        f"{self.rand_perm.path} picks image {number} of camera {cam} id {pid} for trial "
                        f"{trial}, but {expected} (or another extension) does not exist"
                    )
        return np.asarray(sorted(chosen), dtype=np.int64)

    def _skipped_in(self, cam: int, pid: int) -> list[str]:
        folder = Path(self.root) / f"cam{cam}" / f"{pid:04d}"
        return [p for p in self.skipped if Path(p).parent == folder]

    def _agw_indices(self, cameras: Sequence[int], shots: int, trial: int) -> np.ndarray:
        if trial < 0:
            raise ValueError(f"trial must be >= 0, got {trial!r}")
        # Same draws as AGW's random.seed(trial) + random.choice, without touching the global RNG.
        rng = random.Random(trial)
        chosen: list[int] = []
        for pid in self.test_ids:
            for cam in cameras:
                files = self._pool_index.get((cam, pid))
                if not files:
                    continue
                if shots == 1:
                    chosen.append(rng.choice(files)[1])
                else:  # AGW has no multi-shot; sample without replacement (extension, documented)
                    chosen.extend(f[1] for f in rng.sample(files, min(shots, len(files))))
        return np.asarray(sorted(chosen), dtype=np.int64)


def _image_number(name: str) -> int | None:
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else None


def _gallery_cameras(mode: str) -> tuple[int, ...]:
    if mode not in GALLERY_CAMERAS:
        raise ValueError(f"SYSU-MM01 search mode must be 'all' or 'indoor', got {mode!r}")
    return GALLERY_CAMERAS[mode]


def load_test_set(
    root: str | os.PathLike[str],
    *,
    gallery_sampling: GallerySampling = "auto",
    on_corrupt: CorruptPolicy = "error",
) -> SysuTestSet:
    """Read the SYSU-MM01 test split (query + gallery pool) and choose the gallery sampling.

    Args:
        root: the dataset folder.
        gallery_sampling: ``"official"`` (requires ``exp/rand_perm_cam.mat``), ``"agw"``, or ``"auto"``
            (official when the file exists, AGW otherwise).
        on_corrupt: ``"error"`` (default) or ``"skip"`` unreadable images (counted in the log).
    """
    base = _check_root(root)
    test_file = base / "exp" / "test_id.txt"
    ids = read_id_file(test_file)
    all_samples = _samples_of_ids(base, ids, CAMERAS, [test_file])
    kept = apply_corrupt_policy(all_samples, on_corrupt, what=f"SYSU-MM01 test set at {base}")
    skipped = frozenset(s.path for s in all_samples) - frozenset(s.path for s in kept)
    query = [s for s in kept if s.camid in INFRARED_CAMERAS]
    pool = [s for s in kept if s.camid in GALLERY_CAMERAS["all"]]
    perm_file = base / "exp" / "rand_perm_cam.mat"
    if gallery_sampling not in ("auto", "official", "agw"):
        raise ValueError(f"gallery_sampling must be 'auto', 'official' or 'agw', got {gallery_sampling!r}")
    if gallery_sampling == "official" and not perm_file.is_file():
        raise DatasetError(
            f"gallery_sampling='official' needs {perm_file} (the official SYSU-MM01 "
            "evaluation/data_split/rand_perm_cam.mat); use 'agw' or 'auto' to sample without it"
        )
    if gallery_sampling == "agw" or (gallery_sampling == "auto" and not perm_file.is_file()):
        return SysuTestSet(str(base), query, pool, "agw", None, skipped)
    return SysuTestSet(str(base), query, pool, "official", load_rand_perm(perm_file), skipped)


def load_test_split(
    root: str | os.PathLike[str],
    mode: SearchMode,
    shots: int,
    trial: int,
    *,
    gallery_sampling: GallerySampling = "auto",
    on_corrupt: CorruptPolicy = "error",
) -> tuple[list[Sample], list[Sample]]:
    """(query, gallery) of SYSU-MM01 for ``mode`` in {all, indoor}, ``shots`` in {1, 10}, ``trial`` 0..9.

    See :func:`load_test_set` for the arguments; use it directly to read the folders once for many
    (mode, shots, trial) combinations.
    """
    test_set = load_test_set(root, gallery_sampling=gallery_sampling, on_corrupt=on_corrupt)
    return test_set.query, test_set.gallery(mode, shots, trial)
