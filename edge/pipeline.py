"""Run a whole pipeline on one machine: a linker and any number of edge nodes, each in its own
process, connected over loopback ZeroMQ; then score and draw the run.

This is the ``all`` role of ``run_pipeline.py`` (and what the demo runs). Each role runs its normal
command line (``python -m edge.linking`` / ``python -m edge.node``) from a resolved config written to
``<output_dir>/configs/``, its output logged to ``<output_dir>/logs/``. Ctrl-C or SIGTERM stops the
nodes first (they send end-of-stream), then the linker (it snapshots); the outputs are closed and
playable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.configuring import ConfigError, save_resolved_config, settings_from
from common.files import atomic_write_text
from edge.config import (
    DetectorConfig,
    EmbedderConfig,
    LiveConfig,
    NodeConfig,
    SourceConfig,
    TransportConfig,
)
from edge.linking.config import LinkerConfig

_LOG = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """The ``all`` role: nodes + linker on this machine.

    Attributes:
        output_dir: where configs, logs, sightings, the linker state and the results go.
        mode: ``replay`` (every frame, nothing dropped; ends when the sources end) or ``live``.
        nodes: the edge nodes (their ``mode`` is set to ``mode``; an empty ``outputs.sightings_jsonl``
            becomes ``<output_dir>/sightings/<producer_id>.jsonl``; ``transport.endpoint`` ``auto``
            picks a free loopback port).
        linker: the linker (its inputs become the nodes' endpoints; its state goes to
            ``<output_dir>/linker`` unless set; in replay it stops when every node ended).
        ground_truth: optional camera id -> MOTChallenge gt.txt with global person ids: the run is
            then scored (IDF1, cross-modality link precision/recall).
        side_by_side: write ``side_by_side.mp4`` (all file-source cameras, boxes by global identity).
        video_fourcc: codec of that video (``mp4v`` -> .mp4, ``MJPG`` -> .avi).
        stop_timeout_s: how long to wait for a role to stop cleanly before killing it.
        fresh: start a new run: clear the linker state, sightings and logs of a previous run in
            ``output_dir`` first. ``false`` (default) resumes: a linker that finds its snapshot and
            journal continues from them (after a crash, nothing it published is lost).
    """

    output_dir: str = "outputs/pipeline"
    mode: str = "replay"
    nodes: list[NodeConfig] = field(default_factory=list)
    linker: LinkerConfig = field(default_factory=LinkerConfig)
    ground_truth: dict[str, str] = field(default_factory=dict)
    side_by_side: bool = True
    video_fourcc: str = "mp4v"
    stop_timeout_s: float = 30.0
    fresh: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("live", "replay"):
            raise ValueError(f"mode must be 'live' or 'replay', got {self.mode!r}")
        if not self.nodes:
            raise ValueError("the pipeline config has no nodes (add at least one under 'nodes:')")
        producers = [n.producer_id for n in self.nodes]
        if len(set(producers)) != len(producers):
            raise ValueError(f"node producer_ids must be unique, got {producers}")
        cameras = [s.camera_id for n in self.nodes for s in n.sources]
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"camera ids must be unique across nodes, got {cameras}")


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced (paths are inside ``output_dir``)."""

    output_dir: Path
    exit_codes: dict[str, int]
    stopped_by_signal: bool
    sightings: list[Path]
    identity_updates: Path
    summary: dict[str, Any]
    side_by_side: Path | None = None


class PipelineError(RuntimeError):
    """A role failed; the message names it and its log file."""


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SCENE_DETECTORS = ("offline", "ground_truth")


