"""Reduced-precision graphs (FP16, INT8 Q/DQ), calibration crops and embedding compression, on CPU.

Tolerances (worst per-image cosine of L2-normalised embeddings vs the FP32 graph, onnxruntime CPU):
FP16 >= 0.999 (measured 0.99999+: onnxruntime's CPU provider computes most FP16 nodes in FP32 via
inserted casts, so this checks the graph and the FP16 weight rounding, not FP16 arithmetic);
INT8 >= 0.99 (measured 0.9997 on these random inputs).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from engine_artifacts import (
    EMBEDDING_DIM,
    HEIGHT,
    WIDTH,
    TinyEngine,
    calibration_set,
    copy_artifact,
    images,
    tiny_fp16,
    tiny_int8,
    tiny_int8_cpu,
)

from common import Modality
from engines.calibration import CalibrationError, CalibrationSet, build_calibration_set, guess_modality
from engines.compression import CompressionError, compress_artifact, fit_pca
from engines.precision import (
    PrecisionError,
    compare_onnx,
    onnx_precision_summary,
    quantize_int8,
    verify_onnx_precision,
)
from engines.runtime import l2_normalize, load_embedder
from engines.sidecar import Preprocessing, load_sidecar

FP16_COSINE_FLOOR = 0.999
INT8_COSINE_FLOOR = 0.99


@pytest.fixture(scope="session")
def fp16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_fp16(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_int8(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def int8_cpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_int8_cpu(tmp_path_factory.getbasetemp())


# ---------------------------------------------------------------------------------------------- FP16


def test_fp16_graph_keeps_instance_norm_in_fp32(fp16: Path) -> None:
    model = onnx.load(str(fp16))
    onnx.checker.check_model(model, full_check=True)  # also: nodes are topologically sorted
    summary = onnx_precision_summary(fp16)
    assert summary["initializers"].get("FLOAT16", 0) > 20  # conv weights are FP16
    assert summary["instance_norm_input_types"] == ["FLOAT", "FLOAT"]
    assert summary["io_types"] == {"images": "FLOAT", "embeddings": "FLOAT"}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    for node in model.graph.node:
        if node.op_type == "InstanceNormalization":
            assert types[node.output[0]] == onnx.TensorProto.FLOAT
        if node.op_type == "Conv":
            assert types[node.output[0]] == onnx.TensorProto.FLOAT16
    sidecar = load_sidecar(fp16)
    assert sidecar.precision == "fp16"
    assert sidecar.source["conversion"]["fp32_ops"] == ["InstanceNormalization"]


def test_fp16_outputs_match_fp32_within_tolerance(engine: TinyEngine, fp16: Path) -> None:
    cosines = compare_onnx(engine.onnx, fp16, images(6, seed=21))
    assert cosines.min() >= FP16_COSINE_FLOOR
    with load_embedder(fp16) as embedder:
        assert embedder.embed(images(3)).shape == (3, EMBEDDING_DIM)


def test_precision_verification_rejects_the_wrong_graph(engine: TinyEngine, fp16: Path) -> None:
    verify_onnx_precision(engine.onnx, "fp32")
    with pytest.raises(PrecisionError, match="float16 weights"):
        verify_onnx_precision(engine.onnx, "fp16")
    with pytest.raises(PrecisionError, match="int8 QuantizeLinear"):
        verify_onnx_precision(fp16, "int8")
    with pytest.raises(PrecisionError, match="FP32 graph"):
        verify_onnx_precision(fp16, "fp32")


# ---------------------------------------------------------------------------------------------- INT8


def test_int8_qdq_graph_is_symmetric_and_keeps_mam_pam_in_float(int8: Path) -> None:
    model = onnx.load(str(int8))
    onnx.checker.check_model(model, full_check=True)
    summary = verify_onnx_precision(int8, "int8")
    assert summary["quantize_nodes"] > 10 and summary["quantized_activation_types"] == ["INT8"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [
        inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    ]
    assert zero_points and all(np.all(z == 0) for z in zero_points)  # symmetric, as TensorRT needs
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    float_convs = [
        n for n in model.graph.node if n.op_type == "Conv" and not any(i in dq_outputs for i in n.input)
    ]
    names = sorted(n.input[1] for n in float_convs)
    # MAM gates (2 convs each, 2 MAMs) and the PAM pattern conv stay in float; every other conv is int8.
    assert len(names) == 5 and all((".mam" in n or "pattern." in n) for n in names), names
    sidecar = load_sidecar(int8)
    assert sidecar.precision == "int8"
    conversion = sidecar.source["conversion"]
    assert conversion["calibration"]["per_modality"] == {"visible": 24, "infrared": 24}


def test_int8_runs_on_cpu_close_to_fp32(engine: TinyEngine, int8: Path) -> None:
    cosines = compare_onnx(engine.onnx, int8, images(8, seed=31))
    assert cosines.min() >= INT8_COSINE_FLOOR
    with load_embedder(int8) as embedder:
        out = embedder.embed(images(4))
    assert out.shape == (4, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_int8_cpu_graph_uses_uint8_activations_and_runs_close_to_fp32(
    engine: TinyEngine, int8_cpu: Path
) -> None:
    assert int8_cpu.name == "tiny.int8-cpu.onnx"
    summary = verify_onnx_precision(int8_cpu, "int8", int8_target="cpu")
    assert summary["quantized_activation_types"] == ["UINT8"]
    assert not summary["quantized_activations_symmetric"]  # zero points shift the uint8 range
    with pytest.raises(PrecisionError, match="TensorRT needs symmetric int8"):
        verify_onnx_precision(int8_cpu, "int8", int8_target="tensorrt")
    sidecar = load_sidecar(int8_cpu)
    assert sidecar.precision == "int8" and sidecar.source["conversion"]["target"] == "cpu"
    assert sidecar.engine_id != load_sidecar(engine.onnx).engine_id
    assert compare_onnx(engine.onnx, int8_cpu, images(8, seed=31)).min() >= INT8_COSINE_FLOOR


def test_int8_conversion_fails_loudly_on_drift_and_bad_calibration(
    engine: TinyEngine, tmp_path: Path
) -> None:
    target = tmp_path / "strict.int8.onnx"
    with pytest.raises(PrecisionError, match="drifts from FP32"):
        quantize_int8(engine.onnx, calibration_set(8), target, cosine_min=1.0001)
    assert not target.exists()
    wrong = calibration_set(4)
    wrong = type(wrong)(np.zeros((4, 3, HEIGHT * 2, WIDTH), np.float32), wrong.modalities, wrong.sources)
    with pytest.raises(PrecisionError, match="calibration images"):
        quantize_int8(engine.onnx, wrong, target)
    with pytest.raises(PrecisionError, match="method"):
        quantize_int8(engine.onnx, calibration_set(4), target, method="magic")
    with pytest.raises(PrecisionError, match="target"):
        quantize_int8(engine.onnx, calibration_set(4), target, target="tpu")


# ------------------------------------------------------------------------------------- calibration


def _write_crops(folder: Path, count: int, grey: bool, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        if grey:
            image = rng.integers(0, 256, (80, 40), dtype=np.uint8)
            if i % 2:  # SYSU stores infrared as 3 identical channels
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        else:
            image = rng.integers(0, 256, (80, 40, 3), dtype=np.uint8)
        path = folder / f"{i:03d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def test_calibration_set_is_balanced_over_modalities(tmp_path: Path) -> None:
    spec = Preprocessing(height=HEIGHT, width=WIDTH)
    visible = _write_crops(tmp_path / "visible", 12, grey=False, seed=1)
    infrared = _write_crops(tmp_path / "infrared", 12, grey=True, seed=2)
    guessed = build_calibration_set([(p, None) for p in visible + infrared], spec, count=10)
    assert guessed.counts() == {"visible": 5, "infrared": 5}
    assert guessed.images.shape == (10, 3, HEIGHT, WIDTH) and guessed.images.dtype == np.float32
    labelled = build_calibration_set(
        [(p, Modality.VISIBLE) for p in visible] + [(p, Modality.INFRARED) for p in infrared[:3]],
        spec,
        count=10,
    )
    assert labelled.counts() == {"visible": 7, "infrared": 3}  # topped up from the larger modality
    assert guess_modality(cv2.imread(str(infrared[1]))) is Modality.INFRARED
    assert guess_modality(cv2.imread(str(visible[0]))) is Modality.VISIBLE


def test_calibration_batches_are_of_one_size_topped_up_from_the_start() -> None:
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 3, 2, 2), np.float32)
    calibration = CalibrationSet(images, ("visible",) * 5 + ("infrared",) * 5, ("x",) * 10)
    batches = list(calibration.batches(4))
    assert [b.shape[0] for b in batches] == [4, 4, 4]  # histogram calibrators need one batch size
    assert [float(v) for v in batches[-1][:, 0, 0, 0]] == [8.0, 9.0, 0.0, 1.0]
    assert all(b.flags.c_contiguous for b in batches)
    assert [b.shape[0] for b in calibration.batches(64)] == [10]  # never larger than the set


def test_calibration_with_one_modality_is_refused(tmp_path: Path) -> None:
    visible = _write_crops(tmp_path / "visible", 6, grey=False, seed=3)
    with pytest.raises(CalibrationError, match="unbalanced"):
        build_calibration_set(
            [(p, None) for p in visible], Preprocessing(height=HEIGHT, width=WIDTH), count=6
        )
    with pytest.raises(CalibrationError, match="no calibration images"):
        build_calibration_set([], Preprocessing(height=HEIGHT, width=WIDTH))


# ------------------------------------------------------------------------------------- compression


def test_global_compression_keeps_the_global_part(engine: TinyEngine, tmp_path: Path) -> None:
    copy = copy_artifact(engine.onnx, tmp_path)
    variant = compress_artifact(copy, "global")
    assert variant.compression.kind == "global" and variant.compression.dim == 512
    assert variant.engine_id != load_sidecar(copy).engine_id
    x = images(3, seed=41)
    with load_embedder(copy) as full, load_embedder(tmp_path / variant.artifact) as small:
        expected = l2_normalize(full.embed(x)[:, -512:])
        np.testing.assert_allclose(small.embed(x), expected, atol=1e-6)
        assert small.embedding_dim == 512
    with pytest.raises(CompressionError, match="already compressed"):
        compress_artifact(tmp_path / variant.artifact, "global")


def test_pca_compression_is_fitted_stored_and_applied(engine: TinyEngine, tmp_path: Path) -> None:
    copy = copy_artifact(engine.onnx, tmp_path)
    with load_embedder(copy) as full:
        train = full.embed(images(40, seed=51))
        test = full.embed(images(5, seed=52))
    variant = compress_artifact(copy, "pca", dim=16, features=train, fit_info={"images": 40})
    mean, components, explained = fit_pca(train, 16)
    assert components.shape == (16, EMBEDDING_DIM) and 0 < explained <= 1
    np.testing.assert_allclose(components @ components.T, np.eye(16), atol=1e-4)  # orthonormal rows
    assert variant.compression.pca_sha256 and (tmp_path / variant.compression.pca_file).is_file()
    assert variant.source["compression_fit"]["explained_variance_ratio"] == pytest.approx(explained, rel=1e-5)
    with load_embedder(tmp_path / variant.artifact) as small:
        got = small.embed(images(5, seed=52))
    np.testing.assert_allclose(got, l2_normalize((test - mean) @ components.T), atol=1e-5)
    with pytest.raises(CompressionError, match="dim"):
        compress_artifact(copy, "pca", dim=100, features=train, output=tmp_path / "x.onnx")
