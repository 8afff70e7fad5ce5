"""The TensorRT part of ``benchmarks/gpu_check.sh``: what only a machine with TensorRT and a GPU can show.

On a tiny random-weight MPANet (ResNet-18 at 128x64; the checks are about the API, not accuracy):

1. ``environment``: :func:`engines.tensorrt.cuda_environment` (TensorRT, its CUDA major, cuda-python,
   driver, GPU); where it raises ``TensorRTUnavailable`` every check is skipped with that reason;
2. ``fp32_builds``: FP32 plans with profile maximum 1, 2 and 4, each build log free of ERROR lines;
3. ``inspector_keys``: the keys of the engine inspector JSON that ``inspector_precisions`` reads
   (``Layers``, per layer ``Inputs``/``Outputs``, per tensor ``Format/Datatype`` (10.x) or
   ``DataType`` (11.x)) are really there, and which ones;
4. ``runner_parity``: the TensorRT runner vs onnxruntime (CPU, FP32) at batch 1, the profile's opt
   and its max, with DeprecationWarning as an error around the runner (what
   ``-W error::DeprecationWarning`` would do): worst cosine >= 0.9999 (FP32, TF32 off);
5. ``fp16``: the FP16 plan (MAM instance norms native and FP32, checked by the build), worst
   cosine vs onnxruntime FP32 >= 0.999;
6. ``int8``: the INT8 Q/DQ plan (int8 layers present), worst cosine vs FP32 reported (>= 0.97 as
   for the ONNX);
7. ``timing_cache``: the FP16 build again with the cache of the first: reused (no "does not match" /
   "unreadable" in the log), its size and both build times.

    python benchmarks/gpu_check_tensorrt.py --out benchmarks/results/gpu/tensorrt.json

Exit status 0 when every check passed or everything was skipped, 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_file import machine_info, write_report  # noqa: E402

HEIGHT, WIDTH = 128, 64
FP32_COSINE_MIN, FP16_COSINE_MIN, INT8_COSINE_MIN = 0.9999, 0.999, 0.97


def tiny_onnx(work: Path) -> Path:
    """A random-init ResNet-18 MPANet at 128x64, exported and verified (FP32 ONNX with sidecar)."""
    import torch

    from engines.export import export_onnx
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_mpanet

    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / "tiny.onnx"
    if onnx_path.is_file():
        return onnx_path
    torch.manual_seed(0)
    model = build_mpanet(arch="resnet18", height=HEIGHT, width=WIDTH, num_classes=8)
    with torch.no_grad():  # non-trivial BN-neck statistics, as a trained model has
        model.neck.running_mean.uniform_(-0.05, 0.05)
        model.neck.running_var.uniform_(0.5, 2.0)
    return export_onnx(save_checkpoint(work / "tiny.pt", model), onnx_path).artifact


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, HEIGHT, WIDTH), dtype=np.float32)


def cosines(plan: Path, reference: Path, batch: np.ndarray, *, strict_warnings: bool = False) -> np.ndarray:
    """Row cosines of the plan's embeddings vs the reference ONNX's (onnxruntime CPU)."""
    from engines.runtime import load_embedder

    with warnings.catch_warnings():
        if strict_warnings:
            warnings.simplefilter("error", DeprecationWarning)
        with load_embedder(plan) as trt_embedder:
            got = trt_embedder.embed(batch)
    with load_embedder(reference) as ort_embedder:
        want = ort_embedder.embed(batch)
    return np.sum(got * want, axis=1)


def log_errors(build_log: Path) -> list[str]:
    lines = build_log.read_text(errors="replace").splitlines()
    return [line for line in lines if "[ERROR]" in line or "[INTERNAL_ERROR]" in line]


def check_fp32_builds(work: Path, onnx_path: Path) -> dict[str, Any]:
    from engines.tensorrt import build_engine

    rows = {}
    for batch in (1, 2, 4):
        result = build_engine(
            onnx_path, work / f"fp32-b{batch}.plan", min_batch=1, opt_batch=batch, max_batch=batch
        )
        errors = log_errors(result.build_log)
        rows[str(batch)] = {
            "seconds": round(result.seconds, 1),
            "log_errors": errors,
            "layers": result.layer_precisions,
        }
        if errors:
            raise AssertionError(f"batch {batch}: the build log has ERROR lines: {errors[:3]}")
    return rows


def check_inspector_keys(plan: Path) -> dict[str, Any]:
    """Which inspector JSON keys the real TensorRT writes, against those the code reads."""
    info = json.loads(plan.with_name(plan.name + ".layers.json").read_text())
    layers = info.get("Layers", [])
    layer_keys = sorted({k for layer in layers if isinstance(layer, dict) for k in layer})
    tensor_keys = sorted(
        {
            k
            for layer in layers
            if isinstance(layer, dict)
            for t in [*layer.get("Inputs", []), *layer.get("Outputs", [])]
            if isinstance(t, dict)
            for k in t
        }
    )
    found = {
        "top_level": sorted(info),
        "layer": layer_keys,
        "tensor": tensor_keys,
        "type_key_used": next(
            (k for k in ("DataType", "Format/Datatype", "Format") if k in tensor_keys), None
        ),
    }
    if not layers or not any(isinstance(layer, dict) for layer in layers):
        raise AssertionError(f"no per-layer objects under 'Layers': {found}")
    if found["type_key_used"] is None or not ({"Inputs", "Outputs"} & set(layer_keys)):
        raise AssertionError(f"the inspector JSON lacks the keys inspector_precisions reads: {found}")
    return found


def check_parity(work: Path, onnx_path: Path) -> dict[str, Any]:
    from engines.tensorrt import build_engine

    result = build_engine(onnx_path, work / "fp32-parity.plan", min_batch=1, opt_batch=4, max_batch=8)
    rows = {}
    for batch in (1, 4, 8):
        worst = float(cosines(result.plan, onnx_path, images(batch, seed=batch), strict_warnings=True).min())
        rows[str(batch)] = worst
        if worst < FP32_COSINE_MIN:
            raise AssertionError(f"batch {batch}: worst cosine {worst:.6f} < {FP32_COSINE_MIN}")
    return {"worst_cosine_by_batch": rows, "deprecation_warnings": "errors"}


def check_fp16(work: Path, onnx_path: Path, cache: Path) -> dict[str, Any]:
    from engines.precision import convert_fp16
    from engines.tensorrt import build_engine

    fp16 = convert_fp16(onnx_path, work / "tiny.fp16.onnx").artifact
    result = build_engine(fp16, work / "fp16.plan", max_batch=8, opt_batch=4, timing_cache=cache)
    worst = float(cosines(result.plan, onnx_path, images(8, seed=11)).min())
    row = {
        "worst_cosine": worst,
        "network_types": result.network_types,
        "layer_precisions": result.layer_precisions,
        "seconds": round(result.seconds, 1),
    }
    if worst < FP16_COSINE_MIN:
        raise AssertionError(f"FP16 plan: worst cosine {worst:.5f} < {FP16_COSINE_MIN} ({row})")
    return row


def check_int8(work: Path, onnx_path: Path) -> dict[str, Any]:
    from engines.calibration import CalibrationSet
    from engines.precision import quantize_int8
    from engines.tensorrt import build_engine

    calib = images(48, seed=3)
    names = tuple(f"synthetic-{i}" for i in range(48))
    calibration = CalibrationSet(calib, ("visible",) * 24 + ("infrared",) * 24, names)
    int8 = quantize_int8(onnx_path, calibration, work / "tiny.int8.onnx").artifact
    result = build_engine(int8, work / "int8.plan", max_batch=8, opt_batch=4)
    worst = float(cosines(result.plan, onnx_path, calib[:8]).min())
    row = {"worst_cosine_vs_fp32": worst, "layer_precisions": result.layer_precisions}
    if not result.layer_precisions.get("int8"):
        raise AssertionError(f"INT8 plan without int8 layers: {row}")
    if worst < INT8_COSINE_MIN:
        raise AssertionError(f"INT8 plan: worst cosine {worst:.4f} < {INT8_COSINE_MIN}")
    return row


def check_timing_cache(work: Path, cache: Path, first_seconds: float | None) -> dict[str, Any]:
    from engines.tensorrt import build_engine

    if not cache.is_file():
        raise AssertionError(f"the FP16 build wrote no timing cache at {cache}")
    size = cache.stat().st_size
    result = build_engine(
        work / "tiny.fp16.onnx", work / "fp16-again.plan", max_batch=8, opt_batch=4, timing_cache=cache
    )
    log = result.build_log.read_text(errors="replace")
    replaced = [n for n in ("does not match", "unreadable") if n in log]
    row = {
        "cache_bytes_before": size,
        "cache_bytes_after": cache.stat().st_size,
        "first_build_seconds": first_seconds,
        "second_build_seconds": round(result.seconds, 1),
        "replaced": replaced,
    }
    if replaced:
        raise AssertionError(f"the timing cache was not reused: {row}")
    return row


def run_check(name: str, checks: dict[str, Any], work: Callable[[], Any]) -> None:
    started = time.perf_counter()
    try:
        checks[name] = {"status": "passed", "detail": work()}
    except Exception as exc:  # one failing check must not hide the others
        checks[name] = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc()[-2000:],
        }
    checks[name]["seconds"] = round(time.perf_counter() - started, 1)
    print(f"tensorrt {name}: {checks[name]['status']} ({checks[name]['seconds']} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="/tmp/gpu-check-tensorrt")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu" / "tensorrt.json"))
    args = parser.parse_args(argv)
    from engines.tensorrt import TensorRTUnavailable, cuda_environment

    report: dict[str, Any] = {"checks": {}}
    try:
        report["environment"] = cuda_environment()
    except TensorRTUnavailable as exc:
        report["skipped"] = str(exc)
        print(f"tensorrt: skipped: {exc}", flush=True)
        write_report(args.out, report)
        return 0
    work = Path(args.work)
    onnx_path = tiny_onnx(work)
    cache = work / "timing.cache"
    cache.unlink(missing_ok=True)
    checks = report["checks"]
    run_check("fp32_builds", checks, lambda: check_fp32_builds(work, onnx_path))
    run_check("inspector_keys", checks, lambda: check_inspector_keys(work / "fp32-b4.plan"))
    run_check("runner_parity", checks, lambda: check_parity(work, onnx_path))
    run_check("fp16", checks, lambda: check_fp16(work, onnx_path, cache))
    run_check("int8", checks, lambda: check_int8(work, onnx_path))
    first = checks["fp16"].get("detail", {}).get("seconds") if checks["fp16"]["status"] == "passed" else None
    run_check("timing_cache", checks, lambda: check_timing_cache(work, cache, first))
    report["machine"] = machine_info()
    write_report(args.out, report)
    return 1 if any(c["status"] != "passed" for c in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
