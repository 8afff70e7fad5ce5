"""TensorRT: the build/run logic against a stand-in module on CPU, and real builds where TensorRT exists.

TensorRT cannot be installed in CI or on the lent GPU machines: the tests marked ``tensorrt`` skip
there with the reason. The rest exercise ``engines.tensorrt`` on CPU with ``fake_tensorrt`` (the
subset of the TensorRT 10/11 and cuda-python APIs it calls) and its pure helpers.
"""

from __future__ import annotations

import json
import sys
import threading
import warnings
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
from fake_tensorrt import CACHE_MAGIC, fake_output, make_cudart, make_tensorrt

import engines.tensorrt as trt_module
from engines.precision import PrecisionError
from engines.runtime import load_embedder
from engines.sidecar import load_sidecar
from engines.tensorrt import (
    TensorRTBuildError,
    TensorRTRuntimeError,
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


def _install_fakes(
    monkeypatch: pytest.MonkeyPatch, *, cuda: dict[str, object] | None = None, **options: object
):
    """The fake ``tensorrt`` and cuda-python in ``sys.modules`` (the real import paths run)."""
    cudart, modules = make_cudart(**(cuda or {}))
    fake = make_tensorrt(cudart=cudart, **options)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trt_module, "tensorrt_cuda_major", lambda: None)
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
    cache.write_bytes(CACHE_MAGIC + b"previous")
    result = build_engine(
        fp16, tmp_path / "m.plan", min_batch=1, opt_batch=4, max_batch=8, workspace_mib=64, timing_cache=cache
    )
    flags = dict(c[:2] for c in fake.calls if c[0] == "create_network")["create_network"]
    # STRONGLY_TYPED (1 in 10.x) opt-in on 10.x only
    assert flags == (0 if version.startswith("11") else 1 << 1)
    parse_flags = next(c[2] for c in fake.calls if c[0] == "parse_from_file")
    assert parse_flags & (1 << fake.OnnxParserFlag.NATIVE_INSTANCENORM)
    build_call = next(c for c in fake.calls if c[0] == "build")
    assert build_call[1] == 64 << 20 and fake.BuilderFlag.TF32 in build_call[2]
    sidecar = load_sidecar(result.plan)
    assert sidecar.format == "tensorrt" and sidecar.precision == "fp16"
    assert (sidecar.batch.min, sidecar.batch.opt, sidecar.batch.max) == (1, 4, 8)
    assert sidecar.source["onnx"]["engine_id"] == load_sidecar(fp16).engine_id
    assert sidecar.source["tensorrt_version"] == version and sidecar.source["gpu"]["name"] == "Fake GPU"
    assert result.io_types == {"images": "FLOAT", "embeddings": "FLOAT"}
    assert result.layer_precisions.get("fp16", 0) > 0 and result.network_types.get("fp16", 0) > 0
    assert cache.read_bytes() == CACHE_MAGIC + b"previous|updated"  # the old entries were loaded
    assert result.timing_cache == cache and result.log_errors == ()
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


def test_stand_in_uses_the_real_tensorrt_10_enum_values() -> None:
    # NvInfer.h / NvOnnxParser.h of TensorRT 10.x: a fake with other numbers would let wrong flag
    # arithmetic pass (the old stand-in had STRONGLY_TYPED = 5).
    fake = make_tensorrt()
    assert fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED == 1
    assert fake.OnnxParserFlag.NATIVE_INSTANCENORM == 0
    assert fake.BuilderFlag.TF32 == 6 and fake.BuilderFlag.FP16 == 0
    assert fake.LayerType.NORMALIZATION == 45 and fake.LayerType.PLUGIN_V2 == 21
    assert fake.DataType.HALF == 1 and fake.DataType.INT64 == 8
    cudart, _ = make_cudart()
    assert (
        cudart.cudaError_t.cudaErrorNoDevice == 100 and cudart.cudaError_t.cudaErrorInsufficientDriver == 35
    )


# ------------------------------------------------------------------- devices, drivers, cuda-python


