"""Writers of synthetic datasets in the exact SYSU-MM01 and RegDB folder layouts (numpy + OpenCV).

Every reader, the trainer and the benchmarks run on these without the real datasets:

- :func:`write_sysu`: ``cam1..cam6/<4-digit id>/<NNNN>.jpg`` (cams 3 and 6 infrared, stored as
  single-channel JPEGs), ``exp/train_id.txt``, ``val_id.txt``, ``test_id.txt``, ``available_id.txt``
  (one line of comma-separated ids) and ``exp/rand_perm_cam.mat`` in the official structure, so the
  official gallery-sampling path is exercised.
- :func:`write_regdb`: ``Visible/<id>/``, ``Thermal/<id>/`` (BMP; thermal single-channel) and
  ``idx/{train,test}_{visible,thermal}_{t}.txt`` for t = 1..10 (random half/half id splits).
- :func:`write_sysu_replica`: the real SYSU-MM01 *test* layout with the per-camera, per-id image
  counts of the official ``rand_perm_cam.mat`` (tiny blank images), to test protocol counts.

Output is a deterministic function of the arguments (each image has its own seeded generator, so
the worker count does not matter). A ``synthetic.json`` summary is written last.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common import Modality
from common.files import atomic_write_bytes, atomic_write_text
from trainer.synthetic.crops import REGDB_CAMERA_STYLES, SYSU_CAMERA_STYLES, render_crop, sample_pose
from trainer.synthetic.person import sample_appearance

__all__ = [
    "SYSU_CAMERA_PRESENCE",
    "SynthSummary",
    "appearance_rng",
    "read_rand_perm_counts",
    "read_test_ids",
    "save_rand_perm",
    "write_regdb",
    "write_sysu",
    "write_sysu_replica",
]

GENERATOR_VERSION = 1
# Probability that an identity appears in each SYSU camera (roughly the real set's coverage: the
# indoor cams 1-2 see about 60% of the people, the others nearly everyone).
SYSU_CAMERA_PRESENCE = {1: 0.6, 2: 0.6, 3: 0.85, 4: 0.9, 5: 0.9, 6: 0.85}
_VISIBLE_CAMS = (1, 2, 4, 5)
_INFRARED_CAMS = (3, 6)
_NUM_TRIALS = 10
_JPEG_QUALITY = 92
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by trainer.synthetic (mpanet-edge)".ljust(116, b" ")


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    """What a writer produced: the root, the layout, image counts and the arguments used."""

    root: str
    layout: str
    num_ids: int
    num_images: int
    images_per_camera: dict[str, int]
    arguments: dict[str, Any]


def appearance_rng(seed: int, pid: int) -> np.random.Generator:
    """The generator an identity's appearance is drawn from (same pid + seed = same person)."""
    return np.random.default_rng([seed, 1, pid])


def _prepare(out: str | os.PathLike[str], overwrite: bool) -> Path:
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"output {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {root} is not empty; pass overwrite=True (--overwrite) to write into it"
        )
    root.mkdir(parents=True, exist_ok=True)
    return root


def _write_image(path: Path, image: np.ndarray, modality: Modality) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if modality is Modality.INFRARED:
        data = image[..., 0]  # grey: stored single-channel, as infrared files may be
    else:
        data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(path.suffix, data, params)
    if not ok:
        raise OSError(f"could not encode image {path}")
    path.write_bytes(encoded.tobytes())


