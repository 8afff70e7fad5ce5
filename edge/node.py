"""The edge node: sources -> detect -> track -> crop gate -> batched embedding -> ZeroMQ.

One loop on one thread (live sources grab on their own threads): each step takes at most one frame
per camera (replay: exactly one from every camera still streaming, in camera order, so the output
is deterministic), detects and tracks per camera, embeds the accepted crops of all cameras in one
batch, updates each track's aggregated embedding, and publishes one SightingBatch per frame.
Heartbeats go out every ``heartbeat_interval_s``; every camera's stream ends with an EndOfStream,
and the node's own with a final producer-level EndOfStream.

Start one from a config::

    node = build_node(load_node_config(["configs/node-video.yaml"]))
    report = node.run()          # blocks; node.stop() from another thread (or SIGINT in the CLI)

or ``python -m edge.node --config configs/node-video.yaml [key=value ...]``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.configuring import settings_from
from edge.aggregation import TrackEmbeddings
from edge.crops import CropGate, cut_crops
from edge.detect.detections import Detections
from edge.detect.factory import Detector, build_detector
from edge.messages import EndOfStream, Heartbeat, SightingBatch
from edge.sinks import AnnotatedVideoWriter, SightingsLog
from edge.sources.frame import Frame, SourceError, StreamEnd
from edge.sources.streams import FrameSource
from edge.tracking import CameraTracker, TrackerSettings

log = logging.getLogger(__name__)


class StageClock:
    """Per-stage call counts and time over the current heartbeat interval."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._seconds: dict[str, float] = {}
        self._since = clock()

    def time(self, stage: str) -> _Timing:
        return _Timing(self, stage)

    def add(self, stage: str, seconds: float, items: int = 1) -> None:
        self._counts[stage] = self._counts.get(stage, 0) + items
        self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    def snapshot(self) -> tuple[dict[str, float], dict[str, float]]:
        """(rates in items/s, mean ms per item) since the last snapshot; then starts a new interval."""
        now = self._clock()
        elapsed = max(now - self._since, 1e-9)
        rates = {k: n / elapsed for k, n in self._counts.items()}
        latency = {k: 1000.0 * self._seconds[k] / max(n, 1) for k, n in self._counts.items()}
        self._counts, self._seconds, self._since = {}, {}, now
        return rates, latency


class _Timing:
    def __init__(self, clock: StageClock, stage: str) -> None:
        self.clock, self.stage, self.items = clock, stage, 1

    def __enter__(self) -> _Timing:
        self.start = self.clock._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.clock.add(self.stage, self.clock._clock() - self.start, self.items)


@dataclass
class Camera:
    """One camera's stages: its source, detector and tracker settings (the tracker is built at the
    first frame, when the source knows its frame rate)."""

    source: FrameSource
    detector: Detector
    tracker_settings: TrackerSettings
    default_fps: float = 25.0
    tracker: CameraTracker | None = None
    seq: int = 0
    frames: int = 0
    end: StreamEnd | None = None

    @property
    def camera_id(self) -> str:
        return self.source.camera_id


@dataclass
class NodeReport:
    """What a finished :meth:`EdgeNode.run` did."""

    reason: str = "source_ended"
    frames: dict[str, int] = field(default_factory=dict)
    sightings: dict[str, int] = field(default_factory=dict)
    messages_sent: int = 0
    messages_dropped: int = 0
    frames_dropped: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0


