"""The edge node's config schema (dataclasses loaded by ``common.configuring.load_config``).

YAML files and ``key=value`` overrides fill :class:`NodeConfig`; the entry point
(:func:`edge.node.build_node`) turns it into typed arguments -- library code never sees it whole.
Modalities accept the YAML aliases ``rgb`` / ``thermal`` (normalised to ``visible`` / ``infrared``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.configuring import load_config
from common.modality import Modality

SOURCE_KINDS = ("file", "folder", "url", "usb", "synthetic")


@dataclass
class ThermalConfig:
    """See :class:`edge.sources.thermal.ThermalNormalizer`."""

    low_percentile: float = 1.0
    high_percentile: float = 99.0
    smoothing: float = 0.0
    stretch_8bit: bool = False


@dataclass
class DetectorConfig:
    """``name``: ``yolo`` | ``hog`` | ``thermal`` | ``mot``; ``settings``: that backend's arguments
    (e.g. ``{weights: models/yolo11n.pt, confidence_min: 0.3}``); unknown ones are an error."""

    name: str = "hog"
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class LiveConfig:
    """Live-mode behaviour of a source (see :class:`edge.sources.streams.LiveSource`)."""

    queue_size: int = 1
    reconnect: bool = True
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_reconnect_attempts: int | None = None


@dataclass
class SyntheticConfig:
    """A synthetic scene rendered on the fly (see :mod:`edge.scene`); ``camera`` picks which of
    its cameras this source is (0 = visible, 1 = infrared)."""

    seed: int = 0
    duration_s: float = 20.0
    fps: float = 10.0
    width: int = 640
    height: int = 480
    num_people: int = 6
    camera: int = 0


@dataclass
class SourceConfig:
    """One camera.

    Attributes:
        camera_id: unique per node. modality: ``visible``/``infrared`` (or ``rgb``/``thermal``).
        kind: ``file`` (``path``), ``folder`` (``path`` + ``pattern``), ``url`` (``url``), ``usb``
            (``device_index``), ``synthetic`` (``synthetic``).
        fps: frame rate for timestamps when the source has none (folders) or to override it.
        pace: replay in real time. max_frames: stop after this many frames (replay).
        open_timeout_ms, read_timeout_ms: URL streams.
    """

    camera_id: str = ""
    modality: str = "visible"
    kind: str = "file"
    path: str = ""
    pattern: str = "*"
    url: str = ""
    device_index: int = 0
    fps: float | None = None
    pace: bool = False
    max_frames: int | None = None
    open_timeout_ms: int = 5000
    read_timeout_ms: int = 5000
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if not self.camera_id:
            raise ValueError("every source needs a camera_id")
        self.modality = Modality.parse(self.modality).value
        if self.kind not in SOURCE_KINDS:
            raise ValueError(
                f"source {self.camera_id}: kind must be one of {SOURCE_KINDS}, got {self.kind!r}"
            )
        if self.kind in ("file", "folder") and not self.path:
            raise ValueError(f"source {self.camera_id}: kind {self.kind!r} needs a path")
        if self.kind == "url" and not self.url:
            raise ValueError(f"source {self.camera_id}: kind 'url' needs a url")


@dataclass
class TrackerConfig:
    """See :class:`edge.tracking.TrackerSettings`."""

    kind: str = "bytetrack"
    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    match_thresh: float = 0.8
    fuse_score: bool = True
    max_age_s: float = 1.0
    gmc_method: str = "none"


@dataclass
class CropConfig:
    """See :class:`edge.crops.CropGate`."""

    min_height_px: float = 48.0
    min_width_px: float = 12.0
    border_margin_px: float = 2.0
    reject_cut: bool = True
    full_quality_height_px: float = 128.0


@dataclass
class EmbedderConfig:
    """``path``: an engine artifact (``.onnx`` / ``.plan`` / ``.pt``) for ``engines.runtime.load_embedder``;
    empty = no embeddings (sightings only). ``embedding_dtype`` on the wire: ``float16`` | ``float32``."""

    path: str = ""
    device: str = "cpu"
    embedding_dtype: str = "float16"
    track_max_age_s: float = 30.0


@dataclass
class TransportConfig:
    """See :class:`edge.transport.TransportSettings` (``mode`` comes from the node)."""

    endpoint: str = "tcp://*:5555"
    bind: bool = True
    send_hwm: int | None = None
    linger_ms: int | None = None
    send_timeout_ms: int = 60000
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 5000


@dataclass
class OutputConfig:
    """Optional files: annotated videos (one per camera) and a JSON-lines sightings log."""

    annotated_video_dir: str = ""
    video_fourcc: str = "mp4v"
    sightings_jsonl: str = ""


@dataclass
class NodeConfig:
    """An edge node: its cameras, tracker, crop gate, embedder, transport and outputs."""

    producer_id: str = "edge-0"
    mode: str = "replay"
    sources: list[SourceConfig] = field(default_factory=list)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    outputs: OutputConfig = field(default_factory=OutputConfig)
    heartbeat_interval_s: float = 1.0
    live_poll_ms: int = 20

    def __post_init__(self) -> None:
        if self.mode not in ("live", "replay"):
            raise ValueError(f"mode must be 'live' or 'replay', got {self.mode!r}")
        ids = [s.camera_id for s in self.sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"camera ids must be unique, got {ids}")
        if self.embedder.embedding_dtype not in ("float16", "float32"):
            raise ValueError(
                f"embedder.embedding_dtype must be float16 or float32, got {self.embedder.embedding_dtype!r}"
            )


def load_node_config(
    files: Sequence[str | os.PathLike[str]] = (), overrides: Sequence[str] = ()
) -> NodeConfig:
    """Defaults <- YAML files in order <- ``key=value`` overrides (raises ConfigError with hints)."""
    config = load_config(NodeConfig, files, overrides)
    if not config.sources:
        from common.configuring import ConfigError

        raise ConfigError("the node config has no sources (add at least one under 'sources:')")
    return config