def _run(tasks: Sequence[Any], worker: Callable[[Any], int], workers: int, progress: bool, desc: str) -> int:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit="task")
    done = 0
    if workers <= 1:
        for task in tasks:
            done += worker(task)
            if bar is not None:
                bar.update(1)
    else:
        # spawn, not fork: callers may have torch/OpenMP threads running, which forked children can
        # deadlock on; the workers only need this light module.
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            for count in pool.map(worker, tasks, chunksize=max(1, len(tasks) // (workers * 8))):
                done += count
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return done


# --------------------------------------------------------------------------------------------- SYSU


@dataclasses.dataclass(frozen=True)
class _SysuTask:
    root: str
    seed: int
    pid: int
    camid: int
    count: int
    height: int
    width: int


def _sysu_worker(task: _SysuTask) -> int:
    appearance = sample_appearance(task.pid, appearance_rng(task.seed, task.pid))
    style = SYSU_CAMERA_STYLES[task.camid]
    folder = Path(task.root) / f"cam{task.camid}" / f"{task.pid:04d}"
    for number in range(1, task.count + 1):
        rng = np.random.default_rng([task.seed, 2, task.pid, task.camid, number])
        image = render_crop(
            appearance, style.modality, height=task.height, width=task.width, rng=rng, style=style
        )
        _write_image(folder / f"{number:04d}.jpg", image, style.modality)
    return task.count


def _camera_sets(num_ids: int, seed: int) -> dict[int, tuple[int, ...]]:
    """Cameras each id appears in: at least one visible and one infrared camera."""
    cams: dict[int, tuple[int, ...]] = {}
    for pid in range(1, num_ids + 1):
        rng = np.random.default_rng([seed, 3, pid])
        present = {c for c, p in SYSU_CAMERA_PRESENCE.items() if rng.random() < p}
        if not present & set(_VISIBLE_CAMS):
            present.add(int(rng.choice(_VISIBLE_CAMS)))
        if not present & set(_INFRARED_CAMS):
            present.add(int(rng.choice(_INFRARED_CAMS)))
        cams[pid] = tuple(sorted(present))
    return cams


def _id_line(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(ids)) + "\n"


def save_rand_perm(
    path: str | os.PathLike[str], counts: dict[tuple[int, int], int], num_ids: int, seed: int
) -> None:
    """Write a ``rand_perm_cam.mat`` in the official structure for the given (camid, pid) -> image counts.

    ``rand_perm_cam`` is a 6x1 cell; entry {c}{id} a 10 x n matrix of 1-based image numbers (each
    row a random permutation), 10 x 0 where the id has no image in that camera.
    """
    import scipy.io

    cells = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        column = np.empty((num_ids, 1), dtype=object)
        for pid in range(1, num_ids + 1):
            n = counts.get((cam, pid), 0)
            rng = np.random.default_rng([seed, 4, cam, pid])
            dtype = np.uint8 if n <= 255 else np.uint16  # the official file stores uint8
            column[pid - 1, 0] = np.asarray(
                [rng.permutation(n) + 1 for _ in range(_NUM_TRIALS)], dtype=dtype
            ).reshape(_NUM_TRIALS, n)
        cells[cam - 1, 0] = column
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"rand_perm_cam": cells}, do_compression=True)
    data = bytearray(buffer.getvalue())
    # The MAT 5 header's first 116 bytes are free text with a creation time; a fixed text keeps the
    # file a deterministic function of the arguments.
    data[:116] = _MAT_HEADER
    atomic_write_bytes(path, bytes(data))


