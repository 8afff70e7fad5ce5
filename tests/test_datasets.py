"""SYSU-MM01 / RegDB readers, image loading, transforms and the training Dataset (tiny synthetic sets)."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from common import Modality
from trainer.data import DatasetError, ImageReadError, load_image, regdb, sysu_mm01
from trainer.data.dataset import ReIDImageDataset, load_train_samples
from trainer.data.transforms import build_test_transform, build_train_transform, preprocess_test
from trainer.synthetic.datasets import write_regdb, write_sysu, write_sysu_replica


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sysu") / "SYSU-MM01"
    write_sysu(
        root, num_ids=10, images_per_camera=3, height=32, width=16, seed=3, num_test_ids=4, progress=False
    )
    return root


@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regdb") / "RegDB"
    write_regdb(root, num_ids=6, images_per_modality=2, height=32, width=16, seed=3, progress=False)
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / root.name
    shutil.copytree(root, target)
    return target


# --------------------------------------------------------------------------------------------- SYSU


def test_sysu_training_samples_are_train_plus_val_relabelled(sysu_root: Path):
    samples = load_train_samples(sysu_root, "sysu")
    ids = set(sysu_mm01.read_id_file(sysu_root / "exp" / "train_id.txt")) | set(
        sysu_mm01.read_id_file(sysu_root / "exp" / "val_id.txt")
    )
    assert {s.pid for s in samples} == ids
    assert sorted({s.label for s in samples}) == list(range(len(ids)))
    by_pid = {s.pid: s.label for s in samples}
    assert [by_pid[p] for p in sorted(by_pid)] == list(range(len(ids)))  # increasing-id order
    for sample in samples:
        assert sample.modality is (Modality.INFRARED if sample.camid in (3, 6) else Modality.VISIBLE)
        assert Path(sample.path).parent.name == f"{sample.pid:04d}"
        assert Path(sample.path).parent.parent.name == f"cam{sample.camid}"
    assert not {s.pid for s in samples} & set(sysu_mm01.read_id_file(sysu_root / "exp" / "test_id.txt"))


def test_sysu_query_is_every_infrared_test_image(sysu_root: Path):
    test_ids = set(sysu_mm01.read_id_file(sysu_root / "exp" / "test_id.txt"))
    expected = sorted(
        str(p)
        for c in (3, 6)
        for p in (sysu_root / f"cam{c}").glob("*/*.jpg")
        if int(p.parent.name) in test_ids
    )
    query, gallery = sysu_mm01.load_test_split(sysu_root, "all", 1, 0)
    assert sorted(s.path for s in query) == expected
    assert all(s.camid in (1, 2, 4, 5) and s.pid in test_ids for s in gallery)


def test_sysu_official_gallery_follows_rand_perm_rows(sysu_root: Path):
    perm = sysu_mm01.load_rand_perm(sysu_root / "exp" / "rand_perm_cam.mat")
    test_set = sysu_mm01.load_test_set(sysu_root)
    assert test_set.sampling == "official"
    for mode, cams in (("all", (1, 2, 4, 5)), ("indoor", (1, 2))):
        for shots in (1, 10):
            for trial in (0, 4, 9):
                gallery = test_set.gallery(mode, shots, trial)
                picked = sorted((s.camid, s.pid, int(Path(s.path).stem)) for s in gallery)
                expected = sorted(
                    (c, pid, int(n))
                    for (c, pid), rows in perm.picks.items()
                    if c in cams and pid in test_set.test_ids
                    for n in rows[trial, :shots]
                )
                assert picked == expected


def test_sysu_agw_sampling_reproduces_seeded_random_choice(sysu_root: Path, tmp_path: Path):
    root = _copy(sysu_root, tmp_path)
    (root / "exp" / "rand_perm_cam.mat").unlink()
    test_set = sysu_mm01.load_test_set(root)  # auto -> AGW without the file
    assert test_set.sampling == "agw"
    with pytest.raises(DatasetError, match="rand_perm_cam.mat"):
        sysu_mm01.load_test_set(root, gallery_sampling="official")
    ids = [f"{i:04d}" for i in sysu_mm01.read_id_file(root / "exp" / "test_id.txt")]
    for trial in (0, 1, 7):
        random.seed(trial)  # what the AGW baseline does, global RNG and all
        expected = []
        for pid in sorted(ids):
            for cam in ("cam1", "cam2", "cam4", "cam5"):
                folder = root / cam / pid
                if folder.is_dir():
                    expected.append(random.choice(sorted(str(p) for p in folder.iterdir())))
        assert sorted(s.path for s in test_set.gallery("all", 1, trial)) == sorted(expected)
    ten = test_set.gallery("indoor", 10, 2)
    assert len({s.path for s in ten}) == len(ten)
    assert test_set.gallery("all", 1, 3) == test_set.gallery("all", 1, 3)


def test_sysu_replica_protocol_counts(shared_data: Path, tmp_path: Path):
    perm_file = shared_data / "sysu_mm01_exp" / "rand_perm_cam.mat"
    if not perm_file.is_file():
        pytest.skip(f"{perm_file} not present")
    write_sysu_replica(tmp_path / "replica", perm_file, progress=False)
    test_set = sysu_mm01.load_test_set(tmp_path / "replica")
    assert test_set.sampling == "official"
    assert len(test_set.query) == 3803
    assert {s.camid for s in test_set.query} == {3, 6}
    official = scipy.io.loadmat(perm_file)["rand_perm_cam"]
    expected_counts = {("all", 1): 301, ("indoor", 1): 112, ("all", 10): 3010, ("indoor", 10): 1120}
    for (mode, shots), count in expected_counts.items():
        for trial in range(10):
            gallery = test_set.gallery(mode, shots, trial)
            assert len(gallery) == count, (mode, shots, trial)
            if shots == 10 and mode == "all" or trial in (0, 9):
                for sample in gallery[:: max(1, len(gallery) // 40)]:
                    row = np.asarray(official[sample.camid - 1][0][sample.pid - 1][0])[trial, :shots]
                    assert int(Path(sample.path).stem) in row.tolist()
    # Trial t picks exactly the images row t names (single-shot, every (camera, id) pair).
    for trial in (0, 5):
        picked = {(s.camid, s.pid): int(Path(s.path).stem) for s in test_set.gallery("all", 1, trial)}
        for (cam, pid), number in picked.items():
            assert number == int(official[cam - 1][0][pid - 1][0][trial, 0])


# -------------------------------------------------------------------------------------------- RegDB


def test_regdb_training_and_both_search_directions(regdb_root: Path):
    train = load_train_samples(regdb_root, "regdb", trial=2)
    assert len(train) == 3 * 2 * 2  # 3 ids x 2 images x 2 modalities
    assert sorted({s.label for s in train}) == [0, 1, 2]
    assert {s.camid for s in train if s.modality is Modality.VISIBLE} == {2}
    assert {s.camid for s in train if s.modality is Modality.INFRARED} == {3}
    v2t_q, v2t_g = regdb.load_test_split(regdb_root, 2, "visible_to_thermal")
    t2v_q, t2v_g = regdb.load_test_split(regdb_root, 2, "thermal_to_visible")
    assert all(s.modality is Modality.VISIBLE for s in v2t_q) and all(
        s.modality is Modality.INFRARED for s in v2t_g
    )
    assert t2v_q == v2t_g and t2v_g == v2t_q
    assert not {s.pid for s in train} & {s.pid for s in v2t_q}
    lines = (regdb_root / "idx" / "test_visible_2.txt").read_text().splitlines()
    assert [str(regdb_root / line.rsplit(" ", 1)[0]) for line in lines] == [s.path for s in v2t_q]


# ---------------------------------------------------------------------------------------- bad input


def test_missing_root_is_named(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=f"SYSU-MM01 root {missing} does not exist"):
        sysu_mm01.load_train_samples(missing)
    with pytest.raises(DatasetError, match=f"RegDB root {missing} does not exist"):
        regdb.load_train_samples(missing)


def test_missing_camera_folder_is_named(sysu_root: Path, tmp_path: Path):
    root = _copy(sysu_root, tmp_path)
    shutil.rmtree(root / "cam4")
    with pytest.raises(DatasetError, match="lacks camera folder\\(s\\) cam4"):
        sysu_mm01.load_test_split(root, "all", 1, 0)


def test_missing_split_files_are_named(sysu_root: Path, regdb_root: Path, tmp_path: Path):
    root = _copy(sysu_root, tmp_path)
    (root / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetError, match=f"split file {root / 'exp' / 'val_id.txt'} does not exist"):
        sysu_mm01.load_train_samples(root)
    rroot = _copy(regdb_root, tmp_path)
    (rroot / "idx" / "test_thermal_3.txt").unlink()
    with pytest.raises(DatasetError, match="test_thermal_3.txt does not exist"):
        regdb.load_test_split(rroot, 3)
    shutil.rmtree(rroot / "Thermal")
    with pytest.raises(DatasetError, match="lacks folder\\(s\\) Thermal"):
        regdb.load_train_samples(rroot, 1)


def test_malformed_split_files_are_named(sysu_root: Path, regdb_root: Path, tmp_path: Path):
    root = _copy(sysu_root, tmp_path)
    (root / "exp" / "train_id.txt").write_text("1,2,x3\n")
    with pytest.raises(DatasetError, match="'x3' is not an integer id"):
        sysu_mm01.load_train_samples(root)
    rroot = _copy(regdb_root, tmp_path)
    split = rroot / "idx" / "train_visible_1.txt"
    split.write_text(split.read_text() + "Visible/1/oops.bmp notalabel\n")
    with pytest.raises(DatasetError, match="train_visible_1.txt:\\d+: label 'notalabel' is not an integer"):
        regdb.load_train_samples(rroot, 1)


def test_id_without_images_is_named(sysu_root: Path, regdb_root: Path, tmp_path: Path):
    root = _copy(sysu_root, tmp_path)
    train = root / "exp" / "train_id.txt"
    train.write_text(train.read_text().strip() + ",999\n")
    with pytest.raises(DatasetError, match="id 999 listed in .*train_id.txt.* has no images.*cam1/0999"):
        sysu_mm01.load_train_samples(root)
    rroot = _copy(regdb_root, tmp_path)
    split = rroot / "idx" / "test_thermal_1.txt"
    split.write_text(split.read_text() + "Thermal/77/missing.bmp 77\n")
    with pytest.raises(DatasetError, match=f"image {rroot / 'Thermal/77/missing.bmp'} does not exist"):
        regdb.load_test_split(rroot, 1)


def test_corrupt_image_errors_by_default_and_is_skipped_and_counted_when_asked(
    sysu_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root = _copy(sysu_root, tmp_path)
    samples = sysu_mm01.load_train_samples(root)
    broken = Path(samples[3].path)
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    dataset = ReIDImageDataset(samples, build_test_transform(32, 16))
    with pytest.raises(ImageReadError, match=f"image file {broken} cannot be decoded"):
        dataset[3]
    with caplog.at_level(logging.WARNING):
        kept = sysu_mm01.load_train_samples(root, on_corrupt="skip")
    assert len(kept) == len(samples) - 1 and str(broken) not in {s.path for s in kept}
    assert "skipped 1 unreadable image(s)" in caplog.text and str(broken) in caplog.text
    test_set = sysu_mm01.load_test_set(root, on_corrupt="skip")  # a broken train image: test set unaffected
    assert not test_set.skipped
    with pytest.raises(ImageReadError, match="does not exist"):
        load_image(tmp_path / "absent.jpg")


# ----------------------------------------------------------------------------- images, transforms


def test_images_always_load_as_three_channel_rgb(tmp_path: Path):
    grey = np.arange(32 * 16, dtype=np.uint8).reshape(32, 16)
    Image.fromarray(grey).save(tmp_path / "ir.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "ir16.png")
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 7)])).save(tmp_path / "rgba.png")
    for name in ("ir.png", "ir16.png", "rgba.png"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (16, 32)
        array = np.asarray(image)
        np.testing.assert_array_equal(array[..., 0], grey)
        np.testing.assert_array_equal(array[..., 1], array[..., 2])


def test_synthetic_infrared_files_are_single_channel_and_load_as_rgb(sysu_root: Path):
    ir_file = next((sysu_root / "cam3").glob("*/*.jpg"))
    with Image.open(ir_file) as stored:
        assert stored.mode == "L"
    assert load_image(ir_file).mode == "RGB"


def test_train_and_test_transforms():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (50, 23, 3), dtype=np.uint8))
    train = build_train_transform(32, 16, erasing_p=1.0)
    out = train(image)
    assert out.shape == (3, 32, 16) and out.dtype.__str__() == "torch.float32"
    assert (out == 0).all(dim=0).any()  # random erasing writes 0 in normalised space
    test = build_test_transform(32, 16)
    a, b = test(image).numpy(), test(image).numpy()
    np.testing.assert_array_equal(a, b)  # no randomness (no flip) at test time
    np.testing.assert_allclose(preprocess_test(image, 32, 16), a, atol=1e-5)


def test_reid_dataset_items(sysu_root: Path):
    samples = load_train_samples(sysu_root, "sysu")
    dataset = ReIDImageDataset(samples, build_train_transform(32, 16))
    image, label, flag, camid = dataset[0]
    assert image.shape == (3, 32, 16)
    assert label.dtype == flag.dtype == camid.dtype and str(label.dtype) == "torch.int64"
    assert (
        int(label) == samples[0].label
        and int(flag) == samples[0].modality.flag
        and int(camid) == samples[0].camid
    )
    with pytest.raises(TypeError, match="LabelledSample"):
        ReIDImageDataset(sysu_mm01.load_test_set(sysu_root).query, build_train_transform(32, 16))