@pytest.mark.parametrize(
    ("cuda", "device", "message"),
    [
        ({"driver_version": 0}, 0, "no NVIDIA driver is loaded"),
        ({"devices": 0}, 0, "no usable GPU: cudaSetDevice.*no CUDA-capable device"),
        ({"devices": 1}, 3, "no usable GPU: cudaSetDevice\\(3\\).*invalid device ordinal"),
        # cuda-bindings 13 on a CUDA 12.4 driver (R550): the cu12 extra is the fix.
        ({"version": "13.0.2", "driver_version": 12040}, 0, "needs driver >= 580.*CUDA 12.4.*tensorrt-cu12"),
    ],
)
def test_missing_gpu_or_old_driver_is_unavailable_not_a_cuda_error(
    engine: TinyEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cuda: dict[str, object],
    device: int,
    message: str,
) -> None:
    _install_fakes(monkeypatch, cuda=cuda)
    with pytest.raises(TensorRTUnavailable, match=message):
        build_engine(engine.onnx, tmp_path / "m.plan", device=device)
    assert not (tmp_path / "m.plan").exists()


def test_tensorrt_wheel_for_cuda_13_on_a_cuda_12_driver_is_unavailable(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fakes(monkeypatch, cuda={"version": "12.9.0", "driver_version": 12080})
    monkeypatch.setattr(trt_module, "tensorrt_cuda_major", lambda: 13)
    with pytest.raises(TensorRTUnavailable, match=r"tensorrt-cu13\) is built for CUDA 13.*CUDA 12.8"):
        build_engine(engine.onnx, tmp_path / "m.plan")
    # The same driver runs the cu12 wheel.
    monkeypatch.setattr(trt_module, "tensorrt_cuda_major", lambda: 12)
    assert build_engine(engine.onnx, tmp_path / "m.plan").plan.is_file()


def test_real_cuda_bindings_on_a_machine_without_driver_is_unavailable() -> None:
    """The real cuda-bindings (a torch dependency here), no GPU: what CI and this machine are."""
    runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    err, version = runtime.cudaDriverGetVersion()
    if version:
        pytest.skip(f"an NVIDIA driver is loaded here (CUDA {version}); the no-driver path cannot be shown")
    with pytest.raises(TensorRTUnavailable, match="no NVIDIA driver"):
        trt_module.open_device(runtime, 0)


def test_cli_without_gpu_prints_one_line_and_exits_3(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engines.cli.build_engine import main

    _install_fakes(monkeypatch, cuda={"devices": 0})
    assert main([str(engine.onnx), "-o", str(tmp_path / "m.plan")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mpanet-build-engine: no usable GPU")
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- failures on the way


def test_parse_errors_name_the_node(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fakes(monkeypatch, fail={"parse"})
    with pytest.raises(
        TensorRTBuildError, match=r"could not parse .*fake unsupported attribute \(node=1, node_name="
    ):
        build_engine(engine.onnx, tmp_path / "m.plan")


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        ({"profile"}, "rejected the optimization profile images batch 1/8/32"),
        ({"build"}, "returned no plan .*fake: could not find any implementation"),
        ({"context"}, "could not create an execution context .*device memory is short"),
        ({"input_shape"}, r"rejects input shape \(8, 3, 128, 64\)"),
        ({"timing_cache"}, "could not create an empty timing cache"),
    ],
)
def test_unchecked_results_of_the_old_code_now_fail_the_build(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: set[str], message: str
) -> None:
    _install_fakes(monkeypatch, fail=fail)
    with pytest.raises(TensorRTBuildError, match=message):
        build_engine(engine.onnx, tmp_path / "m.plan", timing_cache=tmp_path / "cache")
    assert not (tmp_path / "m.plan.json").exists()  # no sidecar for a plan that failed its checks


@pytest.mark.parametrize(
    ("content", "fail", "note"),
    [
        (b"\x00garbage, not a cache", (), "is unreadable"),
        (CACHE_MAGIC + b"other-gpu", {"timing_cache_mismatch"}, "does not match this GPU"),
    ],
)
def test_corrupt_or_foreign_timing_cache_is_replaced(
    engine: TinyEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
    fail: set[str],
    note: str,
) -> None:
    fake, _ = _install_fakes(monkeypatch, fail=fail)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(content)
    result = build_engine(engine.onnx, tmp_path / "m.plan", timing_cache=cache)
    assert cache.read_bytes() == CACHE_MAGIC + b"|updated"  # a fresh cache, saved
    assert [c[1] for c in fake.calls if c[0] == "set_timing_cache"][-1] == b""
    assert note in result.build_log.read_text()


def test_no_timing_cache_to_save_keeps_the_plan(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fakes(monkeypatch, fail={"timing_cache_serialize"})
    result = build_engine(engine.onnx, tmp_path / "m.plan", timing_cache=tmp_path / "cache")
    assert result.plan.is_file() and result.timing_cache is None and not (tmp_path / "cache").exists()
    assert load_sidecar(result.plan).source["timing_cache"] is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"instancenorm": "plugin"}, "was imported as a plugin layer"),
        ({"instancenorm": "decomposed"}, "only 0 native normalisation layers"),
    ],
)
def test_fp16_instance_norm_that_cannot_be_checked_is_refused(
    engine: TinyEngine,
    fp16: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, object],
    message: str,
) -> None:
    _install_fakes(monkeypatch, **options)
    with pytest.raises(TensorRTBuildError, match=message):
        build_engine(fp16, tmp_path / "m.plan")
    # An FP32 plan has nothing to keep in FP32: a plugin instance norm is no reason to refuse it.
    assert build_engine(engine.onnx, tmp_path / "m32.plan").plan.is_file()


