"""The edge node's config schema (dataclasses loaded by ``common.configuring.load_config``).

YAML files and ``key=value`` overrides fill :class:`NodeConfig`; the entry point
(:func:`edge.node.build_node`) turns it into typed arguments -- library code never sees it whole.
Modalities accept the YAML aliases ``rgb`` / ``thermal`` (normalised to ``visible`` / ``infrared``).

The tracker and crop-gate sections *are* the library's settings dataclasses
(:class:`edge.tracking.TrackerSettings`, :class:`edge.crops.CropGate`), so a field added there is
reachable from YAML without a hand copy here. The sections that stay copies (thermal, live,
synthetic, transport) because their library classes carry runtime state or arguments the node
supplies itself are checked field by field against their library classes by
``tests/test_edge_config.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from common.configuring import load_config
from common.modality import Modality
from edge.crops import CropGate
from edge.tracking import TrackerSettings

SOURCE_KINDS = ("file", "folder", "url", "usb", "synthetic")


@dataclass
class ThermalConfig:
    """See :class:`edge.sources.thermal.ThermalNormalizer`."""

    low_percentile: float = 1.0
    high_percentile: float = 99.0
    smoothing: float = 0.0
    stretch_8bit: bool = False
    sample_step: int = 4
    min_range: float = 1.0


@dataclass
class DetectorConfig:
    """A camera's person detector.

    Attributes:
        name: ``yolo`` | ``hog`` | ``thermal`` | ``mot``.
        weights: the checkpoint of a learned backend (``yolo``: a ``.pt`` / ``.onnx`` / ``.engine``;
            e.g. a thermal model from ``mpanet-train-detector`` on the infrared camera and an RGB
            COCO model on the visible one). Passed to the backend as its ``weights`` argument.
        settings: the backend's other arguments (e.g. ``{confidence_min: 0.3}``); unknown ones are
            an error naming the valid ones.
    """

    name: str = "hog"
    settings: dict[str, Any] = field(default_factory=dict)
    weights: str = ""

    def __post_init__(self) -> None:
        if self.weights and "weights" in self.settings:
            raise ValueError("detector: give the weights once, as detector.weights (not also in settings)")

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`edge.detect.build_detector` for this backend."""
        arguments = dict(self.settings)
        if self.weights:
            arguments["weights"] = self.weights
        return arguments


@dataclass
class LiveConfig:
    """Live-mode behaviour of a source (see :class:`edge.sources.streams.LiveSource`)."""

    queue_size: int = 1
    reconnect: bool = True
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_reconnect_attempts: int | None = None
    pace_finite: bool = True


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
    dataset_seed: int | None = None
    dataset_pids: list[int] = field(default_factory=list)
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
class EmbedderConfig:
    """``path``: an engine artifact (``.onnx`` / ``.plan`` / ``.pt``) for ``engines.runtime.load_embedder``;
    empty = no embeddings (sightings only). ``embedding_dtype`` on the wire: ``float16`` | ``float32``."""

    path: str = ""
    device: str = "cpu"
    embedding_dtype: str = "float16"
    track_max_age_s: float = 30.0


@dataclass
class TransportConfig:
    """See :class:`edge.transport.TransportSettings` (``mode`` comes from the node). Loopback by
    default; binding another address wants the ``curve_*`` key files (docs/messages.md, Security)."""

    endpoint: str = "tcp://127.0.0.1:5555"
    bind: bool = True
    send_hwm: int | None = None
    linger_ms: int | None = None
    send_timeout_ms: int = 60000
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 5000
    heartbeat_ttl_ms: int = 10000
    peer_timeout_ms: int = 5000
    max_message_bytes: int = 64 * 2**20
    curve_secret_key_file: str = ""
    curve_server_key_file: str = ""
    curve_allowed_clients: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from edge.endpoints import check_endpoint

        if self.endpoint != "auto":  # auto: the pipeline picks a free loopback port
            check_endpoint(self.endpoint, "transport.endpoint")


@dataclass
class OutputConfig:
    """Optional files: annotated videos (one per camera, each at its own source's frame rate) and a
    JSON-lines sightings log."""

    annotated_video_dir: str = ""
    video_fourcc: str = "mp4v"
    sightings_jsonl: str = ""


@dataclass
class NodeConfig:
    """An edge node: its cameras, tracker, crop gate, embedder, transport and outputs."""

    producer_id: str = "edge-0"
    mode: str = "replay"
    sources: list[SourceConfig] = field(default_factory=list)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    crops: CropGate = field(default_factory=CropGate)
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
