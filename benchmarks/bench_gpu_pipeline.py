"""The edge pipeline on CUDA: N live 640x480 streams (RGB + thermal pairs), detection and embedding on
one GPU, batched across streams, plus the linker; frames/s per stream, capture-to-identity latency,
GPU memory and where the time goes.

Per run (N = 2, 8, 32 by default):

- N/2 synthetic scenes (``edge.scene.write_scene``, one RGB and one thermal camera each, 10 fps,
  ``--duration-s`` long, ``--people`` walking), played as **live** cameras (latest frame wins, drops
  counted);
- ``--nodes`` edge-node processes (default: one per 16 streams), each running ``EdgeNode`` over its
  cameras. Each node's detection is **one ultralytics YOLO forward per cycle over all its cameras'
  new frames** (a model built from ``--yolo``, a ``.yaml``: random weights, FP16 on CUDA; the cost of
  a forward does not depend on the weights). Random weights find no people, so the boxes the
  trackers get are the scenes' ground truth (the ``mot`` backend): YOLO's cost is paid and timed,
  and tracking, cropping, embedding and linking see the scenes' real people. The embedder is the
  torch CUDA FP16 MPANet (random weights, ``--arch`` at ``--height`` x ``--width``) with CUDA graphs
  for ``--graph-batches``; ``EdgeNode`` embeds the crops of all its cameras in one batch;
- the linker (``python -m edge.linking``) over loopback ZeroMQ, as in ``run_pipeline``.

Reported per N: frames/s processed per stream and dropped frames; p50/p95 latency from frame capture
to the linker's identity update (``benchmarks.bench_pipeline.latency_stats``: first decision per
track, and all updates); GPU memory per node (torch peak allocated / reserved) and device-wide
used; seconds per processed frame by stage (capture, detect = YOLO batch + box lookup, track, embed,
publish), YOLO batch sizes and ms per batch, embed batch sizes.

    python benchmarks/bench_gpu_pipeline.py                       # CUDA: N = 2, 8, 32, 20 s each
    python benchmarks/bench_gpu_pipeline.py --tiny                # CPU fallback: N = 2, 3 s, small models

Writes ``benchmarks/results/gpu/pipeline_gpu.json`` (``--out``). Goal on one H100/H200: 32 streams
at 10 fps each with p95 under 200 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_file import machine_info, write_report  # noqa: E402

STAGES = ("capture", "detect", "track", "embed", "publish")


# ---------------------------------------------------------------------------- inside a node process


class CrossCameraYolo:
    """One YOLO forward over the newest frame of every camera of a node (what a GPU node batches).

    Frames are submitted by :class:`_TappedSource` as the node gathers them; the first detector
    call of a cycle runs the forward for all of them. Boxes come from each camera's own detector
    (ground truth here), so the GPU cost is real and the downstream stages see real people.

    Args:
        weights: a model ``.yaml`` (random weights) or ``.pt``.
        device: ``cuda:N`` or ``cpu``.
        image_size: ultralytics ``imgsz``.
    """

    def __init__(self, weights: str, device: str, image_size: int) -> None:
        from ultralytics import YOLO

        self.model = YOLO(weights, task="detect")
        self.device, self.image_size = device, int(image_size)
        self.half = device.startswith("cuda")
        self.pending: dict[str, np.ndarray] = {}
        self.batch_sizes: list[int] = []
        self.batch_seconds: list[float] = []
        self.boxes_found = 0

    def forward(self, images: list[np.ndarray]) -> None:
        options: dict[str, Any] = dict(imgsz=self.image_size, device=self.device, verbose=False, conf=0.25)
        if self.half:
            options["half"] = True
        started = time.perf_counter()
        results = self.model.predict(images, **options)
        self.boxes_found += sum(0 if r.boxes is None else len(r.boxes) for r in results)
        self.batch_seconds.append(time.perf_counter() - started)  # predict() returns host results: synced
        self.batch_sizes.append(len(images))

    def run_pending(self) -> None:
        images = list(self.pending.values())
        self.pending.clear()
        if images:
            self.forward(images)

    def stats(self) -> dict[str, Any]:
        seconds = np.asarray(self.batch_seconds[1:] or self.batch_seconds or [0.0])
        return {
            "batches": len(self.batch_sizes),
            "mean_batch": float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0,
            "ms_per_batch_p50": 1000.0 * float(np.percentile(seconds, 50)),
            "ms_per_batch_p95": 1000.0 * float(np.percentile(seconds, 95)),
            "boxes_found_by_random_weights": self.boxes_found,
        }


class _BatchedDetector:
    """A camera's detector: runs the node's pending YOLO batch once per cycle, then its own boxes."""

    def __init__(self, camera_id: str, yolo: CrossCameraYolo, boxes: Any) -> None:
        self.camera_id, self.yolo, self.boxes = camera_id, yolo, boxes

    def __call__(self, frame: Any) -> Any:
        if self.camera_id in self.yolo.pending:
            self.yolo.run_pending()
        return self.boxes(frame)


class _TappedSource:
    """A frame source that hands each frame it returns to the node's YOLO batch too."""

    def __init__(self, source: Any, yolo: CrossCameraYolo) -> None:
        self._source, self._yolo = source, yolo

    def next_frame(self, timeout_s: float | None = None) -> Any:
        from edge.sources.frame import Frame

        item = self._source.next_frame(timeout_s=timeout_s)
        if isinstance(item, Frame):
            self._yolo.pending[item.camera_id] = item.image
        return item

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