def test_native_instancenorm_is_set_where_the_parser_defaults_to_the_plugin(
    fp16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = _install_fakes(monkeypatch, native_instancenorm_default=False)
    result = build_engine(fp16, tmp_path / "m.plan")
    assert next(c[2] for c in fake.calls if c[0] == "parse_from_file") == 1 << 0
    assert result.network_types.get("fp32", 0) > 0  # the normalisations, native and FP32


# ------------------------------------------------------------------------------------ the runner


@pytest.mark.parametrize("legacy", [False, True])
def test_runner_passes_the_native_stream_handle_without_int(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    # cuda-bindings 13 deprecates int(stream); older ones have no get_cuda_native_handle.
    version = "12.6.2" if legacy else "13.0.2"
    driver = 12060 if legacy else 13000
    fake, cudart = _install_fakes(
        monkeypatch, cuda={"legacy": legacy, "version": version, "driver_version": driver}
    )
    result = build_engine(engine.onnx, tmp_path / "m.plan", max_batch=4, opt_batch=2)
    x = images(3, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with load_embedder(result.plan) as embedder:
            out = embedder.embed(x)
    expected = fake_output(x, embedder.sidecar.output_dim)
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-5)
    assert cudart.stream_devices == {}  # destroyed on close
    if not legacy:
        stream = cudart.cudaStream_t(1)
        with pytest.warns(DeprecationWarning):
            int(stream)  # what the stand-in does to the old code


def test_runner_sets_its_device_in_the_thread_that_runs(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, cudart = _install_fakes(monkeypatch, cuda={"devices": 2})
    result = build_engine(engine.onnx, tmp_path / "m.plan", max_batch=4, opt_batch=2, device=1)
    x = images(2, seed=8)
    outputs: list[np.ndarray] = []
    errors: list[BaseException] = []
    with load_embedder(result.plan, device="cuda:1") as embedder:

        def work() -> None:
            try:
                outputs.append(embedder.embed(x))
            except BaseException as exc:  # reported below, with the thread's traceback gone
                errors.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join(timeout=60)
        worker_id = worker.ident
    assert not errors and len(outputs) == 1
    assert (worker_id, 1) in cudart.set_device_calls  # the worker made device 1 current itself
    assert not [c for c in fake.calls if c[0] == "execute_failed"]


def test_runner_reports_a_missing_context_and_a_rejected_shape(
    engine: TinyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fakes(monkeypatch)
    plan = build_engine(engine.onnx, tmp_path / "m.plan", max_batch=4, opt_batch=2).plan
    _install_fakes(monkeypatch, fail={"context"})
    with pytest.raises(TensorRTRuntimeError, match="could not create an execution context .*device 0"):
        load_embedder(plan)
    _, cudart = _install_fakes(monkeypatch, fail={"input_shape"})
    with load_embedder(plan) as embedder, pytest.raises(TensorRTRuntimeError, match="set_input_shape"):
        embedder.embed(images(2, seed=1))
    assert cudart.live == {}


# ------------------------------------------------------------------------------ real TensorRT (GPU)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_fp16_plan_matches_onnxruntime(engine: TinyEngine, fp16: Path, tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (it cannot be in CI); see docs/engines.md"
    )
    try:
        trt_module.cuda_environment()  # TensorRT, cuda-python, a driver they can use, a GPU
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    result = build_engine(fp16, tmp_path / "tiny.fp16.plan", max_batch=8, timing_cache=tmp_path / "cache")
    assert result.log_errors == ()
    x = images(10, seed=99)
    with load_embedder(result.plan) as plan, load_embedder(engine.onnx) as reference:
        cosines = np.sum(plan.embed(x) * reference.embed(x), axis=1)
    assert cosines.min() >= 0.999
    assert result.layer_precisions.get("fp16", 0) > 0
