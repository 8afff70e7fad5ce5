"""Synthetic VI-ReID data: renderer API and cues, determinism, layout writers, CLI, no torch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from common import Modality
from trainer.synthetic import PersonAppearance, render_person, sample_appearance
from trainer.synthetic.cli import main as synth_main
from trainer.synthetic.crops import SYSU_CAMERA_STYLES, render_crop
from trainer.synthetic.datasets import write_regdb, write_sysu
from trainer.synthetic.person import canvas_width

REPO_ROOT = Path(__file__).resolve().parents[1]


def _render(person: PersonAppearance, modality: Modality, facing: float = 0.0, seed: int = 0):
    return render_person(
        person, modality, height_px=96, walk_phase=0.7, facing=facing, rng=np.random.default_rng(seed)
    )


def test_synthetic_package_imports_without_torch():
    code = (
        "import sys, trainer.synthetic, trainer.synthetic.crops, trainer.synthetic.datasets, "
        "trainer.synthetic.cli; assert 'torch' not in sys.modules, 'torch imported'; "
        "assert not [m for m in sys.modules if m.startswith('trainer.data')], 'training code imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_appearance_is_deterministic_frozen_and_varied():
    a = sample_appearance(7, np.random.default_rng(1))
    assert a == sample_appearance(7, np.random.default_rng(1))
    assert a.pid == a.global_id == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.build = 2.0  # type: ignore[misc]
    people = [sample_appearance(i, np.random.default_rng(i)) for i in range(200)]
    for field in ("hair_style", "lower_garment", "bag", "hat", "shoes", "glasses", "backpack"):
        assert len({getattr(p, field) for p in people}) >= 2, field
    shape_keys = {
        (p.hair_style, p.lower_garment, p.bag, p.hat, p.backpack, p.glasses, p.shoes) for p in people
    }
    assert len(shape_keys) < len(people)  # discrete nuances alone do not identify everyone


def test_render_person_contract():
    person = sample_appearance(3, np.random.default_rng(3))
    for modality in Modality:
        rgb, alpha = _render(person, modality)
        assert rgb.shape == (96, canvas_width(96), 3) and rgb.dtype == np.uint8
        assert alpha.shape == (96, canvas_width(96)) and alpha.dtype == np.float32
        assert 0.0 <= alpha.min() and alpha.max() <= 1.0 and alpha.max() == pytest.approx(1.0)
        rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
        assert rows[0] <= 8 and rows[-1] >= 90  # the body spans the height
        if modality is Modality.INFRARED:
            np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
            np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    a1, _ = _render(person, Modality.VISIBLE, seed=5)
    a2, _ = _render(person, Modality.VISIBLE, seed=5)
    np.testing.assert_array_equal(a1, a2)
    front, _ = _render(person, Modality.VISIBLE, facing=0.0)
    side, _ = _render(person, Modality.VISIBLE, facing=math.pi / 2)
    assert not np.array_equal(front, side)


def test_colour_shows_only_in_visible_and_heat_only_in_infrared():
    person = sample_appearance(11, np.random.default_rng(11))
    recoloured = dataclasses.replace(person, top_rgb=(255 - person.top_rgb[0], 10, 200))
    warmer = dataclasses.replace(person, top_insulation=1.0 - person.top_insulation)
    assert not np.array_equal(_render(person, Modality.VISIBLE)[0], _render(recoloured, Modality.VISIBLE)[0])
    np.testing.assert_array_equal(
        _render(person, Modality.INFRARED)[0], _render(recoloured, Modality.INFRARED)[0]
    )
    assert not np.array_equal(_render(person, Modality.INFRARED)[0], _render(warmer, Modality.INFRARED)[0])
    np.testing.assert_array_equal(_render(person, Modality.VISIBLE)[0], _render(warmer, Modality.VISIBLE)[0])


@pytest.mark.parametrize(
    ("change", "facing"),
    [
        ({"backpack": True}, math.pi * 0.85),  # mostly from behind
        ({"hair_style": "long"}, math.pi * 0.85),
        ({"lower_garment": "shorts", "lower_length": 0.3}, 0.0),
        ({"sleeve_length": 0.0}, 0.3),
        ({"bag": "left", "bag_size": 1.3}, -math.pi / 2),  # the person's left side towards the camera
    ],
)
def test_shape_nuances_show_in_both_modalities(change: dict, facing: float):
    base = dataclasses.replace(
        sample_appearance(2, np.random.default_rng(2)),
        backpack=False,
        hair_style="short",
        lower_garment="trousers",
        lower_length=1.0,
        sleeve_length=1.0,
        bag="none",
        coat=False,
    )
    changed = dataclasses.replace(base, **change)
    for modality in Modality:
        images = []
        for person in (base, changed):
            rgb, alpha = _render(person, modality, facing)
            images.append(rgb * alpha[..., None] + 60.0 * (1.0 - alpha[..., None]))  # on a plain background
        changed_pixels = (np.abs(images[0] - images[1]).max(axis=-1) > 20).mean()
        assert changed_pixels > 0.01, (change, modality, changed_pixels)


def test_render_crop_size_and_modality_check():
    person = sample_appearance(1, np.random.default_rng(1))
    crop = render_crop(
        person,
        Modality.INFRARED,
        height=64,
        width=32,
        rng=np.random.default_rng(0),
        style=SYSU_CAMERA_STYLES[3],
    )
    assert crop.shape == (64, 32, 3) and crop.dtype == np.uint8
    with pytest.raises(ValueError, match="cam1"):
        render_crop(
            person,
            Modality.INFRARED,
            height=64,
            width=32,
            rng=np.random.default_rng(0),
            style=SYSU_CAMERA_STYLES[1],
        )


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "synthetic.json"):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_sysu_writer_is_deterministic_and_writes_the_official_structure(tmp_path: Path):
    args = dict(
        num_ids=6,
        images_per_camera=2,
        height=32,
        width=16,
        seed=9,
        num_test_ids=2,
        num_val_ids=1,
        progress=False,
    )
    one = write_sysu(tmp_path / "one", workers=1, **args)
    write_sysu(tmp_path / "two", workers=2, **args)
    assert _tree_digest(tmp_path / "one") == _tree_digest(tmp_path / "two")
    root = tmp_path / "one"
    ids = {name: (root / "exp" / f"{name}_id.txt").read_text().strip() for name in ("train", "val", "test")}
    parsed = {k: [int(x) for x in v.split(",")] for k, v in ids.items()}
    assert (len(parsed["test"]), len(parsed["val"]), len(parsed["train"])) == (2, 1, 3)
    assert sorted(sum(parsed.values(), [])) == list(range(1, 7))
    assert b"Created on" not in (root / "exp" / "rand_perm_cam.mat").read_bytes()[:116]  # no timestamp
    perm = scipy.io.loadmat(root / "exp" / "rand_perm_cam.mat")["rand_perm_cam"]
    assert perm.shape == (6, 1)
    for cam in range(1, 7):
        for pid in range(1, 7):
            entry = np.asarray(perm[cam - 1][0][pid - 1][0])
            count = len(list((root / f"cam{cam}" / f"{pid:04d}").glob("*.jpg")))
            assert entry.shape == (10, count)
            for row in entry:
                assert sorted(row.tolist()) == list(range(1, count + 1))
    summary = json.loads((root / "synthetic.json").read_text())
    assert summary["num_images"] == one.num_images == sum(one.images_per_camera.values())
    with pytest.raises(FileExistsError, match="not empty"):
        write_sysu(root, **args)


def test_cli_writes_regdb_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "regdb"
    code = synth_main(
        ["--layout", "regdb", "--out", str(out), "--ids", "4", "--images-per-camera", "2", "--height", "32",
         "--width", "16", "--seed", "1", "--workers", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 4 * 2 * 2
    assert len((out / "idx" / "train_visible_10.txt").read_text().splitlines()) == 2 * 2
    assert synth_main(["--layout", "regdb", "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert synth_main(["--layout", "regdb", "--out", str(tmp_path / "x"), "--replica-from", "a.mat"]) == 2


def test_regdb_writer_pairs_share_the_pose(tmp_path: Path):
    write_regdb(tmp_path / "r", num_ids=4, images_per_modality=1, height=64, width=32, seed=0, progress=False)
    from PIL import Image

    visible = np.asarray(
        Image.open(next((tmp_path / "r" / "Visible" / "1").iterdir())).convert("L"), dtype=float
    )
    thermal = np.asarray(Image.open(next((tmp_path / "r" / "Thermal" / "1").iterdir())), dtype=float)
    assert thermal.ndim == 2  # thermal stored single-channel
    # Same pose and placement: the person's silhouettes overlap, so the images correlate spatially.
    edges_v = np.abs(np.diff(visible, axis=1)).mean(axis=0)
    edges_t = np.abs(np.diff(thermal, axis=1)).mean(axis=0)
    assert np.corrcoef(edges_v, edges_t)[0, 1] > 0.3
