"""The linker's configuration schema (for :func:`common.configuring.load_config`).

``LinkerConfig`` nests the small frozen dataclasses that the library code takes: the decision
rules (:class:`~edge.linking.assignment.MatchingRules`), the gallery bounds
(:class:`~edge.linking.gallery.GalleryConfig`), persistence and the service's sockets. Load it as
``load_config(LinkerConfig, ["configs/linker.yaml"], ["matching.cosine_min_cross=0.35"])``.

The dataclasses are not frozen because ``load_config`` applies ``key=value`` overrides in place
(read-only OmegaConf nodes, which frozen dataclasses become, refuse that); treat them as values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge.linking.assignment import MatchingRules
from edge.linking.calibration import CalibrationConfig
from edge.linking.gallery import GalleryConfig
from edge.linking.linker import HygieneSettings
from edge.linking.ordering import OrderingSettings
from edge.linking.shared_store import SharedStoreConfig
from edge.linking.topology import TopologyConfig

MODES = ("live", "replay")


@dataclass
class PersistenceConfig:
    """Where and how often the linker's state is made durable.

    Attributes:
        state_dir: directory of the snapshot, the journal, the update log and the stats file.
        snapshot_interval_s: wall-clock seconds between snapshots (0: only at a clean stop).
        snapshot_every_events: also snapshot after this many journaled events (0: no such trigger).
        journal_fsync: fsync the journal after each append (survives power loss; a killed process
            loses nothing either way, the data is in the OS).
        updates_fsync: fsync the update log after each write.
    """

    state_dir: str = "outputs/linker"
    snapshot_interval_s: float = 30.0
    snapshot_every_events: int = 1000
    journal_fsync: bool = True
    updates_fsync: bool = False

    def __post_init__(self) -> None:
        if not self.state_dir:
            raise ValueError("persistence.state_dir must name a directory")
        if self.snapshot_interval_s < 0 or self.snapshot_every_events < 0:
            raise ValueError("persistence.snapshot_interval_s and snapshot_every_events must be >= 0")


@dataclass
class ServiceConfig:
    """The linker service's sockets and loop.

    Attributes:
        linker_id: ``producer_id`` of what the linker publishes.
        mode: ``replay``: a PULL socket; senders (PUSH) wait when the linker is behind, nothing is
            dropped. ``live``: a SUB socket; when the linker is behind, messages beyond the
            high-water marks are dropped (counted from the sequence gaps).
        input_endpoints: the nodes' ZeroMQ endpoints, one :class:`edge.transport.Subscriber` each.
        bind_inputs: ``false`` (default, as edge nodes bind): connect to each node's endpoint.
            ``true``: bind these endpoints and let any number of nodes connect (``transport.bind:
            false`` on the nodes).
        publish_endpoint: the PUB endpoint (bound) of identity updates and linker heartbeats;
            loopback by default (binding another address without Curve logs a warning).
        updates_jsonl: the JSON-lines update log; ``""``: ``<state_dir>/identity_updates.jsonl``.
        receive_hwm: messages each input socket queues (ZMQ_RCVHWM); small in replay, so that
            little is in flight inside a linker that dies.
        publish_hwm: messages queued per subscriber of the PUB socket before they are dropped.
        poll_ms: the loop's poll timeout (how quickly a stop request is noticed).
        expected_producers: stop after this many producers sent their final end-of-stream
            (replays); 0: run until stopped.
        stats_interval_s: wall-clock seconds between stats files / linker heartbeats.
        zmq_heartbeat_ivl_ms, zmq_heartbeat_timeout_ms: ZMTP heartbeats (dead peers are noticed).
        faiss_threads: OpenMP threads faiss may use (0: faiss' default, all cores). 1 by default:
            a batch is a handful of queries, which faiss spreads over queries, not over the gallery,
            and spinning OpenMP threads on a CPU shared with an edge node cost more than they give.
        max_clock_skew_s: a SightingBatch whose ``capture_ts`` is more than this ahead of the
            reference clock is refused and counted (live: also this far behind); the reference is
            the wall clock live and the linker's stream clock in replays. A far-future capture time
            would move the linker's clock and expire every identity.
        max_message_bytes: ``ZMQ_MAXMSGSIZE`` of the input sockets (bigger frames: peer dropped).
        curve_secret_key_file: the linker's ``.key_secret`` (``mpanet-keys linker``); ``""``: no
            CurveZMQ (only for loopback).
        curve_node_keys: connecting to the nodes: the nodes' public ``.key`` files, one per
            ``input_endpoints`` entry (or one for all); with ``bind_inputs``: the allow-list of
            node public keys (files or directories).
        curve_subscriber_keys: the allow-list of public keys (files or directories) that may
            subscribe to ``publish_endpoint``.
    """

    linker_id: str = "linker"
    mode: str = "replay"
    input_endpoints: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5555"])
    bind_inputs: bool = False
    publish_endpoint: str = "tcp://127.0.0.1:5560"
    updates_jsonl: str = ""
    receive_hwm: int = 100
    publish_hwm: int = 10_000
    poll_ms: int = 100
    expected_producers: int = 0
    stats_interval_s: float = 2.0
    zmq_heartbeat_ivl_ms: int = 1000
    zmq_heartbeat_timeout_ms: int = 5000
    faiss_threads: int = 1
    max_clock_skew_s: float = 600.0
    max_message_bytes: int = 64 * 2**20
    curve_secret_key_file: str = ""
    curve_node_keys: list[str] = field(default_factory=list)
    curve_subscriber_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from edge.endpoints import check_endpoint

        for endpoint in self.input_endpoints:
            check_endpoint(endpoint, "service.input_endpoints entry")
        if not self.publish_endpoint.endswith(":auto"):
            check_endpoint(self.publish_endpoint, "service.publish_endpoint")
        if not self.max_clock_skew_s > 0:
            raise ValueError(f"service.max_clock_skew_s must be > 0 seconds, got {self.max_clock_skew_s}")
        if self.curve_secret_key_file:
            if not self.curve_subscriber_keys:
                raise ValueError(
                    "service.curve_secret_key_file is set: name the subscribers' public keys in service.curve_subscriber_keys"
                )
            if not self.curve_node_keys:
                raise ValueError(
                    "service.curve_secret_key_file is set: name the nodes' public keys in service.curve_node_keys"
                )
            if not self.bind_inputs and len(self.curve_node_keys) not in (1, len(self.input_endpoints)):
                raise ValueError(
                    f"service.curve_node_keys has {len(self.curve_node_keys)} entries: one for all inputs "
                    f"or one per input endpoint ({len(self.input_endpoints)})"
                )
        if self.faiss_threads < 0:
            raise ValueError(f"service.faiss_threads must be >= 0, got {self.faiss_threads}")
        if self.mode not in MODES:
            raise ValueError(f"service.mode must be one of {MODES}, got {self.mode!r}")
        if not self.linker_id:
            raise ValueError("service.linker_id must not be empty")
        if not self.input_endpoints:
            raise ValueError("service.input_endpoints needs at least one endpoint")
        for name in ("receive_hwm", "publish_hwm", "poll_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"service.{name} must be >= 1, got {getattr(self, name)}")
        if self.expected_producers < 0:
            raise ValueError(f"service.expected_producers must be >= 0, got {self.expected_producers}")
        if not self.stats_interval_s > 0:
            raise ValueError(f"service.stats_interval_s must be > 0, got {self.stats_interval_s}")


@dataclass
class OfflineConfig:
    """The final offline pass of a replay (``offline`` section): once every producer ended, all
    tracks of the run are clustered again (:mod:`edge.linking.clustering`) and tracks whose
    identity differs from their cluster's are published as revisions (``final_pass`` in the log).

    Attributes:
        final_pass: run it (replay mode only).
        margin: least average excess over the thresholds at which two clusters merge.
        neighbours: candidate partners per track (nearest by cosine).
    """

    final_pass: bool = True
    margin: float = 0.0
    neighbours: int = 10

    def __post_init__(self) -> None:
        if not -1.0 <= self.margin <= 1.0:
            raise ValueError(f"offline.margin must be in [-1, 1], got {self.margin}")
        if self.neighbours < 1:
            raise ValueError(f"offline.neighbours must be >= 1, got {self.neighbours}")


@dataclass
class LinkerConfig:
    """Everything ``python -m edge.linking`` needs (see ``configs/linker.yaml`` and docs/linker.md)."""

    matching: MatchingRules = field(default_factory=MatchingRules)
    # adopt_engine false: the service pins the engine from config (engine_id / calibration.engine), not
    # from whoever sends first; code that builds a bare IdentityLinker keeps the library default.
    gallery: GalleryConfig = field(default_factory=lambda: GalleryConfig(adopt_engine=False))
    persistence: PersistenceConfig = field(default_factory=PersistenceConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    ordering: OrderingSettings = field(default_factory=OrderingSettings)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    shared: SharedStoreConfig = field(default_factory=SharedStoreConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    hygiene: HygieneSettings = field(default_factory=HygieneSettings)

    def __post_init__(self) -> None:
        if self.shared.uri:
            # Several linkers on one store: this one numbers identities inside its own id block.
            if self.gallery.global_id_base not in (0, self.shared.global_id_base):
                raise ValueError(
                    f"gallery.global_id_base ({self.gallery.global_id_base}) contradicts shared.linker_index "
                    f"{self.shared.linker_index} (block {self.shared.global_id_base}); set only the index"
                )
            self.gallery.global_id_base = self.shared.global_id_base
        if self.matching.track_idle_s >= self.gallery.ttl_s:
            raise ValueError(
                f"matching.track_idle_s ({self.matching.track_idle_s}) must be below gallery.ttl_s "
                f"({self.gallery.ttl_s}): a track ends before its identity may expire"
            )

    @property
    def updates_path(self) -> Path:
        """The update log's path (``service.updates_jsonl`` or its default in ``state_dir``)."""
        if self.service.updates_jsonl:
            return Path(self.service.updates_jsonl)
        return Path(self.persistence.state_dir) / "identity_updates.jsonl"