def scene_nodes(
    scene: Mapping[str, Any],
    scene_dir: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    mode: str = "replay",
    detector: str = "offline",
    live: LiveConfig | None = None,
) -> tuple[list[NodeConfig], dict[str, str]]:
    """One edge node per camera of a rendered synthetic scene, and each camera's ground-truth file.

    Args:
        scene: the scene description ``edge.scene.write_scene`` wrote (its JSON, loaded).
        scene_dir: the folder it was written to (videos and ground truth are relative to it).
        model: the engine artifact every node embeds with.
        mode: ``replay`` or ``live``.
        detector: ``offline`` (HOG on the visible camera, hot regions on the infrared one) or
            ``ground_truth`` (the scene's own boxes through the ``mot`` backend: measures linking,
            not detection).
        live: live-mode source settings (default :class:`~edge.config.LiveConfig`).

    Returns:
        (node configs with ``transport.endpoint`` ``auto``, {camera id: MOT gt.txt path}).
    """
    if detector not in SCENE_DETECTORS:
        raise ValueError(f"detector must be one of {SCENE_DETECTORS}, got {detector!r}")
    folder = Path(scene_dir)
    nodes, truth = [], {}
    for camera in scene["cameras"]:
        gt = str(folder / camera["ground_truth"])
        truth[camera["camera_id"]] = gt
        if detector == "ground_truth":
            chosen = DetectorConfig(name="mot", settings={"path": gt})
        else:
            chosen = DetectorConfig(name="hog" if camera["modality"] == "visible" else "thermal")
        source = SourceConfig(
            camera_id=camera["camera_id"],
            modality=camera["modality"],
            kind="file",
            path=str(folder / camera["video"]),
            fps=scene["settings"]["fps"],
            detector=chosen,
            live=live or LiveConfig(),
        )
        nodes.append(
            NodeConfig(
                producer_id=f"node-{camera['camera_id']}",
                mode=mode,
                sources=[source],
                embedder=EmbedderConfig(path=str(model)),
                transport=TransportConfig(endpoint="auto"),
            )
        )
    return nodes, truth


def prepare(config: PipelineConfig) -> tuple[list[NodeConfig], LinkerConfig]:
    """Fill in what the roles need to find each other and where their outputs go."""
    out = Path(config.output_dir)
    nodes = []
    endpoints = []
    for node in config.nodes:
        node = dataclasses.replace(node, mode=config.mode)
        transport = node.transport
        if transport.endpoint == "auto":
            transport = dataclasses.replace(transport, endpoint=f"tcp://127.0.0.1:{free_port()}", bind=True)
        outputs = node.outputs
        if not outputs.sightings_jsonl:
            outputs = dataclasses.replace(
                outputs, sightings_jsonl=str(out / "sightings" / f"{node.producer_id}.jsonl")
            )
        for source in node.sources:
            if source.kind == "file" and not Path(source.path).is_file():
                raise ConfigError(
                    f"node {node.producer_id} camera {source.camera_id}: video {source.path} does not exist"
                )
        nodes.append(dataclasses.replace(node, transport=transport, outputs=outputs))
        endpoints.append(
            transport.endpoint.replace("tcp://*:", "tcp://127.0.0.1:").replace(
                "tcp://0.0.0.0:", "tcp://127.0.0.1:"
            )
        )
    linker = config.linker
    persistence = linker.persistence
    if persistence.state_dir == "outputs/linker":  # the schema default: keep the run's state inside the run
        persistence = dataclasses.replace(persistence, state_dir=str(out / "linker"))
    service = dataclasses.replace(
        linker.service,
        mode=config.mode,
        input_endpoints=endpoints,
        bind_inputs=False,
        expected_producers=len(nodes) if config.mode == "replay" else 0,
    )
    if service.publish_endpoint.endswith(":auto"):
        service = dataclasses.replace(service, publish_endpoint=f"tcp://127.0.0.1:{free_port()}")
    calibration = linker.calibration
    gallery = linker.gallery
    engines = sorted({n.embedder.path for n in nodes if n.embedder.path})
    if not calibration.engine and len(engines) == 1:
        # The linker takes the thresholds measured for the nodes' engine (edge.linking.calibration)
        # and is pinned to that engine (never to whoever sends first).
        calibration = dataclasses.replace(calibration, engine=engines[0])
    if not (gallery.engine_id or gallery.adopt_engine) and len(engines) == 1 and engines[0].endswith(".pt"):
        # A .pt checkpoint's engine id depends on the precision the node runs it at: the linker
        # adopts the first engine instead, as every role here is this pipeline's own process on loopback.
        gallery = dataclasses.replace(gallery, adopt_engine=True)
    return nodes, dataclasses.replace(
        linker, persistence=persistence, service=service, calibration=calibration, gallery=gallery
    )


