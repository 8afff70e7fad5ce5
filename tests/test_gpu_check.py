"""benchmarks/gpu_check.sh and the scripts it runs, on CPU: what a machine without a GPU can show.

The GPU numbers need a GPU; here the script must run end to end with every GPU section skipped with
its reason and the CPU fallbacks (the multi-stream pipeline with 2 streams, the training-step
variants on a tiny model) producing their JSON. The TensorRT checks run against the stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_artifacts import tiny_engine
from fake_tensorrt import make_cudart, make_tensorrt

import engines.tensorrt as trt_module

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def test_gpu_check_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "GPU_CHECK_TINY": "1",
        "OUT": str(out),
        "GPU_CHECK_WORK": str(work),
        "PYTHON": sys.executable,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    run = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    status = {row["section"]: row for row in report["sections"]}
    assert status["versions"]["status"] == "passed"
    for skipped in ("embedder_cuda", "pipeline_cuda", "train_amp_cuda"):
        assert status[skipped]["status"] == "skipped" and status[skipped]["detail"]
    assert status["tensorrt"]["status"] in ("skipped", "passed")
    if status["tensorrt"]["status"] == "skipped":
        assert "TensorRT" in status["tensorrt"]["detail"] or "GPU" in status["tensorrt"]["detail"]
    assert status["pipeline_cpu_fallback"]["status"] == "passed"
    assert status["train_amp_cpu_smoke"]["status"] == "passed"

    versions = json.loads((out / "versions.json").read_text())
    assert "unavailable" in versions["tensorrt_environment"] or "tensorrt" in versions["tensorrt_environment"]
    pipeline = json.loads((out / "pipeline_cpu_fallback.json").read_text())
    row = pipeline["runs"][0]
    assert row["streams"] == 2 and row["frames_processed"] > 0 and row["fps_per_stream"]["mean"] > 0
    assert set(row["ms_per_frame_by_stage"]) == {"capture", "detect", "track", "embed", "publish"}
    assert row["ms_per_frame_by_stage"]["detect"] > 0 and row["ms_per_frame_by_stage"]["embed"] > 0
    node = row["nodes_detail"][0]
    assert node["yolo"]["batches"] > 0 and node["yolo"]["mean_batch"] >= 1  # one forward per cycle
    assert node["embed_batches"]["count"] > 0
    train = json.loads((out / "train_amp_cpu_smoke.json").read_text())
    assert train["results"]["fp32"]["images_per_second"] > 0
    assert "fp32_channels_last" in train["speedup_vs_fp32"]


# -------------------------------------------------------------- the TensorRT checks, on the stand-in


def _install_fakes(monkeypatch: pytest.MonkeyPatch, **options: object):
    cudart, modules = make_cudart()
    fake = make_tensorrt(cudart=cudart, **options)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trt_module, "tensorrt_cuda_major", lambda: None)
    return fake


@pytest.mark.parametrize("version", ["10.8.0", "11.0.0"])
def test_tensorrt_checks_of_builds_inspector_keys_and_timing_cache(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    from benchmarks import gpu_check_tensorrt as check

    onnx = tiny_engine(tmp_path_factory.getbasetemp()).onnx
    _install_fakes(monkeypatch, version=version)
    builds = check.check_fp32_builds(tmp_path, onnx)
    assert set(builds) == {"1", "2", "4"} and all(row["log_errors"] == [] for row in builds.values())
    keys = check.check_inspector_keys(tmp_path / "fp32-b4.plan")
    assert keys["type_key_used"] == ("Format/Datatype" if version.startswith("10") else "DataType")
    # The timing cache check on a cache a first build wrote (the FP16 build's role in the script).
    cache = tmp_path / "timing.cache"
    from engines.precision import convert_fp16
    from engines.tensorrt import build_engine

    convert_fp16(onnx, tmp_path / "tiny.fp16.onnx")
    build_engine(
        tmp_path / "tiny.fp16.onnx", tmp_path / "fp16.plan", max_batch=8, opt_batch=4, timing_cache=cache
    )
    row = check.check_timing_cache(tmp_path, cache, 1.0)
    assert row["replaced"] == [] and row["cache_bytes_after"] > 0


def test_tensorrt_check_fails_on_a_build_log_with_errors(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import gpu_check_tensorrt as check

    onnx = tiny_engine(tmp_path_factory.getbasetemp()).onnx
    fake = _install_fakes(monkeypatch)
    original = fake.Builder.build_serialized_network

    def noisy(self, network, config):  # a build that succeeds but logs an error, as TensorRT can
        self.logger.log(fake.ILogger.Severity.ERROR, "fake: tactic failed")
        return original(self, network, config)

    monkeypatch.setattr(fake.Builder, "build_serialized_network", noisy)
    with pytest.raises(AssertionError, match="ERROR lines"):
        check.check_fp32_builds(tmp_path, onnx)


def test_tensorrt_checks_skip_with_the_reason_without_tensorrt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import gpu_check_tensorrt as check

    cudart, modules = make_cudart(devices=0)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(cudart=cudart))
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(trt_module, "tensorrt_cuda_major", lambda: None)
    assert check.main(["--work", str(tmp_path / "w"), "--out", str(tmp_path / "t.json")]) == 0
    report = json.loads((tmp_path / "t.json").read_text())
    assert "no usable GPU" in report["skipped"] and report["checks"] == {}
