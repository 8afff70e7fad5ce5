"""TensorRT: the build/run logic against a stand-in module on CPU, and real builds where TensorRT exists.

TensorRT cannot be installed in CI or on the lent GPU machines: the tests marked ``tensorrt`` skip
there with the reason. The rest exercise ``engines.tensorrt`` on CPU with ``fake_tensorrt`` (the
subset of the TensorRT 10/11 and cuda-python APIs it calls) and its pure helpers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_artifacts import (
    HEIGHT,
    WIDTH,
    TinyEngine,
    images,
    tiny_fp16,
    tiny_int8,
    tiny_int8_cpu,
)
from fake_tensorrt import fake_output, make_cudart, make_tensorrt

import engines.tensorrt as trt_module
from engines.precision import PrecisionError
from engines.runtime import load_embedder
from engines.sidecar import load_sidecar
from engines.tensorrt import (
    TensorRTBuildError,
    TensorRTUnavailable,
    build_engine,
    inspector_precisions,
    normalize_type_name,
)


@pytest.fixture(scope="session")
def fp16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_fp16(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_int8(tmp_path_factory.getbasetemp())


def _install_fakes(monkeypatch: pytest.MonkeyPatch, **options: object):
    fake = make_tensorrt(**options)
    cudart = make_cudart()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_module, "import_cudart", lambda: cudart)
    return fake, cudart


# ------------------------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Row major linear FP16 format", "fp16"),
        ("Half", "fp16"),
        ("DataType.HALF", "fp16"),
        ("Thirty-two wide channel vectorized row major Int8 format.", "int8"),
        ("Row major linear FP32", "fp32"),
        ("Float", "fp32"),
        ("BF16", "bf16"),
        ("INT64", "int64"),
        ("N/A due to dynamic shapes", None),
    ],
)
def test_type_names_of_tensorrt_10_and_11_are_normalised(text: str, expected: str | None) -> None:
    assert normalize_type_name(text) == expected


def test_inspector_json_of_both_schemas_is_counted() -> None:
    trt10 = {
        "Layers": [
            {
                "Name": "conv",
                "Inputs": [{"Format/Datatype": "Channel major FP16 format"}],
                "Outputs": [{"Format/Datatype": "Half"}],
            },
            {"Name": "norm", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
            "a layer name only (LAYER_NAMES_ONLY verbosity)",
        ],
        "Bindings": ["images", "embeddings"],
    }
    trt11 = {
        "Layers": [{"Name": "q", "Outputs": [{"DataType": "Int8", "Format": "kCHW32"}]}],
        "I/O Tensors": [{"Name": "images", "DataType": "Float"}],
    }
    assert inspector_precisions(json.dumps(trt10)) == {"fp16": 2, "fp32": 1}
    assert inspector_precisions(trt11) == {"int8": 1}
    assert inspector_precisions({"Layers": ["conv", "relu"]}) == {}


def test_precision_mismatch_is_refused_before_touching_tensorrt(
    fp16: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with pytest.raises(TensorRTBuildError, match="strongly typed"):
        build_engine(fp16, precision="int8")
    # The onnxruntime CPU INT8 graph (uint8 activations) is not what TensorRT's Q/DQ takes.
    with pytest.raises(PrecisionError, match="TensorRT needs symmetric int8"):
        build_engine(tiny_int8_cpu(tmp_path_factory.getbasetemp()))
    with pytest.raises(ValueError, match="min_batch"):
        build_engine(fp16, min_batch=4, opt_batch=2, max_batch=8)


def test_missing_tensorrt_is_a_clear_error(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; the missing-package path cannot be shown")
    except ImportError:
        pass
    with pytest.raises(TensorRTUnavailable, match="pip install"):
        trt_module.import_tensorrt()
    with pytest.raises(TensorRTUnavailable):
        build_engine(engine.onnx, tmp_path / "x.plan")
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version="8.6.1"))
    with pytest.raises(TensorRTUnavailable, match="not supported"):
        trt_module.import_tensorrt()


# ---------------------------------------------------------------------- build/run against the fake


@pytest.mark.parametrize("version", ["10.8.0", "11.0.0"])
def test_fp16_build_profile_cache_log_and_readback(
    fp16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    fake, _ = _install_fakes(monkeypatch, version=version)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"previous")
    result = build_engine(
        fp16, tmp_path / "m.plan", min_batch=1, opt_batch=4, max_batch=8, workspace_mib=64, timing_cache=cache
    )
    flags = dict(c[:2] for c in fake.calls if c[0] == "create_network")["create_network"]
    assert flags == (0 if version.startswith("11") else 1 << 5)  # STRONGLY_TYPED opt-in on 10.x only
    build_call = next(c for c in fake.calls if c[0] == "build")
    assert build_call[1] == 64 << 20 and fake.BuilderFlag.TF32 in build_call[2]
    sidecar = load_sidecar(result.plan)
    assert sidecar.format == "tensorrt" and sidecar.precision == "fp16"
    assert (sidecar.batch.min, sidecar.batch.opt, sidecar.batch.max) == (1, 4, 8)
    assert sidecar.source["onnx"]["engine_id"] == load_sidecar(fp16).engine_id
    assert sidecar.source["tensorrt_version"] == version and sidecar.source["gpu"]["name"] == "Fake GPU"
    assert result.io_types == {"images": "FLOAT", "embeddings": "FLOAT"}
    assert result.layer_precisions.get("fp16", 0) > 0 and result.network_types.get("fp16", 0) > 0
    assert cache.read_bytes().endswith(b"|updated")
    log = result.build_log.read_text()
    assert "fake build started" in log and "fake tactic timing" not in log  # VERBOSE only with verbose_log
    assert json.loads(result.layer_info.read_text())["Layers"]


def test_int8_build_checks_for_int8_layers(
    int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fakes(monkeypatch)
    result = build_engine(int8, tmp_path / "m.int8.plan", max_batch=4, opt_batch=2)
    assert result.sidecar.precision == "int8"
    assert result.layer_precisions.get("int8", 0) > 0 and result.network_types.get("int8", 0) > 0


def test_fp16_instance_norm_in_half_is_refused(
    fp16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fakes(monkeypatch, half_norm=True)
    with pytest.raises(TensorRTBuildError, match="instance normalisation"):
        build_engine(fp16, tmp_path / "m.plan")


def test_engine_without_type_information_is_refused(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fakes(monkeypatch, inspector_types=False)
    with pytest.raises(TensorRTBuildError, match="no layer types"):
        build_engine(engine.onnx, tmp_path / "m.plan")


def test_plan_runs_through_load_embedder_with_splitting_and_padding(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, cudart = _install_fakes(monkeypatch)
    result = build_engine(engine.onnx, tmp_path / "m.plan", min_batch=2, opt_batch=3, max_batch=4)
    x = images(7, seed=3)
    with load_embedder(result.plan) as embedder:  # device defaults to CUDA for plans
        assert embedder.backend == "tensorrt" and embedder.max_batch == 4
        out = embedder.embed(x)
        single = embedder.embed(x[:1])  # below the profile minimum: padded to 2
        empty = embedder.embed(np.zeros((0, 3, HEIGHT, WIDTH), np.float32))
    expected = fake_output(x, embedder.sidecar.output_dim)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single, expected[:1], rtol=1e-5, atol=1e-6)
    assert empty.shape == (0, embedder.sidecar.output_dim)
    assert [c[1] for c in fake.calls if c[0] == "execute"] == [4, 3, 2]
    assert cudart.live == {}  # every buffer freed on close


# ------------------------------------------------------------------------------ real TensorRT (GPU)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_fp16_plan_matches_onnxruntime(engine: TinyEngine, fp16: Path, tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (it cannot be in CI); see docs/engines.md"
    )
    try:
        trt_module.import_cudart()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    result = build_engine(fp16, tmp_path / "tiny.fp16.plan", max_batch=8, timing_cache=tmp_path / "cache")
    x = images(10, seed=99)
    with load_embedder(result.plan) as plan, load_embedder(engine.onnx) as reference:
        cosines = np.sum(plan.embed(x) * reference.embed(x), axis=1)
    assert cosines.min() >= 0.999
    assert result.layer_precisions.get("fp16", 0) > 0