def run_pipeline(config: PipelineConfig, progress: bool = True) -> PipelineResult:
    """Start the linker and the nodes, wait for them (or for Ctrl-C / SIGTERM), then score and draw.

    Raises:
        PipelineError: a role exited with an error (its log file is named).
    """
    out = Path(config.output_dir)
    nodes, linker = prepare(config)
    if config.fresh:
        import shutil

        for folder in (Path(linker.persistence.state_dir), out / "sightings", out / "logs"):
            shutil.rmtree(folder, ignore_errors=True)
        for node in nodes:
            Path(node.outputs.sightings_jsonl).unlink(missing_ok=True)
    for folder in ("configs", "logs", "sightings"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    save_resolved_config(config, out / "configs" / "pipeline.yaml")
    linker_yaml = save_resolved_config(linker, out / "configs" / "linker.yaml")
    roles: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}

    def start(name: str, module: str, config_path: Path) -> None:
        logs[name] = out / "logs" / f"{name}.log"
        with open(logs[name], "wb") as log:
            roles[name] = subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    stopped = {"signal": False}
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, _frame: Any) -> None:
        stopped["signal"] = True

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        start("linker", "edge.linking", linker_yaml)
        for node in nodes:
            start(
                f"node-{node.producer_id}",
                "edge.node",
                save_resolved_config(node, out / "configs" / f"node-{node.producer_id}.yaml"),
            )
        _wait(roles, nodes, config, stopped, progress)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop_all(roles, config.stop_timeout_s)
    codes = {name: proc.returncode for name, proc in roles.items()}
    failed = {n: c for n, c in codes.items() if c not in (0, -signal.SIGTERM)}
    if failed:
        name = next(iter(failed))
        tail = logs[name].read_text(errors="replace")[-2000:]
        raise PipelineError(f"{name} exited with status {failed[name]}; see {logs[name]}:\n{tail}")
    return _finish(config, nodes, linker, codes, stopped["signal"])