def _stage_totals(node: Any) -> dict[str, list[float]]:
    """Accumulate the node's stage clock (which resets every heartbeat) into totals per stage."""
    totals: dict[str, list[float]] = {}
    original = node.stages.add

    def add(stage: str, seconds: float, items: int = 1) -> None:
        original(stage, seconds, items)
        key = stage.split("/", 1)[0]
        entry = totals.setdefault(key, [0.0, 0.0, 0.0])
        entry[0] += seconds
        entry[1] += items
        entry[2] += 1

    node.stages.add = add
    return totals


def worker(args: argparse.Namespace) -> int:
    """One edge node: load models, warm them up, run live until the sources end, write stats JSON."""
    import torch

    from edge.config import load_node_config
    from edge.node import build_node
    from engines.runtime import load_embedder

    config = load_node_config([args.worker])
    cuda = args.device.startswith("cuda")
    graphs = tuple(int(b) for b in args.graph_batches.split(",") if b) if cuda else ()
    embedder = load_embedder(config.embedder.path, device=args.device, cuda_graph_batch_sizes=graphs)
    yolo = CrossCameraYolo(args.yolo, args.device, args.image_size)
    node = build_node(config, embedder=embedder)
    for camera in node.cameras:
        camera.detector = _BatchedDetector(camera.camera_id, yolo, camera.detector)
        camera.source = _TappedSource(camera.source, yolo)
    # Warm-up before the cameras start: CUDA context, cuDNN algorithm choice, the first batch sizes.
    blank = np.zeros((480, 640, 3), np.uint8)
    for size in sorted({1, len(node.cameras)}):
        yolo.forward([blank] * size)
    yolo.batch_sizes.clear()
    yolo.batch_seconds.clear()
    embed_sizes: list[int] = []
    embed = embedder.embed_crops

    def counted(crops: Any, **kw: Any) -> Any:
        embed_sizes.append(len(crops))
        return embed(crops, **kw)

    embedder.embed_crops = counted  # type: ignore[method-assign]
    totals = _stage_totals(node)
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    report = node.run()
    stats: dict[str, Any] = {
        "producer_id": config.producer_id,
        "cameras": len(node.cameras),
        "frames": report.frames,
        "frames_dropped": report.frames_dropped,
        "duration_s": report.duration_s,
        "stages": {k: {"seconds": v[0], "items": int(v[1]), "calls": int(v[2])} for k, v in totals.items()},
        "yolo": yolo.stats(),
        "embed_batches": {
            "count": len(embed_sizes),
            "mean": float(np.mean(embed_sizes)) if embed_sizes else 0.0,
            "max": max(embed_sizes, default=0),
        },
    }
    if cuda:
        free, total = torch.cuda.mem_get_info()
        stats["gpu_memory_mib"] = {
            "peak_allocated": torch.cuda.max_memory_allocated() / 2**20,
            "peak_reserved": torch.cuda.max_memory_reserved() / 2**20,
            "device_used_at_end": (total - free) / 2**20,
            "device_total": total / 2**20,
        }
    Path(args.stats).write_text(json.dumps(stats, indent=1))
    embedder.close()
    return 0


# ------------------------------------------------------------------------------------- the launcher


def make_models(work: Path, arch: str, height: int, width: int) -> Path:
    """A random-init MPANet checkpoint (its cost does not depend on the weights)."""
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_mpanet

    path = work / f"mpanet-{arch}-{height}x{width}.pt"
    if not path.is_file():
        import torch

        torch.manual_seed(0)
        save_checkpoint(path, build_mpanet(arch=arch, height=height, width=width, num_classes=100).eval())
    return path


