"""The engine's calibration: mpanet-calibrate on labelled material, and how every linker uses it."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA

from common.modality import Modality
from edge.linking.assignment import MatchingRules
from edge.linking.calibration import CalibrationConfig, calibrate_rules, load_calibration, resolve_thresholds
from engines.linking_thresholds import calibrate_thresholds

REAL = SHARED_DATA / "real"


def test_explicit_values_beat_the_calibration_which_beats_the_defaults():
    calibration = {
        "cosine_min_visible": 0.55,
        "cosine_min_infrared": 0.8,
        "cosine_min_cross": 0.25,
        "engine_id": "e",
    }
    rules, report = resolve_thresholds(MatchingRules(), calibration, "m.onnx.linking.json")
    assert (rules.cosine_min_visible, rules.cosine_min_infrared, rules.cosine_min_cross) == (0.55, 0.8, 0.25)
    assert report.calibrated and not report.warning and set(report.origin.values()) == {"calibration"}
    assert rules.same_threshold(Modality.INFRARED) == 0.8 and rules.cross_threshold == 0.25
    # cosine_min_same set explicitly covers both same-modality pairs; a per-modality value beats it.
    rules, report = resolve_thresholds(
        MatchingRules(cosine_min_same=0.6, cosine_min_infrared=0.7), calibration
    )
    assert (rules.cosine_min_visible, rules.cosine_min_infrared, rules.cosine_min_cross) == (0.6, 0.7, 0.25)
    assert report.origin == {
        "cosine_min_visible": "config",
        "cosine_min_infrared": "config",
        "cosine_min_cross": "calibration",
    }


def test_an_uncalibrated_linker_says_so_loudly(caplog):
    with caplog.at_level(logging.WARNING, logger="edge.linking"):
        rules, report = calibrate_rules(MatchingRules(), CalibrationConfig())
    assert not report.calibrated and "UNCALIBRATED" in report.warning
    assert "UNCALIBRATED" in caplog.text
    assert (rules.cosine_min_visible, rules.cosine_min_cross) == (0.5, 0.3)
    with pytest.raises(ValueError, match="calibration.require"):
        calibrate_rules(MatchingRules(), CalibrationConfig(require=True))
    # A calibration without infrared pairs: the infrared threshold is named as missing.
    _, report = resolve_thresholds(MatchingRules(), {"cosine_min_visible": 0.5, "cosine_min_cross": 0.4})
    assert not report.calibrated and "cosine_min_infrared" in report.warning
    assert report.check_engine("x") == ""


def test_a_malformed_calibration_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "m.onnx.linking.json"
    path.write_text(json.dumps({"cosine_min_cross": 7}))
    with pytest.raises(ValueError, match="m.onnx.linking.json: cosine_min_cross"):
        load_calibration(tmp_path / "m.onnx")
    assert load_calibration(tmp_path / "other.onnx") is None


def test_per_pair_thresholds_at_the_target_false_match_rate():
    rng = np.random.default_rng(0)
    people, dim = 40, 32
    base = rng.standard_normal((people, dim))
    shift = {"visible": rng.standard_normal(dim) * 0.8, "infrared": rng.standard_normal(dim) * 0.8}
    rows, pids, cams, mods = [], [], [], []
    for p in range(people):
        for cam, modality in ((0, "visible"), (1, "visible"), (2, "infrared"), (3, "infrared")):
            for _ in range(4):
                rows.append(base[p] + shift[modality] + 0.6 * rng.standard_normal(dim))
                pids.append(p), cams.append(cam), mods.append(modality)
    x = np.asarray(rows)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    result = calibrate_thresholds(x, pids, cams, mods, tracklet_size=4, fpr_max=0.05)
    for pair in ("visible-visible", "infrared-infrared", "visible-infrared"):
        entry = result["pairs"][pair]
        assert entry["fpr"] <= 0.06 and 0.5 < entry["auc"] <= 1.0
        assert entry["pairs"][0] > 0 and entry["pairs"][1] > entry["pairs"][0]
    assert result["cosine_min_visible"] == result["pairs"]["visible-visible"]["threshold"]
    assert result["cosine_min_cross"] < result["cosine_min_visible"]  # cross-modality cosines are lower
    assert result["target_fpr"] == 0.05


def osnet_engine(folder):
    """The real OSNet model with a sidecar of its own (input 256x128 RGB, ImageNet mean/std, 512-d)."""
    from engines.foreign import write_foreign_sidecar

    source = REAL / "models" / "osnet_x0_25_msmt17.onnx"
    if not source.is_file():
        pytest.skip("../shared/data/real/models/osnet_x0_25_msmt17.onnx is not here")
    model = folder / "osnet.onnx"
    shutil.copy(source, model)
    write_foreign_sidecar(model, 256, 128)  # what `mpanet-sidecar` does: graph facts, one checked run
    return model


def test_mpanet_calibrate_on_real_mot17_and_llvip_writes_json_and_png(tmp_path, capsys):
    from engines.cli.calibrate import main

    model = osnet_engine(tmp_path)
    if not (REAL / "mot17").is_dir() or not (REAL / "llvip").is_dir():
        pytest.skip("../shared/data/real/mot17 or llvip is not here")
    code = main(
        [
            str(model),
            "--data",
            str(REAL / "mot17"),
            "--data",
            str(REAL / "llvip"),
            "--frames",
            "1:2",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "visible-visible" in out and "infrared-infrared    not enough pairs" in out.replace(
        "  not", "    not"
    )
    data = json.loads((tmp_path / "osnet.onnx.linking.json").read_text())
    assert data["engine_id"] and "frames 1..2" in data["measured_on"]
    vv = data["pairs"]["visible-visible"]
    assert vv["pairs"][0] >= 20 and vv["auc"] > 0.9  # the same pedestrians in the next frame
    assert data["cosine_min_infrared"] is None  # visible-only MOT + LLVIP pairs: no infrared pairs
    assert (tmp_path / "osnet.onnx.linking.png").stat().st_size > 10_000
    rules, report = calibrate_rules(MatchingRules(), CalibrationConfig(engine=str(model)))
    assert rules.cosine_min_visible == pytest.approx(vv["threshold"])
    assert report.origin["cosine_min_infrared"] == "default" and not report.calibrated


def test_mpanet_calibrate_help_and_bad_input(tmp_path, capsys):
    from engines.cli.calibrate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--target-fpr" in capsys.readouterr().out
    (tmp_path / "nothing").mkdir()
    assert main([str(tmp_path / "m.onnx"), "--data", str(tmp_path / "nothing")]) == 2
    assert "error" in capsys.readouterr().err


def test_a_pair_the_engine_cannot_separate_is_not_linked_at_all():
    rng = np.random.default_rng(1)
    people, dim = 30, 16
    base = rng.standard_normal((people, dim))
    rows, pids, cams, mods = [], [], [], []
    for p in range(people):
        for cam, modality in ((0, "visible"), (1, "visible"), (2, "infrared")):
            # infrared rows carry nothing of the person: visible-infrared AUC ~0.5
            v = (
                base[p] + 0.3 * rng.standard_normal(dim)
                if modality == "visible"
                else rng.standard_normal(dim)
            )
            rows.append(v), pids.append(p), cams.append(cam), mods.append(modality)
    x = np.asarray(rows)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    result = calibrate_thresholds(x, pids, cams, mods, tracklet_size=1, fpr_max=0.1, min_auc=0.6)
    cross = result["pairs"]["visible-infrared"]
    assert cross["auc"] < 0.6 and not cross["usable"] and result["cosine_min_cross"] == 1.0
    assert result["pairs"]["visible-visible"]["usable"] and result["cosine_min_visible"] < 1.0