def write_sysu(
    out: str | os.PathLike[str],
    *,
    num_ids: int = 60,
    images_per_camera: int = 12,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    num_test_ids: int | None = None,
    num_val_ids: int | None = None,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic SYSU-MM01 set in the real layout.

    Args:
        out: output folder (created; must be empty unless ``overwrite``).
        num_ids: identities, numbered 1..num_ids.
        images_per_camera: images per (id, camera) where the id appears (real SYSU: ~20).
        height, width: crop size in pixels.
        seed: everything is a function of it.
        num_test_ids: held-out test ids (default: 20% of the ids, at least 2); num_val_ids: default
            10% of the rest. Train + val are the training ids, as in the real protocol.
        workers: processes rendering in parallel (output does not depend on it).
    """
    if num_ids < 4:
        raise ValueError(f"num_ids must be >= 4 (train and test ids), got {num_ids}")
    if images_per_camera < 1 or height < 16 or width < 8:
        raise ValueError("images_per_camera must be >= 1 and the image at least 16 x 8 pixels")
    num_test = max(2, round(0.2 * num_ids)) if num_test_ids is None else int(num_test_ids)
    num_val = round(0.1 * (num_ids - num_test)) if num_val_ids is None else int(num_val_ids)
    if not 1 <= num_test < num_ids or not 0 <= num_val < num_ids - num_test:
        raise ValueError(f"invalid split: {num_test} test and {num_val} val ids of {num_ids}")
    root = _prepare(out, overwrite)
    cams = _camera_sets(num_ids, seed)
    order = np.random.default_rng([seed, 5]).permutation(np.arange(1, num_ids + 1))
    test_ids, val_ids = order[:num_test].tolist(), order[num_test : num_test + num_val].tolist()
    train_ids = order[num_test + num_val :].tolist()

    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(exist_ok=True)
    tasks = [
        _SysuTask(str(root), seed, pid, cam, images_per_camera, height, width)
        for pid in range(1, num_ids + 1)
        for cam in cams[pid]
    ]
    total = _run(tasks, _sysu_worker, workers, progress, "rendering SYSU-MM01 layout")

    exp = root / "exp"
    atomic_write_text(exp / "train_id.txt", _id_line(train_ids))
    atomic_write_text(exp / "val_id.txt", _id_line(val_ids))
    atomic_write_text(exp / "test_id.txt", _id_line(test_ids))
    atomic_write_text(exp / "available_id.txt", _id_line(range(1, num_ids + 1)))
    counts = {(t.camid, t.pid): t.count for t in tasks}
    save_rand_perm(exp / "rand_perm_cam.mat", counts, num_ids, seed)
    per_camera = {f"cam{c}": sum(n for (cam, _), n in counts.items() if cam == c) for c in range(1, 7)}
    arguments = dict(
        num_ids=num_ids,
        images_per_camera=images_per_camera,
        height=height,
        width=width,
        seed=seed,
        num_test_ids=num_test,
        num_val_ids=num_val,
    )
    return _finish(root, "sysu", num_ids, total, per_camera, arguments)


def _finish(
    root: Path, layout: str, num_ids: int, total: int, per_camera: dict[str, int], arguments: dict[str, Any]
) -> SynthSummary:
    summary = SynthSummary(str(root), layout, num_ids, total, per_camera, arguments)
    payload = {"generator": "trainer.synthetic", "version": GENERATOR_VERSION, **dataclasses.asdict(summary)}
    atomic_write_text(root / "synthetic.json", json.dumps(payload, indent=2) + "\n")
    return summary


# -------------------------------------------------------------------------------------------- RegDB


@dataclasses.dataclass(frozen=True)
class _RegdbTask:
    root: str
    seed: int
    pid: int
    count: int
    height: int
    width: int


def _regdb_name(modality: Modality, pid: int, number: int) -> str:
    folder = "Visible" if modality is Modality.VISIBLE else "Thermal"
    letter = "v" if modality is Modality.VISIBLE else "t"
    return f"{folder}/{pid}/synthetic_{letter}_{pid:04d}_{number:02d}.bmp"


def _regdb_worker(task: _RegdbTask) -> int:
    appearance = sample_appearance(task.pid, appearance_rng(task.seed, task.pid))
    for number in range(1, task.count + 1):
        # RegDB's two cameras are co-located and fire together: one pose, two modalities.
        pose = sample_pose(
            REGDB_CAMERA_STYLES[Modality.VISIBLE], np.random.default_rng([task.seed, 6, task.pid, number])
        )
        for modality in (Modality.VISIBLE, Modality.INFRARED):
            rng = np.random.default_rng([task.seed, 7, task.pid, number, modality.flag])
            image = render_crop(
                appearance,
                modality,
                height=task.height,
                width=task.width,
                rng=rng,
                style=REGDB_CAMERA_STYLES[modality],
                pose=pose,
            )
            _write_image(Path(task.root) / _regdb_name(modality, task.pid, number), image, modality)
    return 2 * task.count


def write_regdb(
    out: str | os.PathLike[str],
    *,
    num_ids: int = 40,
    images_per_modality: int = 10,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic RegDB set in the real layout (ids 1..num_ids; real RegDB: 412 ids x 10 + 10).

    Split files for trials 1..10 each put a random half of the ids (rounded down) in training and the
    rest in test; each line is ``<path relative to root> <id>``.
    """
    if num_ids < 4:
        raise ValueError(f"num_ids must be >= 4, got {num_ids}")
    if images_per_modality < 1 or height < 16 or width < 8:
        raise ValueError("images_per_modality must be >= 1 and the image at least 16 x 8 pixels")
    root = _prepare(out, overwrite)
    tasks = [
        _RegdbTask(str(root), seed, pid, images_per_modality, height, width) for pid in range(1, num_ids + 1)
    ]
    total = _run(tasks, _regdb_worker, workers, progress, "rendering RegDB layout")
    idx = root / "idx"
    for trial in range(1, _NUM_TRIALS + 1):
        order = np.random.default_rng([seed, 8, trial]).permutation(np.arange(1, num_ids + 1))
        parts = {
            "train": sorted(order[: num_ids // 2].tolist()),
            "test": sorted(order[num_ids // 2 :].tolist()),
        }
        for part, ids in parts.items():
            for modality, word in ((Modality.VISIBLE, "visible"), (Modality.INFRARED, "thermal")):
                lines = [
                    f"{_regdb_name(modality, pid, n)} {pid}"
                    for pid in ids
                    for n in range(1, images_per_modality + 1)
                ]
                atomic_write_text(idx / f"{part}_{word}_{trial}.txt", "\n".join(lines) + "\n")
    per_camera = {"Visible": total // 2, "Thermal": total // 2}
    arguments = dict(
        num_ids=num_ids, images_per_modality=images_per_modality, height=height, width=width, seed=seed
    )
    return _finish(root, "regdb", num_ids, total, per_camera, arguments)


# ------------------------------------------------------------------------------------ SYSU replica


def read_test_ids(path: str | os.PathLike[str]) -> list[int]:
    """Test ids from the official ``test_id.mat`` (variable ``id``) or a comma-separated text file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"test id file {file} does not exist")
    if file.suffix.lower() == ".mat":
        import scipy.io

        content = scipy.io.loadmat(file)
        if "id" not in content:
            raise ValueError(f"{file} has no variable 'id' (expected the official test_id.mat)")
        return [int(v) for v in np.asarray(content["id"]).reshape(-1)]
    text = file.read_text(encoding="utf-8").replace("\n", ",")
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise ValueError(f"{file} must hold comma-separated integer ids: {exc}") from None


def read_rand_perm_counts(path: str | os.PathLike[str]) -> dict[tuple[int, int], int]:
    """(camid, pid) -> number of images, from an official-format ``rand_perm_cam.mat``.

    (The dataset reader parses the same file in ``trainer.data.sysu_mm01``; this package stays free
    of training code, so it reads the counts itself.)
    """
    import scipy.io

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"rand_perm_cam file {file} does not exist")
    content = scipy.io.loadmat(file)
    if "rand_perm_cam" not in content:
        raise ValueError(f"{file} has no variable 'rand_perm_cam'")
    cells = np.asarray(content["rand_perm_cam"], dtype=object).reshape(-1)
    if cells.size != 6:
        raise ValueError(f"{file}: rand_perm_cam must be a 6x1 cell, got {cells.size} cells")
    counts: dict[tuple[int, int], int] = {}
    for cam, cell in enumerate(cells, start=1):
        for index, entry in enumerate(np.asarray(cell, dtype=object).reshape(-1)):
            matrix = np.asarray(entry)
            if matrix.size:
                counts[(cam, index + 1)] = int(matrix.shape[-1])
    return counts


def write_sysu_replica(
    out: str | os.PathLike[str],
    rand_perm_path: str | os.PathLike[str],
    *,
    test_ids: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Replica of the real SYSU-MM01 test layout from the official ``rand_perm_cam.mat``.

    For every test id and camera, writes as many (tiny, blank) images as the file says exist, copies
    the file to ``exp/rand_perm_cam.mat`` and writes ``exp/test_id.txt``. The test ids come from
    ``test_ids`` or else from ``test_id.mat`` next to ``rand_perm_path`` (the official
    ``evaluation/data_split/`` folder holds both). About 10,600 files for the real split.
    """
    perm_path = Path(rand_perm_path)
    counts = read_rand_perm_counts(perm_path)
    if test_ids is None:
        id_file = perm_path.with_name("test_id.mat")
        if not id_file.is_file():
            raise FileNotFoundError(
                f"no test ids given and {id_file} does not exist (pass test_ids / --test-ids-from)"
            )
        test_ids = read_test_ids(id_file)
    root = _prepare(out, overwrite)
    ok, encoded = cv2.imencode(".jpg", np.full((8, 4), 128, np.uint8))
    if not ok:
        raise OSError("could not encode the replica's blank image")
    blank = encoded.tobytes()
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(exist_ok=True)
    total = 0
    per_camera = {f"cam{c}": 0 for c in range(1, 7)}
    ids = sorted(set(int(i) for i in test_ids))
    iterator: Iterable[int] = ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(ids, desc="writing SYSU-MM01 test replica", unit="id")
    for pid in iterator:
        for cam in range(1, 7):
            n = counts.get((cam, pid), 0)
            if n == 0:
                continue
            folder = root / f"cam{cam}" / f"{pid:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(1, n + 1):
                (folder / f"{number:04d}.jpg").write_bytes(blank)
            total += n
            per_camera[f"cam{cam}"] += n
    exp = root / "exp"
    exp.mkdir(exist_ok=True)
    shutil.copyfile(perm_path, exp / "rand_perm_cam.mat")
    atomic_write_text(exp / "test_id.txt", _id_line(ids))
    arguments = {"rand_perm_from": str(perm_path), "num_test_ids": len(ids)}
    return _finish(root, "sysu-replica", len(ids), total, per_camera, arguments)
