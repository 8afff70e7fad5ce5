"""Checkpoint -> ONNX export: parity at batch 1/7/32, dynamic batch, graph checks, sidecar content."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from engine_artifacts import EMBEDDING_DIM, HEIGHT, WIDTH, TinyEngine, copy_artifact, images

from common.files import sha256_file
from engines.export import ExportError, export_model, export_onnx
from engines.runtime import l2_normalize
from engines.sidecar import EngineSidecar, SidecarError, load_sidecar, sidecar_path


def test_parity_at_batch_1_7_32_is_recorded_and_above_threshold(engine: TinyEngine) -> None:
    parity = load_sidecar(engine.onnx).source["parity"]
    assert parity["batch_sizes"] == [1, 7, 32]
    assert parity["threshold"] == 0.9999
    assert parity["cosine_min"] >= 0.9999
    assert set(parity["cosine_min_per_batch"]) == {"1", "7", "32"}


def test_batch_axis_is_dynamic_and_matches_torch(engine: TinyEngine) -> None:
    import torch

    from trainer.checkpoint import load_model

    model, _ = load_model(engine.checkpoint)
    session = ort.InferenceSession(str(engine.onnx), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 32):
        x = images(batch, seed=batch)
        (got,) = session.run(["embeddings"], {"images": x})
        assert got.shape == (batch, EMBEDDING_DIM)
        with torch.no_grad():
            expected = model.embed(torch.from_numpy(x)).numpy()
        cosine = np.sum(l2_normalize(got) * l2_normalize(expected), axis=1)
        assert cosine.min() >= 0.9999


def test_graph_is_checked_single_file_named_io_with_instance_norms(engine: TinyEngine) -> None:
    model = onnx.load(str(engine.onnx))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["embeddings"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, HEIGHT, WIDTH]
    # One InstanceNormalization per MAM (after layer3 and layer4): the FP16 conversion keeps them FP32.
    assert sum(n.op_type == "InstanceNormalization" for n in model.graph.node) == 2


def test_sidecar_describes_the_artifact(engine: TinyEngine) -> None:
    sidecar = load_sidecar(engine.onnx)
    raw = json.loads(sidecar_path(engine.onnx).read_text())
    assert sidecar.format == "onnx" and sidecar.precision == "fp32"
    assert sidecar.input_name == "images" and sidecar.output_name == "embeddings"
    assert (sidecar.preprocessing.height, sidecar.preprocessing.width) == (HEIGHT, WIDTH)
    assert sidecar.preprocessing.channel_order == "RGB"
    assert sidecar.preprocessing.mean == (0.485, 0.456, 0.406)
    assert sidecar.preprocessing.std == (0.229, 0.224, 0.225)
    assert sidecar.preprocessing.infrared_to_3ch == "replicate"
    assert sidecar.output_dim == EMBEDDING_DIM and sidecar.normalized is False
    assert sidecar.batch.min == 1 and sidecar.batch.max is None
    assert sidecar.artifact_sha256 == sha256_file(engine.onnx)
    assert sidecar.checkpoint_sha256 == sha256_file(engine.checkpoint)
    assert sidecar.model_config["arch"] == "resnet18" and sidecar.model_config["height"] == HEIGHT
    assert re.fullmatch(r"[0-9a-f]{16}", sidecar.engine_id)
    assert raw["engine_id"] == sidecar.engine_id == sidecar.compute_engine_id()


def test_engine_id_changes_with_content_and_edits_are_detected(engine: TinyEngine, tmp_path: Path) -> None:
    sidecar = load_sidecar(engine.onnx)
    for change in (
        {"precision": "fp16"},
        {"output_dim": EMBEDDING_DIM + 1},
        {"artifact_sha256": "0" * 64},
        {"preprocessing": dataclasses.replace(sidecar.preprocessing, height=HEIGHT * 2)},
    ):
        assert dataclasses.replace(sidecar, engine_id="", **change).engine_id != sidecar.engine_id
    copy = copy_artifact(engine.onnx, tmp_path)
    data = json.loads(sidecar_path(copy).read_text())
    data["output_dim"] = 512  # edited by hand: the stored engine_id no longer matches
    sidecar_path(copy).write_text(json.dumps(data))
    with pytest.raises(SidecarError, match="engine_id"):
        load_sidecar(copy)
    assert isinstance(
        EngineSidecar.from_dict(json.loads(sidecar_path(engine.onnx).read_text())), EngineSidecar
    )


def test_failed_parity_is_loud_and_leaves_nothing(engine: TinyEngine, tmp_path: Path) -> None:
    target = tmp_path / "out.onnx"
    # No real graph can reach a cosine above 1: the parity check must refuse the export.
    with pytest.raises(ExportError, match="parity failed"):
        export_onnx(engine.checkpoint, target, parity_batch_sizes=(2,), cosine_min=1.0001)
    assert list(tmp_path.iterdir()) == []


def test_training_mode_and_bad_sizes_are_refused(engine: TinyEngine, tmp_path: Path) -> None:
    from trainer.checkpoint import load_model

    model, _ = load_model(engine.checkpoint)
    model.neck.train()
    with pytest.raises(ExportError, match="eval mode"):
        export_model(model, tmp_path / "x.onnx")
    model.eval()
    with pytest.raises(ExportError, match="input size"):
        export_model(model, tmp_path / "x.onnx", height=100)
    with pytest.raises(ExportError, match="opset"):
        export_model(model, tmp_path / "x.onnx", opset=13)
    assert not (tmp_path / "x.onnx").exists()
