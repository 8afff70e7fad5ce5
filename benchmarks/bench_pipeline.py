"""End-to-end pipeline speed on this machine: one RGB + one thermal 640x480 stream, two edge nodes and
the linker as separate processes over loopback ZeroMQ, offline detectors (HOG on RGB, hot regions on
thermal), ByteTrack, the embedder (onnxruntime, CPU) and the linker.

Two runs per model:

- **replay**: every frame as fast as the pipeline can go -> frames/s (both cameras together);
- **live**: the videos played as cameras in real time (10 fps each, latest frame wins, drops
  counted) -> frames/s actually processed, drop rate, and latency from capture to identity event
  (the linker's publish time minus the frame's capture time, p50/p95 over identity updates).

Models: ``small`` (the demo recipe: ResNet-18 at 96x48) and ``default`` (ResNet-50 at 384x128),
random weights (their cost does not depend on the weights), exported to ONNX FP32.

    python benchmarks/bench_pipeline.py            # writes benchmarks/results/pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_file import machine_info, write_report  # noqa: E402

MODELS = {
    "small": {"arch": "resnet18", "height": 96, "width": 48},
    "default": {"arch": "resnet50", "height": 384, "width": 128},
}


def node_reports(out: Path) -> list[dict[str, Any]]:
    reports = []
    for log in sorted((out / "logs").glob("node-*.log")):
        text = log.read_text(errors="replace")
        # The node prints its report (indented JSON) last; it may also be the whole log.
        start = 0 if text.startswith("{") else text.rfind("\n{") + 1
        reports.append(json.loads(text[start:]) if start > 0 or text.startswith("{") else {})
    return reports


def run(model: Path, scene: dict[str, Any], scene_dir: Path, out: Path, mode: str) -> dict[str, Any]:
    from common.configuring import load_config
    from edge.config import LiveConfig
    from edge.linking.config import LinkerConfig
    from edge.linking.publishing import read_updates
    from edge.pipeline import PipelineConfig, run_pipeline, scene_nodes

    nodes, _ = scene_nodes(scene, scene_dir, model, mode=mode, live=LiveConfig(reconnect=False))
    linker = load_config(LinkerConfig, [REPO / "configs" / "linker.yaml"])
    config = PipelineConfig(
        output_dir=str(out), mode=mode, nodes=nodes, linker=linker, side_by_side=False, fresh=True
    )
    started = time.perf_counter()
    result = run_pipeline(config, progress=False)
    wall = time.perf_counter() - started
    reports = node_reports(out)
    frames = sum(sum(r.get("frames", {}).values()) for r in reports)
    dropped = sum(sum(r.get("frames_dropped", {}).values()) for r in reports)
    busy = max((r.get("duration_s", 0.0) for r in reports), default=0.0)
    updates = read_updates(result.identity_updates)
    row: dict[str, Any] = {
        "mode": mode,
        "frames_processed": frames,
        "frames_dropped": dropped,
        "node_seconds": round(busy, 2),
        "frames_per_second": frames / busy if busy else 0.0,
        "wall_seconds_with_startup": round(wall, 1),
        "sightings": result.summary.get("sightings"),
        "identity_updates": len(updates),
    }
    if mode == "live":
        row.update(latency_stats(updates))
    return row


def latency_stats(updates: list[dict[str, Any]]) -> dict[str, Any]:
    """Capture-to-identity latency (ms): the linker's publish time minus the capture time of the frame
    whose sighting triggered the update. ``first_decision``: each track's first update (what a
    consumer waits for); ``all``: every update, including decisions made when a track ended (after
    ``matching.track_idle_s`` of silence, so their latency includes that wait)."""
    if not updates:
        return {}

    def stats(values: list[float]) -> dict[str, float]:
        array = np.asarray(values) * 1000.0
        return {
            "p50": float(np.percentile(array, 50)),
            "p95": float(np.percentile(array, 95)),
            "n": len(array),
        }

    first: dict[tuple[str, str, int], float] = {}
    for u in sorted(updates, key=lambda u: u.get("journal_seq", 0)):
        first.setdefault(
            (u["source_producer_id"], u["camera_id"], u["track_id"]), u["send_ts"] - u["capture_ts"]
        )
    return {
        "latency_ms_capture_to_identity": {
            "first_decision": stats(list(first.values())),
            "all": stats([u["send_ts"] - u["capture_ts"] for u in updates]),
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="small,default")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--work", default="/tmp/bench-pipeline")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pipeline_cpu.json"))
    args = parser.parse_args()
    from edge.scene.generator import SceneSettings, write_scene
    from engines.export import export_model
    from trainer.model import build_mpanet

    work = Path(args.work)
    scene_dir = work / "scene"
    settings = SceneSettings(
        seed=3, duration_s=args.duration_s, fps=10.0, width=640, height=480, num_people=args.people
    )
    scene = json.loads(write_scene(settings, scene_dir).read_text())
    report: dict[str, Any] = {
        "load_average_before": os.getloadavg(),
        "scene": {
            "cameras": 2,
            "size": "640x480",
            "fps": 10,
            "duration_s": args.duration_s,
            "people": args.people,
        },
        "detectors": "hog (RGB), thermal (IR)",
        "tracker": "bytetrack",
        "backend": "onnxruntime CPU FP32",
        "models": {},
    }
    for name in args.models.split(","):
        spec = MODELS[name]
        model_path = work / f"{name}.onnx"
        if not model_path.is_file():
            export_model(build_mpanet(**spec, num_classes=100).eval(), model_path)
        rows = [
            run(model_path, scene, scene_dir, work / f"{name}-{mode}", mode) for mode in ("replay", "live")
        ]
        report["models"][name] = {**spec, "runs": rows}
        print(name, json.dumps(rows, indent=1), flush=True)
    report["machine"] = machine_info()
    write_report(args.out, report)


if __name__ == "__main__":
    main()