def scene_cameras(work: Path, pairs: int, duration_s: float, people: int, checkpoint: Path) -> list[Any]:
    """Source configs of ``pairs`` rendered scenes (RGB + thermal each), camera ids made unique."""
    from edge.config import LiveConfig
    from edge.pipeline import scene_nodes
    from edge.scene.generator import SceneSettings, write_scene

    folders = [work / "scenes" / f"pair{pair:02d}-{duration_s:g}s-{people}p" for pair in range(pairs)]
    missing = [(pair, f) for pair, f in enumerate(folders) if not (f / "scene.json").is_file()]
    if missing:  # rendering is single-threaded per scene: one process per scene
        from concurrent.futures import ProcessPoolExecutor

        settings = [
            SceneSettings(
                seed=100 + pair, duration_s=duration_s, fps=10.0, width=640, height=480, num_people=people
            )
            for pair, _ in missing
        ]
        with ProcessPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
            list(pool.map(write_scene, settings, [f for _, f in missing]))
    sources = []
    for pair, folder in enumerate(folders):
        scene = json.loads((folder / "scene.json").read_text())
        nodes, _ = scene_nodes(
            scene, folder, checkpoint, mode="live", detector="ground_truth", live=LiveConfig(reconnect=False)
        )
        for node in nodes:
            for source in node.sources:
                sources.append(dataclasses.replace(source, camera_id=f"p{pair:02d}-{source.camera_id}"))
    return sources


def run_streams(args: argparse.Namespace, streams: int, checkpoint: Path) -> dict[str, Any]:
    """One measurement: ``streams`` cameras over ``nodes`` processes and the linker."""
    from benchmarks.bench_pipeline import latency_stats
    from common.configuring import load_config, save_resolved_config
    from edge.config import EmbedderConfig, NodeConfig, TransportConfig
    from edge.linking.config import LinkerConfig
    from edge.linking.publishing import read_updates
    from edge.pipeline import PipelineConfig, prepare

    work = Path(args.work)
    sources = scene_cameras(work, streams // 2, args.duration_s, args.people, checkpoint)
    nodes_wanted = args.nodes or max(1, math.ceil(streams / 16))
    per_node = math.ceil(len(sources) / nodes_wanted)
    node_configs = [
        NodeConfig(
            producer_id=f"gpu-node-{k}",
            mode="live",
            sources=sources[k * per_node : (k + 1) * per_node],
            embedder=EmbedderConfig(path=str(checkpoint)),
            transport=TransportConfig(endpoint="auto"),
        )
        for k in range(math.ceil(len(sources) / per_node))
    ]
    out = work / f"run-{streams}"
    linker = load_config(LinkerConfig, [REPO / "configs" / "linker.yaml"])
    # A free port for the updates (prepare() picks one for ":auto"): the default 5560 may be taken.
    linker = dataclasses.replace(
        linker, service=dataclasses.replace(linker.service, publish_endpoint="tcp://127.0.0.1:auto")
    )
    config = PipelineConfig(
        output_dir=str(out), mode="live", nodes=node_configs, linker=linker, side_by_side=False
    )
    nodes, linker = prepare(config)
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, command: list[str]) -> None:
        with open(out / "logs" / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    start(
        "linker",
        [
            sys.executable,
            "-m",
            "edge.linking",
            "--config",
            str(save_resolved_config(linker, out / "linker.yaml")),
        ],
    )
    for node in nodes:
        node_yaml = save_resolved_config(node, out / f"{node.producer_id}.yaml")
        start(
            node.producer_id,
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                str(node_yaml),
                "--stats",
                str(out / f"{node.producer_id}.stats.json"),
                "--device",
                args.device,
                "--yolo",
                args.yolo,
                "--image-size",
                str(args.image_size),
                "--graph-batches",
                args.graph_batches,
            ],
        )
    deadline = time.monotonic() + args.duration_s + args.startup_timeout_s
    try:
        while any(procs[n.producer_id].poll() is None for n in nodes) and time.monotonic() < deadline:
            if procs["linker"].poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # the linker takes the nodes' end-of-stream messages
    finally:
        for name in [*(n.producer_id for n in nodes), "linker"]:
            proc = procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    failed = {n: p.returncode for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM)}
    if failed:
        name = next(iter(failed))
        tail = (out / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} exited with {failed[name]}:\n{tail}")
    stats = [json.loads((out / f"{n.producer_id}.stats.json").read_text()) for n in nodes]
    updates = read_updates(linker.updates_path)
    return summarize(streams, args, stats, updates, latency_stats(updates))


