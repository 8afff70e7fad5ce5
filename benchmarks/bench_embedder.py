"""Embedding throughput and latency: torch eager vs onnxruntime (CPU), and torch CUDA variants (GPU).

    python benchmarks/bench_embedder.py                       # CPU -> benchmarks/results/embedder_cpu.json
    python benchmarks/bench_embedder.py --device cuda         # GPU -> benchmarks/results/embedder_cuda.json

For each model (``default``: ResNet-50 MPANet at 384x128, D = 14336; ``small``: ResNet-18 at
256x128, D = 3584; random weights, which do not change the cost) and batch size (1, 8, 32) it
measures crops/s and per-call latency through the deployed path (:func:`engines.runtime.load_embedder`
and ``Embedder.embed``: input checks, the backend call, L2 normalisation). In the same run it measures
the machine's peak float32 matmul rate (a large square matmul, best of several; on CUDA also the
float16 one, which FP16 rows are compared with) and reports each backend's achieved GFLOP/s as a
fraction of it, using the model's FLOPs per crop counted once with
``torch.utils.flop_counter`` (convolutions and matmuls, 2 FLOPs per multiply-add; elementwise ops
are not counted, which underestimates the work slightly).

Backends on CPU: torch eager FP32 (the checkpoint, ``torch.inference_mode``, NCHW), torch eager FP32
channels_last, onnxruntime FP32 (the verified ONNX export, all graph optimisations, one intra-op
thread per core), onnxruntime INT8 with the CPU graph (uint8 activations: u8 x s8 VNNI kernels) and
with TensorRT's symmetric int8 Q/DQ graph (for comparison; slower on CPU). The INT8 graphs are
calibrated on 32 random crops: their speed, not their accuracy, is what is measured here. On CUDA:
torch FP32, FP16 + channels_last, FP16 + channels_last + CUDA graphs, onnxruntime CUDA EP if present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = {
    "default": {"arch": "resnet50", "height": 384, "width": 128},
    "small": {"arch": "resnet18", "height": 256, "width": 128},
}


def peak_matmul_gflops(
    device: str, size: int = 2048, repeats: int = 7, dtype: str = "float32"
) -> dict[str, Any]:
    """Best achieved GFLOP/s of an (n x n) @ (n x n) matmul, numpy and torch (CPU) or torch (CUDA)."""
    import torch

    flops = 2.0 * size**3
    results: dict[str, float] = {}
    if device == "cpu":
        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
        results["numpy"] = flops / _best_time(lambda: a @ b, repeats) / 1e9
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        results["torch"] = flops / _best_time(lambda: torch.mm(ta, tb), repeats) / 1e9
    else:
        torch_dtype = getattr(torch, dtype)
        ta = torch.randn(size * 2, size * 2, device=device, dtype=torch_dtype)
        tb = torch.randn(size * 2, size * 2, device=device, dtype=torch_dtype)

        def run() -> None:
            torch.mm(ta, tb)
            torch.cuda.synchronize()

        results[f"torch_cuda_{dtype}"] = 2.0 * (size * 2) ** 3 / _best_time(run, repeats) / 1e9
    return {"size": size, "dtype": dtype, "gflops": results, "peak_gflops": max(results.values())}


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def flops_per_crop(model: Any, height: int, width: int) -> float:
    """FLOPs of ``model.embed`` for one (3, H, W) crop (convs + matmuls, 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.embed(torch.zeros(1, 3, height, width))
    return float(counter.get_total_flops())


def time_interleaved(
    embeds: dict[str, Callable[[np.ndarray], Any]],
    batch: np.ndarray,
    seconds: float,
    min_iters: int,
    pause_s: float = 0.1,
) -> dict[str, dict[str, float]]:
    """Per backend: latency (ms per call) and throughput (crops/s) of ``embed(batch)``.

    The backends take turns (round robin) so a burst of load from other processes hits all of them
    alike; each gets two warm-up calls, then calls until it has ``min_iters`` and ``seconds`` of
    timed work. ``crops_per_s`` uses the median call, ``crops_per_s_best`` the fastest one. An untimed
    pause of ``pause_s`` separates calls: the worker threads of onnxruntime and OpenMP spin for a
    while after a call, and would otherwise slow down whichever backend runs next.
    """
    for embed in embeds.values():
        for _ in range(2):
            embed(batch)
    times: dict[str, list[float]] = {name: [] for name in embeds}
    while any(len(t) < min_iters or sum(t) < seconds for t in times.values()):
        for name, embed in embeds.items():
            if len(times[name]) >= min_iters and sum(times[name]) >= seconds:
                continue
            time.sleep(pause_s)
            t0 = time.perf_counter()
            embed(batch)
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, values in times.items():
        median = statistics.median(values)
        out[name] = {
            "latency_ms_median": 1000.0 * median,
            "latency_ms_min": 1000.0 * min(values),
            "crops_per_s": batch.shape[0] / median,
            "crops_per_s_best": batch.shape[0] / min(values),
            "iterations": len(values),
        }
    return out


def prepare_model(name: str, spec: dict[str, Any], folder: Path, int8: bool) -> dict[str, Any]:
    """Random-init checkpoint, verified ONNX export (and INT8 Q/DQ graph) of one benchmark model."""
    import torch

    from engines.calibration import CalibrationSet
    from engines.export import export_onnx
    from engines.precision import quantize_int8
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_mpanet

    torch.manual_seed(0)
    model = build_mpanet(num_classes=395, **spec).eval()
    checkpoint = save_checkpoint(folder / f"{name}.pt", model)
    started = time.perf_counter()
    exported = export_onnx(checkpoint, folder / f"{name}.onnx")
    info: dict[str, Any] = {
        "checkpoint": checkpoint,
        "onnx": exported.artifact,
        "embedding_dim": model.embedding_dim,
        "flops_per_crop": flops_per_crop(model, spec["height"], spec["width"]),
        "export_seconds": time.perf_counter() - started,
        "parity_cosine_min": exported.parity.cosine_min,
    }
    if int8:
        rng = np.random.default_rng(0)
        count = 32
        crops = rng.standard_normal((count, 3, spec["height"], spec["width"]), dtype=np.float32)
        calibration = CalibrationSet(
            crops, ("visible", "infrared") * (count // 2), tuple(map(str, range(count)))
        )
        for target in ("cpu", "tensorrt"):
            result = quantize_int8(exported.artifact, calibration, target=target, cosine_min=0.9)
            info[f"int8_{target}"] = result.artifact
            info[f"int8_{target}_cosine_min"] = result.cosine_min
    return info


def backends(
    device: str, info: dict[str, Any], threads: int, cuda_graph_batch: int
) -> dict[str, Callable[[], Any]]:
    """Name -> factory of an Embedder, for ``device``."""
    from engines.runtime import load_embedder

    ckpt, onnx_path = info["checkpoint"], info["onnx"]
    if device == "cpu":
        made = {
            "torch eager fp32": lambda: load_embedder(ckpt),
            "torch eager fp32 channels_last": lambda: load_embedder(ckpt, channels_last=True),
            "onnxruntime fp32": lambda: load_embedder(onnx_path, intra_op_threads=threads),
        }
        if "int8_cpu" in info:
            made["onnxruntime int8 CPU graph (u8 activations)"] = lambda: load_embedder(
                info["int8_cpu"], intra_op_threads=threads
            )
            made["onnxruntime int8 TensorRT graph (s8, symmetric)"] = lambda: load_embedder(
                info["int8_tensorrt"], intra_op_threads=threads
            )
        return made
    import onnxruntime as ort

    made = {
        "torch cuda fp32": lambda: load_embedder(ckpt, device=device, half=False, channels_last=False),
        "torch cuda fp16 channels_last": lambda: load_embedder(
            ckpt, device=device, half=True, channels_last=True
        ),
        "torch cuda fp16 channels_last + CUDA graph": lambda: load_embedder(
            ckpt,
            device=device,
            half=True,
            channels_last=True,
            cuda_graph_batch_sizes=[max(1, cuda_graph_batch)],
        ),
    }
    if "CUDAExecutionProvider" in ort.get_available_providers():
        made["onnxruntime cuda fp32"] = lambda: load_embedder(onnx_path, device=device)
    return made


def _peak_for(backend: str, results: dict[str, Any]) -> float:
    """The matmul peak a backend is compared with: FP16 rows on CUDA against the FP16 peak."""
    if "fp16" in backend and "peak_matmul_fp16" in results:
        return results["peak_matmul_fp16"]["peak_gflops"]
    return results["peak_matmul"]["peak_gflops"]


def machine(device: str) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
        simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    except (OSError, StopIteration):
        simd = []
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "simd": simd,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": ort.__version__,
        "load_average_before": os.getloadavg(),
    }
    if device != "cpu":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown(results: dict[str, Any]) -> str:
    peak = results["peak_matmul"]["peak_gflops"]
    lines = [
        f"Peak matmul: {peak:.0f} GFLOP/s ({results['peak_matmul']['dtype']}); machine: "
        f"{results['machine'].get('gpu') or results['machine']['cpu']}, {results['machine']['cpu_count']} cores",
        "",
        "| model | backend | batch | crops/s (median call) | best call | latency ms (median) | GFLOP/s | % of peak "
        "| speed-up vs torch eager |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['batch']} | {row['crops_per_s']:.1f} | "
            f"{row['crops_per_s_best']:.1f} | {row['latency_ms_median']:.1f} | {row['gflops']:.0f} | {100 * row['fraction_of_peak']:.0f}% | "
            f"{row['speedup_vs_baseline']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--models", default="default,small", help="comma list of: default, small")
    parser.add_argument("--batches", default="1,8,32", help="comma list of batch sizes")
    parser.add_argument("--seconds", type=float, default=4.0, help="minimum timed seconds per measurement")
    parser.add_argument("--min-iters", type=int, default=3, help="minimum timed calls per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime intra-op threads")
    parser.add_argument("--no-int8", action="store_true", help="skip the onnxruntime INT8 row (CPU)")
    parser.add_argument("--output", help="JSON path (default benchmarks/results/embedder_<device>.json)")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    from common.files import atomic_write_text

    device = args.device
    if device != "cpu" and not torch.cuda.is_available():
        print("CUDA is not available here", file=sys.stderr)
        return 2
    kind = "cpu" if device == "cpu" else "cuda"
    output = Path(args.output) if args.output else REPO / "benchmarks" / "results" / f"embedder_{kind}.json"
    batches = [int(b) for b in args.batches.split(",")]
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_embedder.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device,
        "machine": machine(device),
        "peak_matmul": peak_matmul_gflops(device),
        "models": {},
        "rows": [],
    }
    if device != "cpu":
        results["peak_matmul_fp16"] = peak_matmul_gflops(device, dtype="float16")
    peak = results["peak_matmul"]["peak_gflops"]
    print(f"peak matmul {peak:.0f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-embedder-") as work:
        for name in args.models.split(","):
            spec = MODELS[name]
            info = prepare_model(name, spec, Path(work), int8=device == "cpu" and not args.no_int8)
            results["models"][name] = {
                **spec,
                "embedding_dim": info["embedding_dim"],
                "gflops_per_crop": info["flops_per_crop"] / 1e9,
                "export_seconds": round(info["export_seconds"], 1),
                "parity_cosine_min": info["parity_cosine_min"],
                **{k: v for k, v in info.items() if k.endswith("_cosine_min") and k.startswith("int8")},
            }
            print(f"{name}: {info['flops_per_crop'] / 1e9:.2f} GFLOP per crop", flush=True)
            embedders = {name: factory() for name, factory in backends(device, info, args.threads, 0).items()}
            for batch in batches:
                x = np.random.default_rng(batch).standard_normal(
                    (batch, 3, spec["height"], spec["width"]), dtype=np.float32
                )
                if device != "cpu":  # a CUDA graph is captured for this batch size
                    graph_name = "torch cuda fp16 channels_last + CUDA graph"
                    embedders.pop(graph_name).close()
                    embedders[graph_name] = backends(device, info, args.threads, batch)[graph_name]()
                load_before = os.getloadavg()[0]
                timings = time_interleaved(
                    {name: e.embed for name, e in embedders.items()}, x, args.seconds, args.min_iters
                )
                baseline = None
                for backend, timing in timings.items():
                    gflops = timing["crops_per_s"] * info["flops_per_crop"] / 1e9
                    baseline = baseline or timing["crops_per_s"]
                    row = {
                        "model": name,
                        "backend": backend,
                        "batch": batch,
                        **timing,
                        "gflops": gflops,
                        "fraction_of_peak": gflops / _peak_for(backend, results),
                        "speedup_vs_baseline": timing["crops_per_s"] / baseline,
                        "load_average_1min": [load_before, os.getloadavg()[0]],
                    }
                    results["rows"].append(row)
                    print(
                        f"  {backend:<45} b={batch:<3} {timing['crops_per_s']:8.1f} crops/s "
                        f"(best {timing['crops_per_s_best']:.1f}) {timing['latency_ms_median']:8.1f} ms  "
                        f"{100 * row['fraction_of_peak']:4.0f}% of peak  load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
            for embedder in embedders.values():
                embedder.close()
    results["machine"]["load_average_after"] = os.getloadavg()
    # Measured again at the end; the better of the two is the peak (load from other processes only lowers it).
    again = peak_matmul_gflops(device)
    results["peak_matmul_again"] = again
    if again["peak_gflops"] > peak:
        results["peak_matmul"] = again
        peak = again["peak_gflops"]
        for row in results["rows"]:
            row["fraction_of_peak"] = row["gflops"] / _peak_for(row["backend"], results)
    results["baseline"] = (
        "first backend of each (model, batch): torch eager fp32 (CPU) / torch cuda fp32 (GPU)"
    )
    atomic_write_text(output, json.dumps(results, indent=2, default=str) + "\n")
    print(markdown(results))
    print(f"written {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
