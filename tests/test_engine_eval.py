"""Engine-in-the-loop accuracy: ``mpanet-eval`` runs the SYSU-MM01 protocols through the runtime."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from engine_artifacts import TinyEngine, copy_artifact

from engines.cli.evaluate import main as eval_main
from engines.sidecar import load_sidecar, save_sidecar


@pytest.fixture(scope="module")
def synthetic_sysu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.synthetic.datasets import write_sysu

    root = tmp_path_factory.mktemp("synthetic-sysu")
    write_sysu(
        root,
        num_ids=12,
        images_per_camera=2,
        height=128,
        width=64,
        num_test_ids=6,
        progress=False,
        overwrite=True,
    )
    return root


def test_checkpoint_and_all_variants_in_one_table(
    engine: TinyEngine, synthetic_sysu: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    # The FP32 export of this checkpoint already exists: mpanet-eval reuses it (checkpoint sha256 matches).
    target = out / "engines" / "mpanet.onnx"
    copy_artifact(engine.onnx, out / "engines").rename(target)
    (out / "engines" / "tiny.onnx.json").unlink()
    save_sidecar(dataclasses.replace(load_sidecar(engine.onnx), artifact=target.name), target)
    code = eval_main(
        [
            "--checkpoint",
            str(engine.checkpoint),
            "--variants",
            "--compression",
            "global",
            "--compression",
            "pca:8",
            "--calibration-count",
            "24",
            "--pca-fit-count",
            "40",
            "--trials",
            "2",
            "--threads",
            "2",
            "--output",
            str(out),
            "--no-progress",
            "data.dataset=sysu",
            f"data.root={synthetic_sysu}",
            "data.test_batch_size=16",
        ]
    )
    assert code == 0
    rows = json.loads((out / "comparison.json").read_text())
    labels = [r["label"] for r in rows]
    assert labels == [
        "tiny.pt",
        "mpanet.onnx",
        "mpanet.fp16.onnx",
        "mpanet.int8.onnx",
        "mpanet.int8-cpu.onnx",
        "mpanet.global512.onnx",
        "mpanet.pca8.onnx",
    ]
    by_label = {r["label"]: r for r in rows}
    assert [r["precision"] for r in rows[:5]] == ["fp32", "fp32", "fp16", "int8", "int8"]
    assert by_label["tiny.pt"]["backend"] == "torch" and by_label["mpanet.onnx"]["backend"] == "onnxruntime"
    # The same network through torch and onnxruntime: same embeddings, same accuracy.
    assert by_label["mpanet.onnx"]["cosine_vs_reference"][1] >= 0.9999
    for metric, value in by_label["tiny.pt"]["metrics_percent"].items():
        assert by_label["mpanet.onnx"]["metrics_percent"][metric] == pytest.approx(value, abs=1e-6)
    assert by_label["mpanet.fp16.onnx"]["cosine_vs_reference"][1] >= 0.999
    assert by_label["mpanet.int8.onnx"]["cosine_vs_reference"][1] >= 0.99
    assert by_label["mpanet.int8-cpu.onnx"]["cosine_vs_reference"][1] >= 0.99
    assert by_label["mpanet.global512.onnx"]["embedding_dim"] == 512
    assert by_label["mpanet.pca8.onnx"]["cosine_vs_reference"] is None  # another embedding space
    protocols = by_label["mpanet.int8.onnx"]["results"]["protocols"]
    assert set(protocols) == {"all_1shot", "all_10shot", "indoor_1shot", "indoor_10shot"}
    assert protocols["all_1shot"]["num_trials"] == 2
    assert len({r["engine_id"] for r in rows}) == len(rows)
    table = (out / "comparison.md").read_text()
    assert "all_1shot/rank1" in table and "mpanet.int8.onnx" in table
    assert (out / "config.yaml").is_file()


def test_engine_only_and_bad_arguments(engine: TinyEngine, synthetic_sysu: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["--output", str(out), "--no-progress", "--trials", "1", f"data.root={synthetic_sysu}"]
    assert eval_main(["--engine", str(engine.onnx), *args]) == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["label"] for r in rows] == ["tiny.onnx"] and rows[0]["cosine_vs_reference"] is None
    assert (
        eval_main(["--variants", "--engine", str(engine.onnx), *args]) == 2
    )  # --variants needs --checkpoint
    assert eval_main(["--output", str(out), "--engine", str(engine.onnx)]) == 2  # data.root unset
