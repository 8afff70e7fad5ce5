"""``mpanet-sidecar``: a sidecar for any ONNX ReID model, checked by running it; OSNet end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from engines.cli.sidecar import main as sidecar_main  # noqa: E402
from engines.foreign import describe_onnx, inspect_onnx  # noqa: E402
from engines.runtime import load_embedder  # noqa: E402
from engines.sidecar import SidecarError, load_sidecar  # noqa: E402


def _tiny_model(
    path: Path, height: int | None = 32, width: int | None = 16, two_outputs: bool = False
) -> Path:
    """(N, 3, H, W) -> global average pool -> (N, 6) = [pooled, 2 * pooled] (and optionally the
    pooled (N, 3, 1, 1) map as a second output)."""
    image = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, height, width])
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 6])]
    if two_outputs:
        outputs.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 3, 1, 1]))
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Mul", ["flat", "two"], ["double"]),
        helper.make_node("Concat", ["flat", "double"], ["features"], axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny-reid", [image], outputs, initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_sidecar_for_a_foreign_model_reads_the_graph_and_runs_it(tmp_path: Path, capsys) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    code = sidecar_main(
        [str(model), "--input-size", "32x16", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    sidecar = load_sidecar(model)
    assert printed["engine_id"] == sidecar.engine_id == sidecar.compute_engine_id()
    assert (sidecar.input_name, sidecar.output_name, sidecar.output_dim) == ("pixels", "features", 6)
    assert (sidecar.preprocessing.height, sidecar.preprocessing.width) == (32, 16)
    assert sidecar.preprocessing.mean == (0.5, 0.5, 0.5) and sidecar.precision == "fp32"
    assert sidecar.normalized is False and sidecar.batch.max is None
    assert sidecar.source["created_by"] == "mpanet-sidecar"
    # The runtime uses it: a white crop -> normalised (1 - 0.5) / 0.25 = 2 per channel, then L2.
    embedding = load_embedder(model).embed_crops([np.full((64, 32, 3), 255, np.uint8)])
    assert np.allclose(embedding, np.array([[1, 1, 1, 2, 2, 2]]) / np.sqrt(15), atol=1e-5)
    # Other normalisation -> another engine id (embeddings of the two are not comparable).
    other = describe_onnx(model, 32, 16, mean=(0.4, 0.4, 0.4))
    assert other.engine_id != sidecar.engine_id


def test_sidecar_errors_name_what_is_wrong(tmp_path: Path, capsys) -> None:
    model = _tiny_model(tmp_path / "fixed.onnx")
    with pytest.raises(SidecarError, match=r"32x16 \(H x W\) but --input-size says 256x128"):
        describe_onnx(model, 256, 128)
    ambiguous = _tiny_model(tmp_path / "two.onnx", two_outputs=True)
    with pytest.raises(
        SidecarError, match=r"2 outputs \['features', 'pooled'\]; pick one with --output-name"
    ):
        describe_onnx(ambiguous, 32, 16)
    with pytest.raises(SidecarError, match=r"expected \(N, D\) embeddings"):
        describe_onnx(ambiguous, 32, 16, output_name="pooled")
    assert describe_onnx(ambiguous, 32, 16, output_name="features").output_dim == 6
    with pytest.raises(SidecarError, match="no output named 'emb'"):
        describe_onnx(ambiguous, 32, 16, output_name="emb")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(SidecarError, match="not a valid ONNX model"):
        inspect_onnx(broken)
    assert sidecar_main([str(broken), "--input-size", "32x16"]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "broken.onnx.json").exists()
    with pytest.raises(SystemExit):
        sidecar_main([str(model), "--input-size", "32by16"])


def test_dynamic_spatial_size_takes_the_given_size(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "dynamic.onnx", height=None, width=None)
    assert describe_onnx(model, 384, 128).preprocessing.height == 384


def test_osnet_end_to_end_through_mpanet_sidecar(shared_data: Path, tmp_path: Path, capsys) -> None:
    """The README's OSNet example: sidecar, engine id, and embeddings that tell people apart."""
    real = shared_data / "real" / "models" / "osnet_x0_25_msmt17.onnx"
    if not real.is_file():
        pytest.skip("OSNet model not in ../shared/data/real/models")
    model = tmp_path / "osnet_x0_25_msmt17.onnx"
    model.symlink_to(real)  # the sidecar goes beside it; the shared data stays untouched
    argv = [str(model), "--input-size", "256x128", "--mean", "0.485", "0.456", "0.406"]
    argv += ["--std", "0.229", "0.224", "0.225", "--output-name", "output", "--name", "osnet_x0_25_msmt17"]
    assert sidecar_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    sidecar = load_sidecar(model)
    assert printed["engine_id"] == sidecar.engine_id and len(sidecar.engine_id) == 16
    assert (sidecar.input_name, sidecar.output_dim, sidecar.precision) == ("images", 512, "fp32")
    assert sidecar_main(argv) == 0  # idempotent: same model, same settings, same id
    assert json.loads(capsys.readouterr().out)["engine_id"] == sidecar.engine_id
    mot = shared_data / "real" / "mot17" / "MOT17-09-FRCNN"
    if not mot.is_dir():
        return
    import cv2

    from common.annotations import read_mot_file
    from edge.crops import cut_crops
    from edge.detect.boxes import xywh_to_xyxy

    table = read_mot_file(mot / "gt" / "gt.txt")
    keep = (table.conf > 0) & (table.classes == 1) & (table.visibility >= 0.5) & (table.xywh[:, 3] >= 150)
    crops, ids = [], []
    for number in (1, 4):
        rows = keep & (table.frames == number)
        crops += cut_crops(
            cv2.imread(str(mot / "img1" / f"{number:06d}.jpg")), xywh_to_xyxy(table.xywh[rows])
        )
        ids += table.ids[rows].tolist()
    embeddings = load_embedder(model).embed_crops(crops, input_order="BGR")
    ids = np.asarray(ids)
    similarity = embeddings @ embeddings.T
    for i in range(len(ids)):
        same = (ids == ids[i]) & (np.arange(len(ids)) != i)
        if same.any() and (ids != ids[i]).any():
            assert similarity[i][same].max() > similarity[i][ids != ids[i]].max()