def summarize(
    streams: int,
    args: argparse.Namespace,
    stats: list[dict[str, Any]],
    updates: list[Any],
    latency: dict[str, Any],
) -> dict[str, Any]:
    """One row of the report from the nodes' stats and the linker's updates."""
    per_stream = [
        frames / node["duration_s"]
        for node in stats
        for frames in node["frames"].values()
        if node["duration_s"]
    ]
    frames = sum(sum(node["frames"].values()) for node in stats)
    dropped = sum(sum(node["frames_dropped"].values()) for node in stats)
    stage_seconds = {s: sum(n["stages"].get(s, {}).get("seconds", 0.0) for n in stats) for s in STAGES}
    row: dict[str, Any] = {
        "streams": streams,
        "nodes": len(stats),
        "offered_fps_per_stream": 10.0,
        "fps_per_stream": {
            "mean": float(np.mean(per_stream)) if per_stream else 0.0,
            "min": float(np.min(per_stream)) if per_stream else 0.0,
        },
        "frames_processed": frames,
        "frames_dropped": dropped,
        "identity_updates": len(updates),
        "identities": len({u["global_id"] for u in updates}),
        **latency,
        "ms_per_frame_by_stage": {s: 1000.0 * v / max(frames, 1) for s, v in stage_seconds.items()},
        "nodes_detail": stats,
    }
    if all("gpu_memory_mib" in n for n in stats):
        row["gpu_memory_mib"] = {
            "sum_of_node_peaks_reserved": sum(n["gpu_memory_mib"]["peak_reserved"] for n in stats),
            "device_used_max": max(n["gpu_memory_mib"]["device_used_at_end"] for n in stats),
        }
    return row


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken driver must not hide the CPU fallback's numbers
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams", default="2,8,32", help="stream counts to run (even: RGB + thermal pairs)"
    )
    parser.add_argument("--nodes", type=int, default=0, help="node processes per run (0: one per 16 streams)")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--people", type=int, default=6, help="people per scene")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument(
        "--yolo", default="yolo11n.yaml", help="ultralytics model .yaml (random weights) or .pt"
    )
    parser.add_argument("--image-size", type=int, default=640, help="YOLO imgsz")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument(
        "--graph-batches", default="4,16,64,128", help="CUDA graph batch sizes of the embedder"
    )
    parser.add_argument("--startup-timeout-s", type=float, default=180.0)
    parser.add_argument("--tiny", action="store_true", help="CPU fallback: 2 streams, 3 s, small models")
    parser.add_argument("--work", default="/tmp/bench-gpu-pipeline")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu" / "pipeline_gpu.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.tiny:
        args.device, args.streams, args.duration_s, args.people = "cpu", "2", 3.0, 3
        if args.out == parser.get_default("out"):  # never mix CPU-fallback numbers with the GPU file
            args.out = str(Path(args.out).with_name("pipeline_cpu_fallback.json"))
        args.arch, args.height, args.width, args.image_size = "resnet18", 96, 48, 160
    if args.device.startswith("cuda") and gpu_name() is None:
        print(
            "bench_gpu_pipeline: torch sees no CUDA device; use --tiny (CPU fallback) here", file=sys.stderr
        )
        return 3
    streams = [int(s) for s in args.streams.split(",")]
    if any(s < 2 or s % 2 for s in streams):
        parser.error(f"--streams must be even numbers >= 2 (RGB + thermal pairs), got {args.streams}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = make_models(work, args.arch, args.height, args.width)
    report: dict[str, Any] = {
        "what": "live synthetic 640x480 streams, RGB + thermal pairs, 10 fps offered, nodes + linker",
        "device": args.device,
        "gpu": gpu_name() if args.device.startswith("cuda") else None,
        "detector": f"ultralytics {args.yolo} (random weights) batched per node, imgsz {args.image_size}; "
        "boxes: scene ground truth",
        "embedder": f"torch {args.arch} {args.height}x{args.width} "
        + (
            "FP16 channels_last, CUDA graphs " + args.graph_batches
            if args.device.startswith("cuda")
            else "FP32 CPU"
        ),
        "duration_s": args.duration_s,
        "people_per_scene": args.people,
        "load_average_before": os.getloadavg(),
        "runs": [],
    }
    started = time.perf_counter()
    scene_cameras(work, max(streams) // 2, args.duration_s, args.people, checkpoint)  # render once, untimed
    report["scene_render_seconds"] = round(time.perf_counter() - started, 1)
    for n in streams:
        row = run_streams(args, n, checkpoint)
        report["runs"].append(row)
        write_report(args.out, {**report, "machine": machine_info()})  # a later timeout keeps this run
        latency = row.get("latency_ms_capture_to_identity", {}).get("first_decision", {})
        print(
            f"{n} streams: {row['fps_per_stream']['mean']:.1f} fps/stream, dropped {row['frames_dropped']}, "
            f"first-decision latency p50 {latency.get('p50', float('nan')):.0f} ms p95 {latency.get('p95', float('nan')):.0f} ms",
            flush=True,
        )
    report["machine"] = machine_info()
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
