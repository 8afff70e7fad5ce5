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
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from common.files import atomic_write_text
from common.memory import peak_rss_mb
from edge.linking.calibration import calibrate_rules
from edge.linking.config import LinkerConfig
from edge.linking.events import Event, IdentityDecision
from edge.linking.ordering import Arrival, make_intake
from edge.linking.persistence import Journal, Recovered, recover, save_snapshot
from edge.linking.publishing import UpdateLog, build_update, encode_publication
from edge.messages import Decoded, EndOfStream, Heartbeat, IdentityUpdate, MessageReceiver, SightingBatch

LOG = logging.getLogger("edge.linking")
STATS_NAME = "linker_stats.json"
_DRAIN_PER_POLL = 512


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
        os.makedirs(state_dir, exist_ok=True)
        if cfg.service.faiss_threads:
            import faiss

            faiss.omp_set_num_threads(cfg.service.faiss_threads)
        self.recovered = recover(state_dir, cfg.matching, cfg.gallery)
        self.linker = self.recovered.linker
        self.shared = None
        if cfg.shared.uri:  # several linkers sharing one Milvus identity store (shared_store.py)
            from edge.linking.shared_store import SharedIdentities

            self.shared = SharedIdentities(cfg.shared, cfg.service.linker_id)
            self.linker.shared = self.shared
        self._restore_extra(self.recovered.extra)
        for event in self.recovered.replayed:
            # Decisions after the snapshot tell how far the durable state had read each stream; the
            # batches after that (in flight, or read without a decision) show up as missed.
            if isinstance(event, IdentityDecision):
                key = (event.producer_id, event.camera_id)
                last = self.receiver.sequences.last
                last[key] = max(last.get(key, -1), event.source_seq)
        self.journal = Journal(state_dir, self.linker.last_seq + 1, fsync=cfg.persistence.journal_fsync)
        # Replay logs carry no wall-clock send_ts: the same replay gives the same bytes.
        self.updates = UpdateLog(
            cfg.updates_path, fsync=cfg.persistence.updates_fsync, send_times=cfg.service.mode == "live"
        )
        LOG.info(
            "linker %s: recovered %d identities (snapshot event %d, %d journal events replayed%s)",
            cfg.service.linker_id,
            self.linker.num_identities,
            self.recovered.snapshot_seq,
            len(self.recovered.replayed),
            ", torn journal tail dropped" if self.recovered.torn_tail else "",
        )
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
        """Journal first (durable), then publish: a consumer never sees what a crash could lose."""
        if not events:
            return
        self.journal.append(events)
        self._publish([e for e in events if isinstance(e, IdentityDecision)])
        if self.shared is not None:
            self.shared.note(events, self.linker.gallery)

    def _publish(self, decisions: list[IdentityDecision]) -> None:
        if not decisions:
            return
        import zmq

        lines: list[tuple[IdentityUpdate, int]] = []
        for decision in decisions:
            seq = self._update_seq.get(decision.camera_id, 0)
            self._update_seq[decision.camera_id] = seq + 1
            update = build_update(decision, self.config.service.linker_id, seq)
            lines.append((update, decision.seq))
        self.updates.write(lines)
        for update, _ in lines:
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
        malformed / gap counts cover all nodes): PULL in replay, SUB live."""
        from edge.transport import Subscriber, TransportSettings

        svc = self.config.service
        subscribers = []
        for endpoint in svc.input_endpoints:
            settings = TransportSettings(
                mode=svc.mode,
                endpoint=endpoint,
                bind=not svc.bind_inputs,  # the sender's side of the pair
                receive_hwm=svc.receive_hwm,
                heartbeat_ivl_ms=svc.zmq_heartbeat_ivl_ms,
                heartbeat_timeout_ms=svc.zmq_heartbeat_timeout_ms,
                heartbeat_ttl_ms=2 * svc.zmq_heartbeat_timeout_ms,
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
        import zmq

        svc = self.config.service
        socket = context.socket(zmq.PUB)
        socket.setsockopt(zmq.SNDHWM, svc.publish_hwm)
        socket.setsockopt(zmq.HEARTBEAT_IVL, svc.zmq_heartbeat_ivl_ms)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, svc.zmq_heartbeat_timeout_ms)
        socket.bind(svc.publish_endpoint)
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

    def _write_stats(self, stats: dict[str, Any]) -> None:
        import json

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
                "malformed": stats["malformed"],
                "missed": stats["missed_total"],
                "foreign_engine": counters.get("foreign_engine_batches", 0),
                "wrong_dim": counters.get("wrong_dim_batches", 0),
                "bad_embeddings": counters.get("bad_embeddings", 0),
            },
        )
        self._heartbeat_seq += 1
        self._rates = _Rates()
        try:
            self.output.send_multipart(encode_publication(heartbeat), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass


def run_linker(config: LinkerConfig, stop_event: threading.Event | None = None) -> dict[str, Any]:
    """Run the linker service in this thread until stopped; return its final stats."""
    return LinkerService(config, stop_event).run()
