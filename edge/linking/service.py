"""The linker service: sighting batches from any number of edge nodes in, identity updates out.

One thread, one loop (:meth:`LinkerService.run`)::

    edge.transport.Subscriber per node endpoint (PULL in replay, SUB live) -> MessageReceiver
    (malformed: counted, dropped; seq gaps: counted) -> IdentityLinker.observe / end_camera -> events
    -> Journal.append (durable first) -> IdentityPublisher: PUB [camera topic, IdentityUpdate]
    + update log (JSON lines) -> snapshot every snapshot_interval_s / snapshot_every_events

Start it from code::

    from edge.linking import LinkerConfig, LinkerService
    service = LinkerService(config)          # config: LinkerConfig (e.g. from load_config)
    thread = threading.Thread(target=service.run); thread.start(); ...; service.stop(); thread.join()

or from the command line: ``python -m edge.linking --config configs/linker.yaml key=value ...``
(SIGTERM / Ctrl-C stop it cleanly with a final snapshot).

Restart after a crash: the state directory is recovered (snapshot + journal), decisions that were
journaled but not yet in the update log are published again (same ``journal_seq``), and the
per-camera update ``seq`` continues where it stopped.

Hostile input (docs/linker.md, "Integrity"): a message that does not decode, or whose capture time
is outside ``service.max_clock_skew_s`` of the reference clock, is counted and dropped before the
linker sees it. Every event is checked before it is journaled (it must survive the journal's JSON
round trip and, for a decision, make a valid IdentityUpdate); if the linker raises on a message, or
an event fails that check, the message is dropped, counted (``failed_messages``) and the linker is
rebuilt from its durable state -- no message can stop the service, and none can poison the journal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.configuring import ConfigError
from common.files import atomic_write_text
from common.memory import peak_rss_mb
from edge.linking.calibration import calibrate_rules
from edge.linking.config import LinkerConfig
from edge.linking.events import Event, IdentityDecision, event_from_json, event_to_json
from edge.linking.ordering import Arrival, make_intake
from edge.linking.persistence import Journal, JournalError, Recovered, recover, save_snapshot
from edge.linking.publishing import UpdateLog, build_update, encode_publication
from edge.linking.topology import Topology
from edge.messages import Decoded, EndOfStream, Heartbeat, IdentityUpdate, MessageReceiver, SightingBatch

LOG = logging.getLogger("edge.linking")
STATS_NAME = "linker_stats.json"
_DRAIN_PER_POLL = 512
_INT64_MAX = 2**63 - 1


def configured_engine_id(config: LinkerConfig) -> str:
    """The engine the gallery is pinned to: ``gallery.engine_id``, else the engine of
    ``calibration.engine`` (an artifact with its sidecar ``<artifact>.json``, a sidecar, or a
    ``.linking.json`` calibration file), else ``""`` (embeddings are then refused unless
    ``gallery.adopt_engine``). Never the first sender's: that one may be anybody.

    Raises:
        ConfigError: ``calibration.engine`` names a missing or unreadable file, or one of another
            engine than ``gallery.engine_id``.
    """
    pinned = config.gallery.engine_id
    source = config.calibration.engine
    if not source:
        return pinned
    path = Path(source)
    if path.suffix == ".pt" and not pinned:
        LOG.warning(
            "calibration.engine %s is a .pt checkpoint, whose engine id depends on the precision the node "
            "runs it at: set gallery.engine_id (or gallery.adopt_engine on a trusted network)",
            path,
        )
        return ""
    if not path.is_file():
        raise ConfigError(
            f"calibration.engine {path} does not exist (the nodes' engine artifact or its .linking.json)"
        )
    try:
        if path.name.endswith(".linking.json"):
            engine_id = json.loads(path.read_text(encoding="utf-8"))["engine_id"]
        elif path.suffix == ".json":
            from engines.sidecar import EngineSidecar

            engine_id = EngineSidecar.from_dict(
                json.loads(path.read_text(encoding="utf-8")), str(path)
            ).engine_id
        else:
            from engines.sidecar import load_sidecar

            engine_id = load_sidecar(path, verify_artifact=False).engine_id
    except (OSError, ValueError, KeyError, TypeError) as exc:  # SidecarError is a ValueError
        raise ConfigError(f"calibration.engine {path}: cannot read its engine id ({exc})") from exc
    if not isinstance(engine_id, str) or not engine_id:
        raise ConfigError(f"calibration.engine {path} names no engine_id")
    if pinned and pinned != engine_id:
        raise ConfigError(
            f"gallery.engine_id {pinned} disagrees with calibration.engine {path} ({engine_id})"
        )
    return engine_id


@dataclass
class _Rates:
    """Counts over the current stats interval (for heartbeats)."""

    started: float = field(default_factory=time.monotonic)
    batches: int = 0
    events: int = 0
    busy_s: float = 0.0


class LinkerService:
    """Runs the linker on ZeroMQ sockets (see the module docstring).

    Args:
        config: the full linker configuration.
        stop_event: set it (or call :meth:`stop`) to end :meth:`run` with a final snapshot.
    """

    def __init__(self, config: LinkerConfig, stop_event: threading.Event | None = None) -> None:
        # The engine's calibration sets the thresholds the config leaves open (edge.linking.calibration).
        matching, self.calibration = calibrate_rules(config.matching, config.calibration)
        config = dataclasses.replace(config, matching=matching)
        self.config = config
        self.stop_event = stop_event or threading.Event()
        self.receiver = MessageReceiver()
        self.ended_producers: set[str] = set()
        self.ended_cameras: set[tuple[str, str]] = set()
        self.producer_modes: dict[str, str] = {}
        self.unexpected_messages = 0
        self.failed_messages = 0
        self.last_failure = ""
        self.published = 0
        self.republished = 0
        self.snapshots = 0
        self.recovered: Recovered | None = None
        self._update_seq: dict[str, int] = {}
        self._restarts_seen: dict[tuple[str, str], int] = {}
        self._duplicates_seen: dict[tuple[str, str], int] = {}
        self._heartbeat_seq = 0
        self._turn = 0
        self._started = time.monotonic()
        self._rates = _Rates()
        self.ready = threading.Event()  # set once the sockets are bound and recovery is done
        # Capture-time order across producers (edge.linking.ordering): deterministic replays.
        self.intake = make_intake(config.service.mode, config.ordering, config.service.expected_producers)

    # ----------------------------------------------------------------------------------- control

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe)."""
        self.stop_event.set()

    @property
    def finished_replay(self) -> bool:
        expected = self.config.service.expected_producers
        return expected > 0 and len(self.ended_producers) >= expected

    # -------------------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        """Serve until stopped (or until ``expected_producers`` ended); return the final stats."""
        import zmq

        cfg = self.config
        state_dir = cfg.persistence.state_dir
        if os.path.exists(state_dir) and not os.path.isdir(state_dir):
            raise ConfigError(f"persistence.state_dir {state_dir} is a file, not a directory")
        os.makedirs(state_dir, exist_ok=True)
        if cfg.service.faiss_threads:
            import faiss

            faiss.omp_set_num_threads(cfg.service.faiss_threads)
        engine_id = configured_engine_id(cfg)
        self.gallery_config = dataclasses.replace(cfg.gallery, engine_id=engine_id)
        if not engine_id and not cfg.gallery.adopt_engine:
            LOG.warning(
                "no engine configured (gallery.engine_id, calibration.engine) and gallery.adopt_engine is "
                "false: sightings are tracked but every embedding is refused as foreign"
            )
        self.recovered = recover(state_dir, cfg.matching, self.gallery_config, cfg.updates_path)
        self.linker = self.recovered.linker
        self.shared = None
        if cfg.shared.uri:  # several linkers sharing one Milvus identity store (shared_store.py)
            from edge.linking.shared_store import SharedIdentities

            self.shared = SharedIdentities(cfg.shared, cfg.service.linker_id)
            self.linker.shared = self.shared
        self._install_clock()
        self.linker.configure(Topology(cfg.topology), cfg.hygiene)
        self._restore_extra(self.recovered.extra)
        for event in self.recovered.replayed:
            # Decisions after the snapshot tell how far the durable state had read each stream; the
            # batches after that (in flight, or read without a decision) show up as missed.
            if isinstance(event, IdentityDecision):
                key = (event.producer_id, event.camera_id)
                last = self.receiver.sequences.last
                last[key] = max(last.get(key, -1), event.source_seq)
        self.journal = Journal(state_dir, self.linker.last_seq + 1, fsync=cfg.persistence.journal_fsync)
        if self.recovered.needs_snapshot:
            # A quarantined entry or lost events left a hole in the journal's seqs: write the state
            # now, so that the next restart starts from this snapshot instead of refusing the hole.
            self._snapshot()
        # Replay logs carry no wall-clock send_ts: the same replay gives the same bytes.
        self.updates = UpdateLog(
            cfg.updates_path, fsync=cfg.persistence.updates_fsync, send_times=cfg.service.mode == "live"
        )
        LOG.info(
            "linker %s: recovered %d identities (snapshot event %d, %d journal events replayed%s%s)",
            cfg.service.linker_id,
            self.linker.num_identities,
            self.recovered.snapshot_seq,
            len(self.recovered.replayed),
            ", torn journal tail dropped" if self.recovered.torn_tail else "",
            f", {self.recovered.quarantined} entries quarantined" if self.recovered.quarantined else "",
        )
        from edge.transport import stop_curve_guard

        context = zmq.Context()
        self.inputs: list[Any] = []
        self.output = None
        try:
            self.inputs = self._open_inputs(context)
            self.output = self._open_output(context)
            self._catch_up_publications()
            self.ready.set()
            self._loop()
            self._snapshot()
            if self.shared is not None:
                self.shared.flush(self.linker.gallery, force=True)  # best effort: the store may be down
        finally:
            self.journal.close()
            self.updates.close()
            for subscriber in self.inputs:
                subscriber.close()
            if self.output is not None:
                self.output.close(linger=500)
            self._refused_at_stop = self._refused_peers()  # the guard's counts go with it
            stop_curve_guard(context)
            context.term()
        stats = self.stats()
        self._write_stats(stats)
        LOG.info("linker %s stopped: %s", cfg.service.linker_id, stats["linker"])
        return stats

    def _loop(self) -> None:
        cfg = self.config
        last_snapshot = time.monotonic()
        last_stats = time.monotonic()
        events_since_snapshot = 0
        while not self.stop_event.is_set() and not self.finished_replay:
            for decoded in self._receive():
                arrival = self._admit(decoded)
                for ready in self.intake.push(arrival) if arrival is not None else ():
                    events_since_snapshot += self._handle(ready)
                if self.finished_replay:
                    break
            for ready in self.intake.due():
                events_since_snapshot += self._handle(ready)
            now = time.monotonic()
            interval = cfg.persistence.snapshot_interval_s
            every = cfg.persistence.snapshot_every_events
            if events_since_snapshot and (
                (interval > 0 and now - last_snapshot >= interval)
                or (every > 0 and events_since_snapshot >= every)
            ):
                self._snapshot()
                last_snapshot, events_since_snapshot = now, 0
            if self.shared is not None:
                self.shared.flush(self.linker.gallery)
            if now - last_stats >= cfg.service.stats_interval_s:
                self._heartbeat()
                last_stats = now
        for ready in self.intake.drain():  # stopped early: what was held is processed, in order
            self._handle(ready)
        if self.finished_replay and cfg.offline.final_pass and not self.linker.counters.decisions_final:
            # Every producer ended: the offline pass publishes the final identities.
            self._commit(self.linker.final_pass(cfg.offline.margin, cfg.offline.neighbours))

    def _receive(self) -> Iterator[Decoded]:
        """Drain every input (decoded, malformed ones counted and skipped); if all were empty, wait
        up to ``poll_ms`` on one of them (taking turns) for the next message."""
        got = False
        for subscriber in self.inputs:
            for _ in range(_DRAIN_PER_POLL):
                decoded = subscriber.receive(timeout_ms=0)
                if decoded is None:
                    break
                got = True
                yield decoded
        if not got:
            self._turn = (self._turn + 1) % len(self.inputs)
            wait_ms = (
                self.config.service.poll_ms if len(self.inputs) == 1 else min(self.config.service.poll_ms, 5)
            )
            decoded = self.inputs[self._turn].receive(timeout_ms=wait_ms)
            if decoded is not None:
                yield decoded

    # --------------------------------------------------------------------------------- messages

    def _admit(self, decoded: Decoded) -> Arrival | None:
        """At receipt (the receiver's sequence counts are this message's): drop a duplicate, note a
        restart; the message is then ordered (:mod:`edge.linking.ordering`) before :meth:`_handle`."""
        message = decoded.message
        if not isinstance(message, SightingBatch):
            return Arrival(decoded)
        key = (message.producer_id, message.camera_id)
        duplicates = self.receiver.sequences.duplicates.get(key, 0)
        if duplicates > self._duplicates_seen.get(key, 0):
            # A batch at or below a seq already seen: processing it again would count its
            # sightings twice. Counted by the receiver, dropped here.
            self._duplicates_seen[key] = duplicates
            return None
        restart = message.seq == 0 and self.receiver.sequences.restarts.get(key, 0) > self._restarts_seen.get(
            key, 0
        )
        if restart:
            self._restarts_seen[key] = self.receiver.sequences.restarts[key]
        return Arrival(decoded, restart=restart)

    def _handle(self, arrival: Arrival) -> int:
        """Process one decoded message; return the number of events it caused."""

    def _install_clock(self) -> None:
        """The receiver's capture-time window: wall clock live, the linker's stream clock in replays."""
        skew = self.config.service.max_clock_skew_s
        if self.config.service.mode == "live":
            self.receiver.clock = time.time
            self.receiver.max_ahead_s = self.receiver.max_behind_s = skew
        else:
            linker = self  # the linker object is replaced by a rollback: look it up each time

            def stream_clock() -> float | None:
                # The newest capture time admitted, not only the processed one: the ordering holds a
                # fast producer's batches back while a slow one catches up (edge.linking.ordering).
                ts = max(linker.linker.clock, linker.intake.newest_ts)
                return ts if math.isfinite(ts) else None

            self.receiver.clock = stream_clock
            self.receiver.max_ahead_s, self.receiver.max_behind_s = skew, math.inf

    def _handle(self, arrival: Arrival) -> int:
        """Process one decoded message; return the number of events it caused.

        Nothing a message does stops the service: if the linker raises, or an event it made would
        not survive the journal, the message is dropped and counted and the linker is rebuilt from
        the durable state (what was journaled before this message).
        """
        try:
            return self._handle_unguarded(arrival)
        except JournalError:
            raise
        except Exception as exc:  # a message that slipped past decoding and broke the linker
            message = arrival.decoded.message
            self.failed_messages += 1
            self.last_failure = f"{type(message).__name__} {message.producer_id}/{message.camera_id} seq {message.seq}: {exc!r}"
            LOG.error(
                "dropped a message that the linker could not process (%s); state rebuilt from disk",
                self.last_failure,
            )
            self._rollback()
            return 0

    def _rollback(self) -> None:
        """Replace the in-memory linker by the durable state (snapshot + journal)."""
        cfg = self.config
        recovered = recover(cfg.persistence.state_dir, cfg.matching, self.gallery_config, cfg.updates_path)
        self.linker = recovered.linker
        self.linker.shared = self.shared
        self.linker.configure(Topology(cfg.topology), cfg.hygiene)
        if recovered.needs_snapshot:
            self._snapshot()

    def _handle_unguarded(self, arrival: Arrival) -> int:
        started = time.perf_counter()
        decoded = arrival.decoded
        message = decoded.message
        events: list[Event] = []
        if isinstance(message, SightingBatch):
            if arrival.restart:
                # The node restarted: its track ids start over, so its old tracks have ended.
                events += self.linker.end_camera(message.producer_id, message.camera_id)
            events += self.linker.observe(message, decoded.embeddings)
            self._rates.batches += 1
        elif isinstance(message, EndOfStream):
            if message.camera_id:
                events += self.linker.end_camera(message.producer_id, message.camera_id)
                self.ended_cameras.add((message.producer_id, message.camera_id))
            else:
                self.ended_producers.add(message.producer_id)
                LOG.info("producer %s ended (%s)", message.producer_id, message.reason)
        elif isinstance(message, Heartbeat):
            self.producer_modes[message.producer_id] = message.mode
        else:
            self.unexpected_messages += 1
        self._commit(events)
        self._rates.events += len(events)
        self._rates.busy_s += time.perf_counter() - started
        return len(events)

    def _commit(self, events: list[Event]) -> None:
        """Journal first (durable), then publish: a consumer never sees what a crash could lose.

        Raises:
            ValueError: an event that would not survive the journal or the update (nothing written).
        """
        if not events:
            return
        for event in events:
            check_journalable(event, self.config.service.linker_id)
        self.journal.append(events)
        self._publish([e for e in events if isinstance(e, IdentityDecision)])
        if self.shared is not None:
            self.shared.note(events, self.linker.gallery)

    def _publish(self, decisions: list[IdentityDecision]) -> None:
        if not decisions:
            return
        import zmq

        lines: list[tuple[IdentityUpdate, int, bool]] = []
        for decision in decisions:
            seq = self._update_seq.get(decision.camera_id, 0)
            self._update_seq[decision.camera_id] = seq + 1
            update = build_update(decision, self.config.service.linker_id, seq)
            lines.append((update, decision.seq, decision.final))
        self.updates.write(lines)
        for update, *_ in lines:
            try:
                self.output.send_multipart(encode_publication(update), flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:  # PUB drops for slow subscribers rather than raising; kept for safety
                pass
        self.published += len(lines)

    def _catch_up_publications(self) -> None:
        """Publish journaled decisions that a crash kept out of the update log."""
        assert self.recovered is not None
        logged = self.updates.last_journal_seq
        missing = [e for e in self.recovered.replayed if isinstance(e, IdentityDecision) and e.seq > logged]
        for event in self.recovered.replayed:
            if isinstance(event, IdentityDecision) and event.seq <= logged:
                # Published before the crash, after the snapshot: its update seq was used.
                self._update_seq[event.camera_id] = self._update_seq.get(event.camera_id, 0) + 1
        if missing:
            LOG.info("publishing %d decisions journaled before the crash but never published", len(missing))
            self._publish(missing)
            self.republished += len(missing)

    # ----------------------------------------------------------------------------- persistence

    def _snapshot(self) -> None:
        save_snapshot(self.config.persistence.state_dir, self.linker, self._extra())
        self.journal.rotate(self.linker.last_seq)
        self.snapshots += 1

    def _extra(self) -> dict[str, Any]:
        seqs = self.receiver.sequences
        return {
            "sequences": {
                name: [[p, c, v] for (p, c), v in getattr(seqs, name).items()]
                for name in ("last", "missed", "duplicates", "restarts")
            },
            "update_seq": dict(self._update_seq),
            "ended_producers": sorted(self.ended_producers),
            "ended_cameras": sorted([list(k) for k in self.ended_cameras]),
            "malformed": self.receiver.malformed,
        }

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        seqs = self.receiver.sequences
        for name, items in extra.get("sequences", {}).items():
            setattr(seqs, name, {(str(p), str(c)): int(v) for p, c, v in items})
        self._restarts_seen = dict(seqs.restarts)
        self._duplicates_seen = dict(seqs.duplicates)
        self._update_seq = {str(k): int(v) for k, v in extra.get("update_seq", {}).items()}
        self.ended_producers = set(extra.get("ended_producers", []))
        self.ended_cameras = {(str(p), str(c)) for p, c in extra.get("ended_cameras", [])}
        self.receiver.malformed = int(extra.get("malformed", 0))

    # ------------------------------------------------------------------------------- sockets

    def _open_inputs(self, context: Any) -> list[Any]:
        """One :class:`edge.transport.Subscriber` per input endpoint, sharing one receiver (so the
        malformed / gap counts cover all nodes): PULL in replay, SUB live. With Curve, the linker is
        the CURVE client of each node (the node's public key from ``curve_node_keys``), or, with
        ``bind_inputs``, the server that admits the keys of ``curve_node_keys``."""
        from edge.transport import Subscriber, TransportSettings

        svc = self.config.service
        self._context = context
        subscribers = []
        for index, endpoint in enumerate(svc.input_endpoints):
            curve: dict[str, Any] = {}
            if svc.curve_secret_key_file:
                curve["curve_secret_key_file"] = svc.curve_secret_key_file
                if svc.bind_inputs:
                    curve["curve_allowed_clients"] = tuple(svc.curve_node_keys)
                else:
                    keys = svc.curve_node_keys
                    curve["curve_server_key_file"] = keys[index] if len(keys) > 1 else keys[0]
            settings = TransportSettings(
                mode=svc.mode,
                endpoint=endpoint,
                bind=not svc.bind_inputs,  # the sender's side of the pair
                receive_hwm=svc.receive_hwm,
                heartbeat_ivl_ms=svc.zmq_heartbeat_ivl_ms,
                heartbeat_timeout_ms=svc.zmq_heartbeat_timeout_ms,
                heartbeat_ttl_ms=2 * svc.zmq_heartbeat_timeout_ms,
                max_message_bytes=svc.max_message_bytes,
                **curve,
            )
            try:
                subscribers.append(
                    Subscriber(settings, context, bind=svc.bind_inputs, receiver=self.receiver)
                )
            except Exception:
                for subscriber in subscribers:
                    subscriber.close()
                raise
        return subscribers

    def _open_output(self, context: Any) -> Any:
        """The PUB socket of identity updates; with Curve only ``curve_subscriber_keys`` may subscribe."""
        import zmq

        from edge.transport import CurveKeys, TransportError, secure

        svc = self.config.service
        socket = context.socket(zmq.PUB)
        socket.setsockopt(zmq.SNDHWM, svc.publish_hwm)
        socket.setsockopt(zmq.HEARTBEAT_IVL, svc.zmq_heartbeat_ivl_ms)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, svc.zmq_heartbeat_timeout_ms)
        socket.setsockopt(zmq.MAXMSGSIZE, 1 << 16)  # a PUB only receives subscriptions
        keys = CurveKeys(svc.curve_secret_key_file, "", tuple(svc.curve_subscriber_keys))
        try:
            self._output_domain = secure(socket, context, keys, svc.publish_endpoint, bind=True)
            socket.bind(svc.publish_endpoint)
        except zmq.ZMQError as exc:
            socket.close(0)
            raise TransportError(
                f"cannot bind service.publish_endpoint {svc.publish_endpoint}: {exc}"
            ) from exc
        except TransportError:
            socket.close(0)
            raise
        return socket

    # ------------------------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Counters of the linker and of the receiving side (JSON-ready)."""
        seqs = self.receiver.sequences
        gallery = self.linker.gallery if hasattr(self, "linker") else None
        return {
            "linker_id": self.config.service.linker_id,
            "mode": self.config.service.mode,
            "uptime_s": time.monotonic() - self._started,
            "identities": 0 if gallery is None else len(gallery.identities),
            "next_global_id": 0 if gallery is None else gallery.next_global_id,
            "gallery_bytes": 0 if gallery is None else gallery.nbytes,
            "engine_id": "" if gallery is None else gallery.engine_id,
            "live_tracks": len(self.linker.tracks) if hasattr(self, "linker") else 0,
            "last_event_seq": self.linker.last_seq if hasattr(self, "linker") else 0,
            "linker": self.linker.counters.as_dict() if hasattr(self, "linker") else {},
            "received": dict(self.receiver.received),
            "malformed": self.receiver.malformed,
            "clock_refused": self.receiver.clock_refused,
            "failed_messages": self.failed_messages,
            "last_failure": self.last_failure,
            "refused_peers": self._refused_peers(),
            "quarantined": 0 if self.recovered is None else self.recovered.quarantined,
            "last_error": self.receiver.last_error,
            "missed": {f"{p}/{c}": v for (p, c), v in seqs.missed.items()},
            "missed_total": seqs.total_missed,
            "duplicates": sum(seqs.duplicates.values()),
            "restarts": sum(seqs.restarts.values()),
            "last_seq": {f"{p}/{c}": v for (p, c), v in seqs.last.items()},
            "unexpected_messages": self.unexpected_messages,
            "published": self.published,
            "republished_after_recovery": self.republished,
            "snapshots": self.snapshots,
            "ended_producers": sorted(self.ended_producers),
            "ended_cameras": sorted(f"{p}/{c}" for p, c in self.ended_cameras),
            "max_rss_mb": peak_rss_mb(),
            "ordering": {**dataclasses.asdict(self.intake.counters), "buffered": self.intake.buffered},
            "calibration": {
                **self.calibration.to_dict(),
                "engine_warning": self.calibration.check_engine("" if gallery is None else gallery.engine_id),
            },
            "shared": self.shared.counters.as_dict() if getattr(self, "shared", None) is not None else {},
        }

    def _refused_peers(self) -> int:
        """Connections refused by the CURVE allow-lists (inputs bound by the linker, and the PUB)."""
        from edge.transport import curve_refusals

        if getattr(self, "_refused_at_stop", None) is not None:
            return self._refused_at_stop
        total = sum(getattr(s, "refused", 0) for s in getattr(self, "inputs", []))
        return total + curve_refusals(getattr(self, "_context", None), getattr(self, "_output_domain", None))

    def _write_stats(self, stats: dict[str, Any]) -> None:
        path = os.path.join(self.config.persistence.state_dir, STATS_NAME)
        atomic_write_text(path, json.dumps(stats, indent=2, sort_keys=True) + "\n")

    def _heartbeat(self) -> None:
        """Write the stats file and publish a linker Heartbeat (topic ``b"\\x00"``)."""
        import zmq

        stats = self.stats()
        self._write_stats(stats)
        elapsed = max(time.monotonic() - self._rates.started, 1e-9)
        rates = self._rates
        counters = stats["linker"]
        heartbeat = Heartbeat(
            producer_id=self.config.service.linker_id,
            camera_id="",
            seq=self._heartbeat_seq,
            capture_ts=time.time(),
            send_ts=time.time(),
            engine_id=stats["engine_id"],
            mode=self.config.service.mode,
            uptime_s=stats["uptime_s"],
            stage_rates_hz={"link/batches": rates.batches / elapsed, "link/events": rates.events / elapsed},
            stage_latency_ms={"link": 1000.0 * rates.busy_s / max(rates.batches, 1)},
            queue_depths={"identities": stats["identities"], "live_tracks": stats["live_tracks"]},
            drop_counts={
                name: min(int(value), _INT64_MAX)  # counters of hostile input must not break the heartbeat
                for name, value in {
                    "malformed": stats["malformed"],
                    "missed": stats["missed_total"],
                    "clock_refused": stats["clock_refused"],
                    "failed": stats["failed_messages"],
                    "refused_peers": stats["refused_peers"],
                    "foreign_engine": counters.get("foreign_engine_batches", 0),
                    "wrong_dim": counters.get("wrong_dim_batches", 0),
                    "bad_embeddings": counters.get("bad_embeddings", 0),
                }.items()
            },
        )
        self._heartbeat_seq += 1
        self._rates = _Rates()
        try:
            self.output.send_multipart(encode_publication(heartbeat), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass


def check_journalable(event: Event, linker_id: str) -> None:
    """Refuse an event that would not come back from the journal, or not make a valid update.

    The last gate before disk: decoding already range-checks every message, so this only trips on
    a bug -- and then the event must not reach the journal, where every restart would replay it.

    Raises:
        ValueError: naming the event and what is wrong with it.
    """
    try:
        back = event_from_json(json.loads(json.dumps(event_to_json(event), allow_nan=False)))
        if type(back) is not type(event) or back.seq != event.seq:
            raise ValueError("it does not survive the JSON round trip")
        if isinstance(event, IdentityDecision):
            build_update(event, linker_id, 0)
    except Exception as exc:
        raise ValueError(f"event {event.seq} ({type(event).__name__}) cannot be journaled: {exc}") from exc


def run_linker(config: LinkerConfig, stop_event: threading.Event | None = None) -> dict[str, Any]:
    """Run the linker service in this thread until stopped; return its final stats."""
    return LinkerService(config, stop_event).run()