class EdgeNode:
    """Runs cameras through detection, tracking and embedding and publishes the results.

    Args:
        producer_id: this node's id on the wire.
        mode: ``live`` or ``replay`` (must match the sources and the publisher's transport).
        cameras: the :class:`Camera` units (unique camera ids).
        publisher: anything with ``send(message, embeddings) -> bool`` (an ``edge.transport.Publisher``).
        embedder: an ``engines.runtime.Embedder`` (``None``: sightings without embeddings).
        crop_gate: which sightings get embedded.
        embedding_dtype: ``float16`` or ``float32`` on the wire.
        heartbeat_interval_s: seconds between heartbeats.
        track_max_age_s: forget a track's aggregate this long after its last crop (stream time).
        video_writer, sightings_log: optional sinks.
        live_poll_s: live mode: wait this long when no camera has a new frame.
        clock: wall-clock seconds (send timestamps, uptime).
    """

    def __init__(
        self,
        producer_id: str,
        mode: str,
        cameras: Sequence[Camera],
        publisher: Any,
        *,
        embedder: Any | None = None,
        crop_gate: CropGate | None = None,
        embedding_dtype: str = "float16",
        heartbeat_interval_s: float = 1.0,
        track_max_age_s: float = 30.0,
        video_writer: AnnotatedVideoWriter | None = None,
        sightings_log: SightingsLog | None = None,
        live_poll_s: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in ("live", "replay"):
            raise ValueError(f"mode must be 'live' or 'replay', got {mode!r}")
        ids = [c.camera_id for c in cameras]
        if not cameras or len(set(ids)) != len(ids):
            raise ValueError(f"a node needs cameras with unique ids, got {ids}")
        for camera in cameras:
            if camera.source.mode != mode:
                raise ValueError(
                    f"camera {camera.camera_id} is a {camera.source.mode} source in a {mode} node"
                )
        self.producer_id = producer_id
        self.mode = mode
        self.cameras = list(cameras)
        self.publisher = publisher
        self.embedder = embedder
        self.crop_gate = crop_gate or CropGate()
        self.embedding_dtype = embedding_dtype
        self.heartbeat_interval_s = heartbeat_interval_s
        self.tracks = TrackEmbeddings(max_age_s=track_max_age_s)
        self.video_writer = video_writer
        self.sightings_log = sightings_log
        self.live_poll_s = live_poll_s
        self.clock = clock
        self.stop_event = threading.Event()
        self.stages = StageClock()
        self._node_seq = 0
        self._started = 0.0
        self._next_heartbeat = 0.0
        self.report = NodeReport()

    @property
    def engine_id(self) -> str:
        return self.embedder.engine_id if self.embedder is not None else ""

    def stop(self) -> None:
        """Ask :meth:`run` to finish: it sends end-of-stream messages and returns."""
        self.stop_event.set()

    # ------------------------------------------------------------------------------------------ run

    def run(self) -> NodeReport:
        """Process until every source ended or :meth:`stop` was called; always ends with end-of-stream
        messages (per camera and for the node) and closes sources and sinks."""
        self._started = self.clock()
        self._next_heartbeat = self._started
        started_at = time.monotonic()
        reason, detail = "source_ended", ""
        try:
            for camera in self.cameras:
                camera.source.start()
            while not self.stop_event.is_set() and any(c.end is None for c in self.cameras):
                frames = self._gather()
                if frames:
                    self._process(frames)
                elif self.mode == "live":
                    self.stop_event.wait(self.live_poll_s)
                if self.clock() >= self._next_heartbeat:
                    self._heartbeat()
            if self.stop_event.is_set():
                reason = "stopped"
        except Exception as exc:
            reason, detail = "error", f"{type(exc).__name__}: {exc}"
            log.error("node %s failed: %s", self.producer_id, detail)
            raise
        finally:
            self._finish(reason, detail)
            self.report.duration_s = time.monotonic() - started_at
        return self.report

    def _gather(self) -> list[tuple[Camera, Frame]]:
        frames = []
        for camera in self.cameras:
            if camera.end is not None:
                continue
            with self.stages.time(f"capture/{camera.camera_id}"):
                item = camera.source.next_frame(timeout_s=None if self.mode == "replay" else 0.0)
            if isinstance(item, StreamEnd):
                self._end_camera(camera, item)
            elif item is not None:
                frames.append((camera, item))
        return frames

    def _process(self, frames: list[tuple[Camera, Frame]]) -> None:
        tracked: list[Detections] = []
        qualities: list[np.ndarray] = []
        crops: list[np.ndarray] = []
        owners: list[tuple[int, np.ndarray]] = []  # (frame position, rows with a crop)
        for position, (camera, frame) in enumerate(frames):
            with self.stages.time(f"detect/{camera.camera_id}"):
                detections = camera.detector(frame)
            if camera.tracker is None:
                fps = getattr(camera.source, "fps", None) or camera.default_fps
                camera.tracker = CameraTracker(camera.tracker_settings, fps)
            with self.stages.time(f"track/{camera.camera_id}"):
                tracks = camera.tracker(detections, frame.image)
            quality = self.crop_gate.quality(tracks, frame.width, frame.height)
            tracked.append(tracks)
            qualities.append(quality)
            if self.embedder is not None:
                rows = np.flatnonzero(quality > 0)
                if rows.size:
                    crops.extend(cut_crops(frame.image, tracks.xyxy[rows]))
                    owners.append((position, rows))
        if crops:
            with self.stages.time("embed") as timing:
                timing.items = len(crops)
                embeddings = self.embedder.embed_crops(crops, input_order="BGR")
            start = 0
            for position, rows in owners:
                camera, frame = frames[position]
                part = embeddings[start : start + rows.size]
                start += rows.size
                ids = tracked[position].track_ids[rows]  # type: ignore[index]
                self.tracks.update(camera.camera_id, ids, part, qualities[position][rows], frame.timestamp)
        for (camera, frame), tracks, quality in zip(frames, tracked, qualities):
            self._publish(camera, frame, tracks, quality)
            self.tracks.expire(frame.timestamp, camera_id=camera.camera_id)

    def _publish(self, camera: Camera, frame: Frame, tracks: Detections, quality: np.ndarray) -> None:
        ids = tracks.track_ids if tracks.track_ids is not None else np.zeros(0, np.int64)
        rows, vectors = (
            self.tracks.get(camera.camera_id, ids)
            if self.embedder is not None
            else (np.zeros(0, np.int64), None)
        )
        batch = SightingBatch(
            producer_id=self.producer_id,
            camera_id=camera.camera_id,
            seq=camera.seq,
            capture_ts=frame.timestamp,
            send_ts=self.clock(),
            engine_id=self.engine_id,
            modality=camera.source.modality,
            frame_index=frame.index,
            frame_width=frame.width,
            frame_height=frame.height,
            boxes=tracks.xyxy.tolist(),
            track_ids=ids.tolist(),
            scores=tracks.scores.tolist(),
            quality=quality.tolist(),
            embedding_rows=rows.tolist(),
            embedding_dtype=self.embedding_dtype,  # type: ignore[arg-type]
            embedding_shape=vectors.shape if rows.size else (0, 0),  # type: ignore[union-attr]
        )
        with self.stages.time("publish"):
            self._send(batch, vectors if rows.size else None)
        camera.seq += 1
        camera.frames += 1
        self.report.frames[camera.camera_id] = camera.frames
        self.report.sightings[camera.camera_id] = self.report.sightings.get(camera.camera_id, 0) + len(tracks)
        if self.video_writer is not None:
            fps = getattr(camera.source, "fps", None) or camera.default_fps
            self.video_writer.write(frame, batch, fps=fps)
        if self.sightings_log is not None:
            self.sightings_log.write(batch)

    def _send(self, message: Any, embeddings: np.ndarray | None = None) -> None:
        if self.publisher.send(message, embeddings):
            self.report.messages_sent += 1
        else:
            self.report.messages_dropped += 1

    def _heartbeat(self) -> None:
        rates, latency = self.stages.snapshot()
        queue_depths, drops, reconnects = {}, {}, {}
        for camera in self.cameras:
            stats = camera.source.stats()
            queue_depths[f"frames/{camera.camera_id}"] = stats.queue_depth
            drops[f"frames/{camera.camera_id}"] = stats.frames_dropped
            reconnects[camera.camera_id] = stats.reconnects
        drops["publish"] = getattr(self.publisher, "dropped", 0)
        now = self.clock()
        heartbeat = Heartbeat(
            producer_id=self.producer_id,
            camera_id="",
            seq=self._node_seq,
            capture_ts=now,
            send_ts=now,
            engine_id=self.engine_id,
            mode=self.mode,  # type: ignore[arg-type]
            uptime_s=now - self._started,
            camera_ids=[c.camera_id for c in self.cameras],
            stage_rates_hz=rates,
            stage_latency_ms=latency,
            queue_depths=queue_depths,
            drop_counts=drops,
            reconnects=reconnects,
        )
        self._node_seq += 1
        self._send(heartbeat)
        self._next_heartbeat = now + self.heartbeat_interval_s

    def _end_camera(self, camera: Camera, end: StreamEnd) -> None:
        camera.end = end
        stats = camera.source.stats()
        self.report.frames_dropped[camera.camera_id] = stats.frames_dropped
        now = self.clock()
        message = EndOfStream(
            producer_id=self.producer_id,
            camera_id=camera.camera_id,
            seq=camera.seq,
            capture_ts=now,
            send_ts=now,
            engine_id=self.engine_id,
            reason=end.reason,  # type: ignore[arg-type]
            frames_read=camera.frames,
            frames_dropped=stats.frames_dropped,
            messages_sent=camera.seq,
            detail=end.detail,
        )
        camera.seq += 1
        self._send(message)
        if end.reason == "error":
            log.error("camera %s ended with an error: %s", camera.camera_id, end.detail)

    def _finish(self, reason: str, detail: str) -> None:
        try:
            self._send_endings(reason, detail)
        except Exception as exc:  # e.g. a replay send timing out: still close everything below
            log.error("node %s could not send its end-of-stream messages: %s", self.producer_id, exc)
            if reason != "error":  # an error already propagating stays the one reported
                raise
        finally:
            self.report.reason = reason
            self.report.messages_dropped = max(
                self.report.messages_dropped, getattr(self.publisher, "dropped", 0)
            )
            for camera in self.cameras:
                camera.source.close()
            for sink in (self.video_writer, self.sightings_log):
                if sink is not None:
                    sink.close()

    def _send_endings(self, reason: str, detail: str) -> None:
        """End-of-stream for every camera still open, a last heartbeat, the node's end-of-stream."""
        for camera in self.cameras:
            if camera.end is None:
                camera.source.close()
                end = StreamEnd(camera.camera_id, "stopped" if reason != "error" else "error", detail)
                self._end_camera(camera, end)
        self._heartbeat()
        now = self.clock()
        self._send(
            EndOfStream(
                producer_id=self.producer_id,
                camera_id="",
                seq=self._node_seq,
                capture_ts=now,
                send_ts=now,
                engine_id=self.engine_id,
                reason=reason,  # type: ignore[arg-type]
                frames_read=sum(c.frames for c in self.cameras),
                frames_dropped=sum(self.report.frames_dropped.values()),
                messages_sent=self._node_seq,
                detail=detail,
            )
        )
        self._node_seq += 1


# ---------------------------------------------------------------------------------------- building


def build_source(config: Any, mode: str) -> FrameSource:
    """A live or replay source from a :class:`edge.config.SourceConfig`."""
    from edge.sources import readers
    from edge.sources.streams import LiveSource, ReplaySource
    from edge.sources.thermal import ThermalNormalizer

    thermal = settings_from(ThermalNormalizer, config.thermal)

    def open_reader() -> readers.FrameReader:
        if config.kind == "file":
            return readers.VideoFileReader(config.path)
        if config.kind == "folder":
            return readers.FolderReader(config.path, config.pattern, fps=config.fps)
        if config.kind == "url":
            return readers.UrlReader(config.url, config.open_timeout_ms, config.read_timeout_ms)
        if config.kind == "usb":
            return readers.UsbReader(config.device_index)
        from edge.scene import SceneSettings, SyntheticSceneReader

        settings = settings_from(
            SceneSettings, config.synthetic, dataset_pids=tuple(config.synthetic.dataset_pids)
        )
        return SyntheticSceneReader(settings, camera=config.synthetic.camera)

    if mode == "replay":
        return ReplaySource(
            open_reader(),
            config.camera_id,
            config.modality,
            fps=config.fps,
            pace=config.pace,
            max_frames=config.max_frames,
            thermal=thermal,
        )
    return LiveSource(
        open_reader,
        config.camera_id,
        config.modality,
        queue_size=config.live.queue_size,
        reconnect=config.live.reconnect,
        backoff_initial_s=config.live.backoff_initial_s,
        backoff_max_s=config.live.backoff_max_s,
        max_reconnect_attempts=config.live.max_reconnect_attempts,
        pace_finite=config.live.pace_finite,
        thermal=thermal,
    )


def build_node(config: Any, *, embedder: Any | None = None, publisher: Any | None = None) -> EdgeNode:
    """An :class:`EdgeNode` from a :class:`edge.config.NodeConfig` (the only place that reads it).

    Args:
        config: the node config.
        embedder: an already loaded ``Embedder`` (default: ``engines.runtime.load_embedder(embedder.path)``
            when the config names one).
        publisher: a publisher to use instead of binding ``config.transport`` (tests).
    """
    cameras = []
    for source_config in config.sources:
        detector = build_detector(source_config.detector.name, **source_config.detector.arguments())
        cameras.append(
            Camera(
                source=build_source(source_config, config.mode),
                detector=detector,
                tracker_settings=settings_from(TrackerSettings, config.tracker),
                default_fps=source_config.fps or 25.0,
            )
        )
    if embedder is None and config.embedder.path:
        from engines.runtime import load_embedder

        embedder = load_embedder(config.embedder.path, device=config.embedder.device)
    if publisher is None:
        from edge.transport import Publisher, TransportSettings

        publisher = Publisher(settings_from(TransportSettings, config.transport, mode=config.mode))
    out = config.outputs
    writer = None
    if out.annotated_video_dir:
        # Each camera's file is written at its own source's rate (known once the source is open).
        writer = AnnotatedVideoWriter(out.annotated_video_dir, fourcc=out.video_fourcc)
    return EdgeNode(
        config.producer_id,
        config.mode,
        cameras,
        publisher,
        embedder=embedder,
        crop_gate=settings_from(CropGate, config.crops),  # a copy: the node never shares config state
        embedding_dtype=config.embedder.embedding_dtype,
        heartbeat_interval_s=config.heartbeat_interval_s,
        track_max_age_s=config.embedder.track_max_age_s,
        video_writer=writer,
        sightings_log=SightingsLog(out.sightings_jsonl) if out.sightings_jsonl else None,
        live_poll_s=config.live_poll_ms / 1000.0,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.node --config node.yaml [key=value ...]``: run a node until its sources end
    (replay) or SIGINT/SIGTERM (live); prints the report as JSON."""
    import json

    from common.configuring import ConfigError
    from edge.config import load_node_config

    parser = argparse.ArgumentParser(prog="python -m edge.node", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", default=[], help="YAML config (repeatable, later wins)")
    parser.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. mode=live")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_node_config(args.config, args.overrides)
        node = build_node(config)
    except (
        ConfigError,
        SourceError,
        ValueError,
        RuntimeError,
        OSError,
    ) as exc:  # OSError: a missing model file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: node.stop())
    if args.duration_s is not None:
        timer = threading.Timer(args.duration_s, node.stop)
        timer.daemon = True
        timer.start()
    from edge.transport import TransportError

    try:
        report = node.run()
    except TransportError as exc:  # e.g. no receiver connected: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        close = getattr(node.publisher, "close", None)
        if close is not None:
            close()
    print(json.dumps(report.__dict__, indent=2, sort_keys=True))
    return 0 if report.reason != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