def _wait(
    roles: dict[str, subprocess.Popen],
    nodes: list[NodeConfig],
    config: PipelineConfig,
    stopped: dict[str, bool],
    progress: bool,
) -> None:
    from tqdm import tqdm

    logs = [_LineCounter(Path(n.outputs.sightings_jsonl)) for n in nodes]
    bar = tqdm(desc="frames processed", unit="frame", disable=not progress, dynamic_ncols=True)
    node_names = [name for name in roles if name.startswith("node-")]
    try:
        while True:
            done = sum(log.count() for log in logs)
            bar.update(done - bar.n)
            if stopped["signal"]:
                return
            crashed = [n for n, p in roles.items() if p.poll() not in (None, 0)]
            if crashed:
                return
            if all(roles[n].poll() is not None for n in node_names):
                if config.mode == "live" or roles["linker"].poll() is not None:
                    return
                # Replay: the linker stops by itself once it has every node's end-of-stream.
                try:
                    roles["linker"].wait(timeout=config.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    _LOG.warning(
                        "linker did not finish within %.0f s after the nodes ended", config.stop_timeout_s
                    )
                return
            time.sleep(0.2)
    finally:
        bar.close()


def _stop_all(roles: dict[str, subprocess.Popen], timeout_s: float) -> None:
    """Nodes first (they send end-of-stream), then the linker (final snapshot); kill what hangs."""
    ordered = [n for n in roles if n != "linker"] + (["linker"] if "linker" in roles else [])
    for name in ordered:
        proc = roles[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _LOG.error("%s did not stop within %.0f s; killing it", name, timeout_s)
                proc.kill()
                proc.wait()


class _LineCounter:
    """Lines (frame records) of a growing log, counted incrementally: each call reads only what was
    appended since the last one, so polling a long run's logs stays cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._offset = 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                for chunk in iter(lambda: handle.read(1 << 16), b""):
                    self.lines += chunk.count(b"\n")
                    self._offset += len(chunk)
        except FileNotFoundError:
            pass
        return self.lines


def _finish(
    config: PipelineConfig,
    nodes: list[NodeConfig],
    linker: LinkerConfig,
    codes: dict[str, int],
    by_signal: bool,
) -> PipelineResult:
    from edge.evaluation.scoring import (
        identity_timelines,
        read_mot_ground_truth,
        read_sightings,
        score_linking,
        sighting_identities,
    )
    from edge.linking.publishing import read_updates

    out = Path(config.output_dir)
    sighting_logs = [
        Path(n.outputs.sightings_jsonl) for n in nodes if Path(n.outputs.sightings_jsonl).is_file()
    ]
    sightings = read_sightings(sighting_logs)
    updates = read_updates(linker.updates_path)
    summary: dict[str, Any] = {
        "mode": config.mode,
        "stopped_by_signal": by_signal,
        "exit_codes": codes,
        "cameras": {s.camera_id: s.modality for n in nodes for s in n.sources},
        "sightings": len(sightings),
        "identity_updates": len(updates),
        "identities": len({u["global_id"] for u in updates}),
    }
    stats_file = Path(linker.persistence.state_dir) / "linker_stats.json"
    if stats_file.is_file():
        with contextlib.suppress(ValueError):
            summary["linker_stats"] = json.loads(stats_file.read_text())
            # Which thresholds linked this run, and whether they were measured for the engine.
            summary["calibration"] = summary["linker_stats"].get("calibration")
    if config.ground_truth:
        truth = {camera: read_mot_ground_truth(path) for camera, path in config.ground_truth.items()}
        summary["score"] = score_linking(sightings, updates, truth).to_dict()
    video = None
    recorded = [s for n in nodes for s in n.sources if s.kind in ("file", "folder")]
    skipped = [s.camera_id for n in nodes for s in n.sources if s.kind not in ("file", "folder")]
    if config.side_by_side:
        if not recorded or not sightings:
            why = "no file or folder camera" if not recorded else "no sightings"
            summary["side_by_side"] = f"not written: {why}"
            _LOG.warning("side-by-side video not written: %s", why)
        else:
            from edge.side_by_side import CameraVideo, write_side_by_side
            from edge.sources.thermal import ThermalNormalizer

            final = sighting_identities(sightings, identity_timelines(updates), "online")
            suffix = ".avi" if config.video_fourcc.upper() == "MJPG" else ".mp4"
            fps = next((s.fps for s in recorded if s.fps), None) or _video_fps(recorded[0].path)
            video = write_side_by_side(
                [
                    CameraVideo(
                        s.camera_id,
                        s.modality,
                        Path(s.path),
                        kind=s.kind,
                        pattern=s.pattern,
                        thermal=settings_from(ThermalNormalizer, s.thermal),
                    )
                    for s in recorded
                ],
                sightings,
                final,
                out / f"side_by_side{suffix}",
                fps=fps,
                fourcc=config.video_fourcc,
            )
            summary["side_by_side"] = str(video)
            if skipped:
                _LOG.warning("side-by-side video leaves out live cameras %s (no recording)", skipped)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return PipelineResult(
        output_dir=out,
        exit_codes=codes,
        stopped_by_signal=by_signal,
        sightings=sighting_logs,
        identity_updates=linker.updates_path,
        summary=summary,
        side_by_side=video,
    )


def _video_fps(path: str) -> float:
    import cv2

    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    capture.release()
    return float(fps)
