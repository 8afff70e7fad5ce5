"""The linker's state machine: sighting batches in, identity events out (no sockets, no files).

:class:`IdentityLinker` keeps the gallery, the live camera tracks and the clocks. ``observe`` takes
one decoded :class:`~edge.messages.SightingBatch` and returns the events it caused; every event has
already been applied through :meth:`IdentityLinker.apply`, the same method recovery uses to replay
a journal, so a restarted linker rebuilds exactly the identities, numbers and assignments it had
published (see :mod:`edge.linking.persistence`).

Time is the messages' capture time (stream time in replays, wall clock live), never the linker's
own clock, so replays are deterministic: a camera's clock is the latest capture time it sent, the
linker's clock the latest over all cameras. Tracks end after ``track_idle_s`` of their camera's
time or at the camera's end of stream; identities expire after ``ttl_s`` of the linker's time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.modality import Modality
from edge.aggregation import add_weighted, mean_direction
from edge.linking.assignment import (
    Candidate,
    Choice,
    MatchingRules,
    choose_initial,
    choose_revision,
    lifetimes_overlap,
    rank_candidates,
    to_candidate,
)
from edge.linking.clustering import ClusterTrack, assign_identities, cluster_tracks
from edge.linking.events import (
    CameraEnded,
    EngineAdopted,
    Event,
    EventError,
    IdentityDecision,
    IdentityEviction,
)
from edge.linking.gallery import Gallery, GalleryConfig, TrackKey
from edge.linking.topology import Topology
from edge.messages import SightingBatch


@dataclass
class HygieneSettings:
    """Identity hygiene (the ``hygiene`` config section; see :meth:`IdentityLinker.hygiene_pass`).

    Attributes:
        interval_s: capture seconds between passes (0: off).
        window_s: the pass re-clusters tracks seen in the last this many capture seconds.
        margin: least average excess over the thresholds at which clusters merge ("clearly one").
        neighbours: candidate partners per track.
    """

    interval_s: float = 30.0
    window_s: float = 300.0
    margin: float = 0.05
    neighbours: int = 10

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.window_s <= 0:
            raise ValueError(
                f"hygiene.interval_s must be >= 0 and window_s > 0, got {self.interval_s}, {self.window_s}"
            )
        if self.neighbours < 1 or not -1.0 <= self.margin <= 1.0:
            raise ValueError(
                f"hygiene.neighbours must be >= 1 and margin in [-1, 1], got {self.neighbours}, {self.margin}"
            )


SPLIT = -1  # vote target of a split into a new identity
_MIN_QUALITY_WEIGHT = 1e-3


@dataclass
class TrackState:
    """What the linker knows about one live camera track.

    Attributes:
        key: (producer_id, camera_id, track_id).
        modality: the camera's modality.
        first_seen_ts, last_seen_ts: capture times (s) of its first and latest sighting.
        sightings: sightings that carried an embedding.
        evidence: (D,) float32 unit vector: the track's aggregated embedding (the latest
            ``track_mean`` from the node, or the linker's own quality-weighted mean of ``crop`` rows).
        accumulated: for ``crop`` rows, the weighted sum behind ``evidence``.
        weight_sum: the total weight in ``accumulated``.
        global_id: its identity, None before the first decision.
        assigned_seq: seq of the decision that gave ``global_id`` (conflicts: the later one yields).
        ambiguous: evaluations that were ambiguous before the first decision.
        vote_target, votes: the revision target (identity, or ``SPLIT``) that the last ``votes``
            evaluations agreed on.
        evaluated_at: ``sightings`` at the last evaluation.
        last_source_seq, last_frame_index: of the latest batch with this track.
    """

    key: TrackKey
    modality: Modality
    first_seen_ts: float
    last_seen_ts: float
    sightings: int = 0
    evidence: np.ndarray | None = None
    accumulated: np.ndarray | None = None
    weight_sum: float = 0.0
    global_id: int | None = None
    assigned_seq: int = 0
    ambiguous: int = 0
    vote_target: int | None = None
    votes: int = 0
    evaluated_at: int = 0
    last_source_seq: int = 0
    last_frame_index: int = 0

    @property
    def camera_id(self) -> str:
        return self.key[1]


@dataclass(frozen=True)
class EndedSpan:
    """An ended track's lifetime and identity, kept while a live track of its camera may overlap it."""

    key: TrackKey
    first_seen_ts: float
    last_seen_ts: float
    global_id: int


@dataclass
class LinkerCounters:
    """Cumulative counts (all ints), exported in heartbeats of the service and in snapshots."""

    batches: int = 0
    sightings: int = 0
    embeddings: int = 0
    foreign_engine_batches: int = 0
    wrong_dim_batches: int = 0
    bad_embeddings: int = 0
    decisions_new: int = 0
    decisions_matched: int = 0
    decisions_revised: int = 0
    conflicts_resolved: int = 0
    ambiguous_waits: int = 0
    tracks_ended: int = 0
    short_tracks_dropped: int = 0
    identities_retired: int = 0
    evicted_ttl: int = 0
    evicted_capacity: int = 0
    refused_capacity: int = 0
    prototypes_refused: int = 0
    joint_assignments: int = 0
    topology_exclusions: int = 0
    topology_conflicts: int = 0
    decisions_final: int = 0
    hygiene_passes: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class IdentityLinker:
    """Global identities for camera tracks from any number of cameras (see the module docstring).

    Args:
        rules: decision thresholds.
        gallery_config: gallery bounds, storage and the expected engine.
    """

    def __init__(self, rules: MatchingRules, gallery_config: GalleryConfig) -> None:
        self.rules = rules
        self.gallery_config = gallery_config
        self.gallery: Gallery | None = None
        self.tracks: dict[TrackKey, TrackState] = {}
        self.camera_tracks: dict[str, dict[TrackKey, TrackState]] = {}
        self.ended: dict[str, list[EndedSpan]] = {}
        self.camera_clock: dict[str, float] = {}
        self.clock = -math.inf
        self.last_seq = 0
        self.counters = LinkerCounters()
        # Optional edge.linking.shared_store.SharedIdentities: asked when a first decision has no
        # local match (identities other linkers published); None: this linker works alone.
        self.shared: Any = None
        # Global ids below this were published once and are never given out again, even if the
        # journal that made them is lost (see edge.linking.persistence.recover).
        self.reserved_global_ids = 0
        self.topology = Topology()
        self.hygiene = HygieneSettings()
        # Every decided track, live or ended, and each identity's tracks: what the topology checks,
        # identity hygiene and the final pass look at (in memory: rebuilt from live tracks and the
        # journal after a restart; ended tracks from before the snapshot are not recalled).
        self.history: dict[TrackKey, TrackState] = {}
        self.by_identity: dict[int, set[TrackKey]] = {}

    def configure(self, topology: Topology, hygiene: HygieneSettings | None = None) -> None:
        """Settings that are not part of the persisted state: the camera topology and identity
        hygiene. Also indexes the live tracks and the history of a recovered linker."""
        self.topology = topology
        self.hygiene = hygiene or self.hygiene
        for key, state in self.tracks.items():
            if state.global_id is not None:
                self.history[key] = state
        self.by_identity = {}
        for key, state in self.history.items():
            if state.global_id is not None:
                self.by_identity.setdefault(state.global_id, set()).add(key)

    # --------------------------------------------------------------------------------- queries

    @property
    def engine_id(self) -> str:
        return self.gallery.engine_id if self.gallery is not None else self.gallery_config.engine_id

    @property
    def num_identities(self) -> int:
        return 0 if self.gallery is None else len(self.gallery.identities)

    def reserve_global_ids(self, next_global_id: int) -> None:
        """Never give out a global id below ``next_global_id`` (ids a damaged journal lost)."""
        self.reserved_global_ids = max(self.reserved_global_ids, int(next_global_id))
        if self.gallery is not None:
            self.gallery.next_global_id = max(self.gallery.next_global_id, self.reserved_global_ids)

    def identity_of(self, producer_id: str, camera_id: str, track_id: int) -> int | None:
        """The global id of a live track, or None."""
        state = self.tracks.get((producer_id, camera_id, int(track_id)))
        return None if state is None else state.global_id

    # --------------------------------------------------------------------------------- observe

    def observe(self, batch: SightingBatch, embeddings: np.ndarray | None) -> list[Event]:
        """Take one camera frame's sightings; return the events it caused (already applied).

        Args:
            batch: the decoded header.
            embeddings: (M, D) float16/float32 rows for ``batch.embedding_rows`` (or None).

        A batch from another engine (or with embeddings of another size) is refused whole and
        counted; rows that are not finite or have zero length are counted and skipped.
        """
        events: list[Event] = []
        self.counters.batches += 1
        if not self._accept_engine(batch, embeddings, events):
            return events
        ts = float(batch.capture_ts)
        camera = batch.camera_id
        self.camera_clock[camera] = max(self.camera_clock.get(camera, -math.inf), ts)
        previous_clock = self.clock
        self.clock = max(self.clock, ts)
        vectors = self._vectors(batch, embeddings)
        live = self.camera_tracks.setdefault(camera, {})
        seen: list[TrackState] = []
        updated: list[TrackState] = []
        for i, track_id in enumerate(batch.track_ids):
            key = (batch.producer_id, camera, int(track_id))
            state = self.tracks.get(key)
            if state is None:
                state = TrackState(key, batch.modality, ts, ts)
                self.tracks[key] = state
                live[key] = state
            state.last_seen_ts = max(state.last_seen_ts, ts)
            state.last_source_seq = batch.seq
            state.last_frame_index = batch.frame_index
            self.counters.sightings += 1
            seen.append(state)
            if state.global_id is not None and self.gallery is not None:
                self.gallery.touch(state.global_id, state.last_seen_ts)
            vector = vectors.get(i)
            if vector is None:
                continue
            self._accumulate(state, vector, batch.embedding_source, batch.quality[i])
            updated.append(state)
            if state.global_id is not None and self.gallery is not None:
                self._refresh_prototype(state)
        if updated:
            self._evaluate(sorted(updated, key=lambda s: s.key), events)
        self._resolve_conflicts(camera, seen, events)
        self._resolve_topology(seen, events)
        self._end_idle_tracks(camera, events)
        self._expire(events)
        interval = self.hygiene.interval_s
        if (
            interval > 0
            and math.isfinite(previous_clock)
            and (math.floor(self.clock / interval) > math.floor(previous_clock / interval))
        ):
            self.hygiene_pass(events)  # due on the capture clock: a replay runs it at the same points
        return events

    def end_camera(self, producer_id: str, camera_id: str, ts: float | None = None) -> list[Event]:
        """The camera's stream ended (end-of-stream, or its producer restarted): end its tracks.

        Tracks still waiting for their first decision are decided now (if they have
        ``min_sightings``); the ending itself is an event, so recovery ends them too.
        """
        events: list[Event] = []
        live = self.camera_tracks.get(camera_id, {})
        keys = sorted(k for k in live if k[0] == producer_id)
        for key in keys:
            state = live[key]
            if state.global_id is None:
                self._decide_pending(state, events)
        if keys:
            when = self.camera_clock.get(camera_id, self.clock) if ts is None else float(ts)
            self._emit(CameraEnded(self.last_seq + 1, producer_id, camera_id, when), events)
        return events

    def final_pass(self, margin: float = 0.0, neighbours: int = 10) -> list[Event]:
        """The offline pass at the end of a replay: cluster every decided track of the run
        (:func:`edge.linking.clustering.cluster_tracks`: average linkage on the excess over the
        per-pair thresholds, cannot-link = one camera's overlapping tracks and the topology),
        starting from the online identities, so it joins what the online linker kept apart (with
        the whole run in view, including tracks that came later), and rename each track whose
        identity differs from its cluster's (``final`` decisions, published as ``revised``
        updates). Call it after every camera ended."""
        events: list[Event] = []
        gallery = self.gallery
        if gallery is None:
            return events
        records = [self.history[k] for k in sorted(self.history) if self.history[k].evidence is not None]
        tracks = [_cluster_track(s) for s in records]
        clusters = cluster_tracks(
            tracks, self._pair_threshold, self._cannot_link, margin, neighbours, [t.global_id for t in tracks]
        )
        identities, _ = assign_identities(tracks, clusters, gallery.next_global_id)
        for members, gid in zip(clusters, identities):
            centroid = mean_direction(np.sum([tracks[i].evidence for i in members], axis=0))
            for i in members:
                state = records[i]
                if state.global_id == gid:
                    continue
                created = gid >= gallery.next_global_id
                decision = self._track_decision(
                    state,
                    "revised",
                    global_id=gid,
                    previous_global_id=state.global_id,
                    created=created,
                    score=1.0 if len(members) == 1 else float(np.clip(state.evidence @ centroid, -1.0, 1.0)),
                    matched_modality=None,
                    matched_camera_id="",
                    final=True,
                )
                self._emit(decision, events)
        return events

    def hygiene_pass(self, events: list[Event]) -> None:
        """Identity hygiene: re-cluster the tracks of the last ``hygiene.window_s`` (capture time)
        and revise each *live* track whose identity disagrees with its cluster's: a track that is
        clearly apart from the rest of its identity splits off (into another identity or a new
        one), identities that are clearly one person are merged as their live tracks move. Every
        change is an ordinary ``revised`` decision (ended tracks are settled by the final pass)."""
        gallery = self.gallery
        if gallery is None:
            return
        self.counters.hygiene_passes += 1
        since = self.clock - self.hygiene.window_s
        records = [
            self.history[k]
            for k in sorted(self.history)
            if self.history[k].evidence is not None and self.history[k].last_seen_ts >= since
        ]
        if not any(r.key in self.tracks for r in records):
            return
        tracks = [_cluster_track(s) for s in records]
        clusters = cluster_tracks(
            tracks, self._pair_threshold, self._cannot_link, self.hygiene.margin, self.hygiene.neighbours
        )
        identities, _ = assign_identities(tracks, clusters, gallery.next_global_id)
        margin = self.hygiene.margin
        for members, gid in zip(clusters, identities):
            for i in members:
                state = records[i]
                current = state.global_id
                if state.key not in self.tracks or current == gid or current is None:
                    continue
                # Only clear cases: the clustering failing to join two groups is no reason to split.
                here = self._average_excess(state, current)
                if gid in gallery.identities:
                    there = self._average_excess(state, gid)
                    if there < 0 or there - here < margin:
                        continue
                    if gid in self._cooccurring(state) | self._incompatible(state, [gid]):
                        continue
                    target = gallery.match_identity(gid, state.evidence, state.modality, state.key)
                    candidate = None if target is None else to_candidate(target, state.modality, self.rules)
                    if candidate is None:
                        continue
                    self._decide(state, Choice("move", candidate), events)
                elif here < -margin:
                    self._decide(state, Choice("split"), events)
                else:
                    continue
                state.vote_target, state.votes = None, 0

    def _average_excess(self, state: TrackState, gid: int) -> float:
        """Mean of cos(state, track) - threshold over the other tracks of identity ``gid`` (0 if none)."""
        assert state.evidence is not None
        values = [
            float(state.evidence @ other.evidence) - self._pair_threshold(state.modality, other.modality)
            for key in sorted(self.by_identity.get(gid, ()))
            if key != state.key
            and (other := self.tracks.get(key) or self.history.get(key)) is not None
            and other.evidence is not None
        ]
        return float(np.mean(values)) if values else 0.0

    def _pair_threshold(self, a: Modality, b: Modality) -> float:
        return self.rules.same_threshold(a) if a is b else self.rules.cross_threshold

    def _cannot_link(self, a: ClusterTrack, b: ClusterTrack) -> bool:
        if a.camera_id == b.camera_id:
            return lifetimes_overlap(
                a.first_seen_ts,
                a.last_seen_ts,
                b.first_seen_ts,
                b.last_seen_ts,
                self.rules.cooccurrence_min_overlap_s,
            )
        return not self.topology.compatible(
            a.camera_id, a.first_seen_ts, a.last_seen_ts, b.camera_id, b.first_seen_ts, b.last_seen_ts
        )

    # ------------------------------------------------------------------------------ apply (shared)

    def apply(self, event: Event) -> bool:
        """Apply one event (made here or read back from the journal); False if already applied."""
        if event.seq <= self.last_seq:
            return False
        if isinstance(event, EngineAdopted):
            self._apply_engine(event)
        elif isinstance(event, IdentityEviction):
            self._apply_eviction(event)
        elif isinstance(event, IdentityDecision):
            self._apply_decision(event)
        elif isinstance(event, CameraEnded):
            self._apply_camera_ended(event)
        else:
            raise EventError(f"cannot apply {type(event).__name__}")
        self.last_seq = event.seq
        return True

    def _apply_engine(self, event: EngineAdopted) -> None:
        if self.gallery is not None:
            if self.gallery.engine_id != event.engine_id or self.gallery.dim != event.dim:
                raise EventError(
                    f"event {event.seq}: engine {event.engine_id} dim {event.dim} conflicts with the gallery's "
                    f"{self.gallery.engine_id} dim {self.gallery.dim}"
                )
            return
        config = dataclasses.replace(self.gallery_config, engine_id=event.engine_id)
        self.gallery = Gallery(event.dim, config)
        self.gallery.next_global_id = max(self.gallery.next_global_id, self.reserved_global_ids)

    def _apply_eviction(self, event: IdentityEviction) -> None:
        gallery = self._require_gallery(event.seq)
        for gid in event.global_ids:
            for key in self.by_identity.pop(gid, ()):
                if key not in self.tracks:
                    self.history.pop(key, None)  # bounded memory: evicted identities are forgotten
            if gid in gallery.identities:
                gallery.remove_identity(gid)
                if event.reason == "ttl":
                    self.counters.evicted_ttl += 1
                else:
                    self.counters.evicted_capacity += 1

    def _apply_decision(self, event: IdentityDecision) -> None:
        gallery = self._require_gallery(event.seq)
        key = event.track_key
        if event.final:
            self._apply_final(event, gallery)
            return
        state = self.tracks.get(key)
        if state is None:  # recovery: a track that started after the snapshot
            state = TrackState(key, event.modality, event.first_seen_ts, event.last_seen_ts)
            self.tracks[key] = state
            self.camera_tracks.setdefault(event.camera_id, {})[key] = state
        if state.evidence is None or event.sightings > state.sightings:
            state.evidence = _unit(event.embedding)
            state.accumulated = state.evidence * max(float(event.sightings), 1.0)
            state.weight_sum = max(float(event.sightings), 1.0)
        state.sightings = max(state.sightings, event.sightings)
        state.evaluated_at = max(state.evaluated_at, event.sightings)
        state.first_seen_ts = min(state.first_seen_ts, event.first_seen_ts)
        state.last_seen_ts = max(state.last_seen_ts, event.last_seen_ts)
        self.camera_clock[event.camera_id] = max(
            self.camera_clock.get(event.camera_id, -math.inf), event.capture_ts
        )
        self.clock = max(self.clock, event.capture_ts)
        previous = event.previous_global_id
        if previous is not None and previous in gallery.identities:
            gallery.remove_track_prototype(previous, key)
            old = gallery.identities[previous]
            old.live_tracks.discard(key)
            if not old.prototypes and not old.live_tracks:
                gallery.remove_identity(previous)  # its only evidence moved away; the number retires
                self.counters.identities_retired += 1
        if event.created or event.global_id not in gallery.identities:
            # (an existing identity missing here means a journal older than its creation was lost;
            # re-creating it keeps the published number)
            gallery.create_identity(event.capture_ts, event.global_id)
        identity = gallery.identities[event.global_id]
        identity.live_tracks.add(key)
        gallery.touch(event.global_id, state.last_seen_ts)
        if previous is not None:
            self.by_identity.get(previous, set()).discard(key)
        self.by_identity.setdefault(event.global_id, set()).add(key)
        self.history[key] = state
        state.global_id = event.global_id
        state.assigned_seq = event.seq
        state.ambiguous = 0
        state.vote_target = None
        state.votes = 0
        self._refresh_prototype(state)
        name = f"decisions_{event.event}"
        setattr(self.counters, name, getattr(self.counters, name) + 1)

    def _apply_final(self, event: IdentityDecision, gallery: Gallery) -> None:
        """A renaming from the final pass: the record only (no live track, no gallery change)."""
        key = event.track_key
        state = self.history.get(key) or self.tracks.get(key)
        if state is None:  # recovery of a pass over tracks ended before the snapshot
            state = TrackState(key, event.modality, event.first_seen_ts, event.last_seen_ts, event.sightings)
            state.evidence = _unit(event.embedding)
            self.history[key] = state
        if state.global_id is not None:
            self.by_identity.get(state.global_id, set()).discard(key)
        self.by_identity.setdefault(event.global_id, set()).add(key)
        state.global_id = event.global_id
        state.assigned_seq = event.seq
        gallery.next_global_id = max(gallery.next_global_id, event.global_id + 1)
        self.counters.decisions_final += 1

    def _apply_camera_ended(self, event: CameraEnded) -> None:
        live = self.camera_tracks.get(event.camera_id, {})
        for key in sorted(k for k in live if k[0] == event.producer_id):
            self._end_track(live[key])

    # ------------------------------------------------------------------------------ internals

    def _require_gallery(self, seq: int) -> Gallery:
        if self.gallery is None:
            raise EventError(f"event {seq} needs a gallery, but no engine was adopted before it")
        return self.gallery

    def _emit(self, event: Event, events: list[Event]) -> None:
        self.apply(event)
        events.append(event)

    def _accept_engine(
        self, batch: SightingBatch, embeddings: np.ndarray | None, events: list[Event]
    ) -> bool:
        has_rows = bool(batch.embedding_rows) and embeddings is not None
        expected = self.engine_id
        if batch.engine_id and expected and batch.engine_id != expected:
            self.counters.foreign_engine_batches += 1
            return False
        if not has_rows:
            return True
        if not batch.engine_id:
            # Embeddings that do not say which engine made them cannot be compared with anything.
            self.counters.foreign_engine_batches += 1
            return False
        dim = int(embeddings.shape[1])
        if self.gallery is None and not expected and not self.gallery_config.adopt_engine:
            # No engine configured and adopting from the wire not allowed (gallery.adopt_engine).
            self.counters.foreign_engine_batches += 1
            return False
        if self.gallery is None:
            self._emit(EngineAdopted(self.last_seq + 1, batch.engine_id, dim), events)
        elif dim != self.gallery.dim:
            self.counters.wrong_dim_batches += 1
            return False
        return True

    def _vectors(self, batch: SightingBatch, embeddings: np.ndarray | None) -> dict[int, np.ndarray]:
        if embeddings is None or not batch.embedding_rows:
            return {}
        rows = np.asarray(embeddings, dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1)
        out: dict[int, np.ndarray] = {}
        for k, sighting in enumerate(batch.embedding_rows):
            if not (np.isfinite(norms[k]) and norms[k] > 1e-6):
                self.counters.bad_embeddings += 1
                continue
            out[sighting] = rows[k] / norms[k]
        self.counters.embeddings += len(out)
        return out

    def _accumulate(self, state: TrackState, vector: np.ndarray, source: str, quality: float) -> None:
        state.sightings += 1
        if source == "track_mean":
            state.evidence = vector  # the node already aggregates the track
            return
        weight = max(float(quality), _MIN_QUALITY_WEIGHT)
        state.accumulated, state.weight_sum = add_weighted(
            state.accumulated, state.weight_sum, vector, weight
        )
        state.evidence = mean_direction(state.accumulated)

    def _refresh_prototype(self, state: TrackState) -> None:
        gallery = self.gallery
        if gallery is None or state.global_id is None or state.evidence is None:
            return
        if state.global_id not in gallery.identities:
            return
        stored = gallery.set_track_prototype(
            state.global_id,
            state.key,
            state.modality,
            state.camera_id,
            state.evidence,
            float(state.sightings),
            state.last_seen_ts,
        )
        if not stored:
            self.counters.prototypes_refused += 1

    def _cooccurring(self, state: TrackState) -> set[int]:
        """Identities of other tracks of this camera whose lifetime overlaps ``state``'s."""
        out: set[int] = set()
        overlap = self.rules.cooccurrence_min_overlap_s
        for other in self.camera_tracks.get(state.camera_id, {}).values():
            if other is state or other.global_id is None:
                continue
            if lifetimes_overlap(
                state.first_seen_ts, state.last_seen_ts, other.first_seen_ts, other.last_seen_ts, overlap
            ):
                out.add(other.global_id)
        for span in self.ended.get(state.camera_id, ()):
            if lifetimes_overlap(
                state.first_seen_ts, state.last_seen_ts, span.first_seen_ts, span.last_seen_ts, overlap
            ):
                out.add(span.global_id)
        return out

    def _search(self, states: list[TrackState]) -> list[dict[int, Any]]:
        """Nearest identities for each state's evidence (one faiss call per store)."""
        gallery = self.gallery
        assert gallery is not None
        exclusions = [self._cooccurring(s) for s in states]
        extra = len(states) + max(
            (
                sum(len(gallery.identities[g].prototypes) for g in ex if g in gallery.identities)
                for ex in exclusions
            ),
            default=0,
        )
        if self.topology.constrained:
            # Identities the topology rules out are dropped after the search: look deeper, so that
            # top_k possible ones remain where most of the gallery is at other sites.
            extra += self.rules.top_k * min(self.topology.sites - 1, 40)
        results: list[dict[int, Any]] = [{} for _ in states]
        for modality in Modality:
            group = [i for i, s in enumerate(states) if s.modality is modality]
            if not group:
                continue
            queries = np.stack([states[i].evidence for i in group])
            found = gallery.match_many(
                queries, modality, [states[i].key for i in group], self.rules.top_k, extra=extra
            )
            for i, matches in zip(group, found):
                results[i] = matches
        return results

    def _evaluate(self, states: list[TrackState], events: list[Event]) -> None:
        rules = self.rules
        due = [
            s
            for s in states
            if (s.global_id is None and s.sightings >= rules.min_sightings)
            or (s.global_id is not None and s.sightings - s.evaluated_at >= rules.reevaluate_every_sightings)
        ]
        if not due or self.gallery is None:
            return
        found = self._search(due)
        pending: list[tuple[TrackState, list[Candidate]]] = []
        for state, matches in zip(due, found):
            state.evaluated_at = state.sightings
            excluded = self._cooccurring(state) | self._incompatible(state, matches)
            if state.global_id is None:
                pending.append((state, rank_candidates(matches.values(), state.modality, rules, excluded)))
                continue
            current_match = self.gallery.match_identity(
                state.global_id, state.evidence, state.modality, state.key
            )
            current = None if current_match is None else to_candidate(current_match, state.modality, rules)
            others = rank_candidates(matches.values(), state.modality, rules, excluded | {state.global_id})
            choice = choose_revision(current, others, rules)
            if choice.action == "keep":
                state.vote_target, state.votes = None, 0
                continue
            target = choice.candidate.global_id if choice.candidate is not None else SPLIT
            if target == state.vote_target:
                state.votes += 1
            else:
                state.vote_target, state.votes = target, 1
            if state.votes >= rules.revise_votes:
                self._decide(state, choice, events)
        self._decide_jointly(pending, events)

    def _decide_jointly(self, pending: list[tuple[TrackState, list[Candidate]]], events: list[Event]) -> None:
        """First decisions of tracks pending at the same time, one-to-one: no two of them take one
        identity (they are tracks of one camera frame: two people). Where greedy choices collide,
        a linear assignment (scipy's ``linear_sum_assignment``) maximises the summed excess, a new
        identity counting as excess 0; each track then applies rule 1 to the candidates the others
        did not take (so a track that lost its best match to a better claim waits or takes the next)."""
        choices = [choose_initial(c, self.rules, s.ambiguous) for s, c in pending]
        wanted = [ch.candidate.global_id for ch in choices if ch.action == "match" and ch.candidate]
        if self.rules.joint_assignment and len(wanted) != len(set(wanted)):
            from scipy.optimize import linear_sum_assignment

            self.counters.joint_assignments += 1
            gids = sorted({c.global_id for _, cands in pending for c in cands if c.eligible})
            column = {g: j for j, g in enumerate(gids)}
            n = len(pending)
            value = np.full((n, len(gids) + n), -1e6)
            for i, (_, cands) in enumerate(pending):
                for c in cands:
                    if c.eligible:
                        value[i, column[c.global_id]] = c.excess
                value[i, len(gids) + i] = -1e-9  # a new identity: an eligible match beats it
            rows, cols = linear_sum_assignment(-value)
            given = {int(r): int(c) for r, c in zip(rows, cols)}
            for i, (state, cands) in enumerate(pending):
                taken = {gids[c] for r, c in given.items() if r != i and c < len(gids)}
                left = [c for c in cands if c.global_id not in taken]
                choices[i] = choose_initial(left, self.rules, state.ambiguous)
        for (state, cands), choice in zip(pending, choices):
            if choice.action == "match" and choice.candidate is not None:
                busy = self._cooccurring(state)
                if choice.candidate.global_id in busy:
                    # Greedy mode: taken by a track of this frame decided just before.
                    choice = choose_initial(
                        [c for c in cands if c.global_id not in busy], self.rules, state.ambiguous
                    )
            if choice.action == "wait":
                state.ambiguous += 1
                self.counters.ambiguous_waits += 1
                continue
            self._decide(state, choice, events)

    def _incompatible(self, state: TrackState, gids: Any) -> set[int]:
        """Identities (of ``gids``) with a track the camera topology rules out for ``state``."""
        if not self.topology.constrained:
            return set()
        out = set()
        for gid in gids:
            for key in self.by_identity.get(gid, ()):
                other = self.tracks.get(key) or self.history.get(key)
                if key == state.key or other is None:
                    continue
                if not self.topology.compatible(
                    state.camera_id,
                    state.first_seen_ts,
                    state.last_seen_ts,
                    other.camera_id,
                    other.first_seen_ts,
                    other.last_seen_ts,
                ):
                    out.add(gid)
                    break
        self.counters.topology_exclusions += len(out)
        return out

    def _decide_pending(
        self, state: TrackState, events: list[Event], exclude: set[int] | None = None
    ) -> None:
        """Decide now, without waiting (a track that ends, or one that must leave its identity)."""
        if state.sightings < self.rules.min_sightings or state.evidence is None or self.gallery is None:
            if state.global_id is None and state.sightings > 0:
                self.counters.short_tracks_dropped += 1
            return
        matches = self._search([state])[0]
        excluded = self._cooccurring(state) | self._incompatible(state, matches) | (exclude or set())
        candidates = rank_candidates(matches.values(), state.modality, self.rules, excluded)
        self._decide(state, choose_initial(candidates, self.rules, force=True), events)

    def _decide(self, state: TrackState, choice: Choice, events: list[Event]) -> None:
        gallery = self.gallery
        assert gallery is not None and state.evidence is not None
        candidate: Candidate | None = choice.candidate if choice.action in ("match", "move") else None
        if candidate is None and state.global_id is None and self.shared is not None:
            # No local match for a first decision: ask the store shared with other linkers (an
            # identity found there is imported into the gallery and matched).
            candidate = self.shared.find(self, state, self._cooccurring(state))
        target = None if candidate is None else candidate.global_id
        previous = state.global_id
        new_slots = int(gallery.needs_slot(target, state.modality, state.key))
        if previous is not None and previous in gallery.identities:
            if gallery.identities[previous].prototype_of_track(state.key) is not None:
                new_slots = max(0, new_slots - 1)  # its old prototype is freed first
        protect = {g for g in (target, previous) if g is not None}
        evict = gallery.eviction_candidates(int(candidate is None), new_slots, protect)
        if evict is None:
            if candidate is None:
                self.counters.refused_capacity += 1
                return  # no room for a new identity: the track stays as it is for now
        elif evict:
            self._emit(IdentityEviction(self.last_seq + 1, tuple(evict), "capacity", self.clock), events)
        created = candidate is None
        if previous is None:
            kind = "new" if created else "matched"
        else:
            kind = "revised"
        decision = self._track_decision(
            state,
            kind,
            global_id=gallery.next_global_id if created else target,
            previous_global_id=previous,
            created=created,
            score=1.0 if created else float(np.clip(candidate.cosine, -1.0, 1.0)),
            matched_modality=None if created else candidate.matched_modality,
            matched_camera_id="" if created else candidate.matched_camera_id,
        )
        self._emit(decision, events)

    def _track_decision(self, state: TrackState, event: str, **outcome: Any) -> IdentityDecision:
        """The next :class:`IdentityDecision` about ``state``'s track: what the track is (ids,
        modality, times, sightings, evidence) comes from ``state``; ``outcome`` says what was decided
        (``global_id``, ``previous_global_id``, ``created``, ``score``, the match, ``final``)."""
        return IdentityDecision(
            seq=self.last_seq + 1,
            event=event,
            producer_id=state.key[0],
            camera_id=state.camera_id,
            track_id=state.key[2],
            modality=state.modality,
            capture_ts=state.last_seen_ts,
            source_seq=state.last_source_seq,
            frame_index=state.last_frame_index,
            first_seen_ts=state.first_seen_ts,
            last_seen_ts=state.last_seen_ts,
            sightings=state.sightings,
            engine_id=self.engine_id,
            embedding=state.evidence.copy(),
            **outcome,
        )

    def _resolve_conflicts(self, camera: str, seen: list[TrackState], events: list[Event]) -> None:
        """Rule 3 after the fact: two overlapping tracks of one camera holding the same identity.

        The track assigned later (higher decision seq) is re-decided at once without that identity;
        against an ended track, the live one yields (an ended track is never revised).
        """
        overlap = self.rules.cooccurrence_min_overlap_s
        live = self.camera_tracks.get(camera, {})
        for state in seen:
            if state.global_id is None or state.key not in self.tracks:
                continue
            for other in sorted(live.values(), key=lambda s: s.key):
                gid = state.global_id
                if other is state or gid is None or other.global_id != gid:
                    continue
                if not lifetimes_overlap(
                    state.first_seen_ts, state.last_seen_ts, other.first_seen_ts, other.last_seen_ts, overlap
                ):
                    continue
                loser = state if (state.assigned_seq, state.key) > (other.assigned_seq, other.key) else other
                self.counters.conflicts_resolved += 1
                self._decide_pending(loser, events, exclude={gid})
            gid = state.global_id
            for span in self.ended.get(camera, ()):
                if gid is None or span.global_id != gid or span.key == state.key:
                    continue
                if lifetimes_overlap(
                    state.first_seen_ts, state.last_seen_ts, span.first_seen_ts, span.last_seen_ts, overlap
                ):
                    self.counters.conflicts_resolved += 1
                    self._decide_pending(state, events, exclude={gid})
                    break

    def _resolve_topology(self, seen: list[TrackState], events: list[Event]) -> None:
        """The topology after the fact: two tracks of one identity that one person cannot have made
        (lifetimes grew into each other). The one assigned later yields; against an ended track the
        live one yields."""
        if not self.topology.constrained:
            return
        for state in seen:
            gid = state.global_id
            if gid is None or state.key not in self.tracks:
                continue
            for key in sorted(self.by_identity.get(gid, ())):
                other = self.tracks.get(key) or self.history.get(key)
                if key == state.key or other is None or other.camera_id == state.camera_id:
                    continue
                if self.topology.compatible(
                    state.camera_id,
                    state.first_seen_ts,
                    state.last_seen_ts,
                    other.camera_id,
                    other.first_seen_ts,
                    other.last_seen_ts,
                ):
                    continue
                live_other = key in self.tracks
                later = (state.assigned_seq, state.key) > (other.assigned_seq, other.key)
                loser = state if (not live_other or later) else other
                self.counters.topology_conflicts += 1
                self._decide_pending(loser, events, exclude={gid})
                break

    def _end_idle_tracks(self, camera: str, events: list[Event]) -> None:
        now = self.camera_clock.get(camera, -math.inf)
        live = self.camera_tracks.get(camera, {})
        idle = sorted(k for k, s in live.items() if s.last_seen_ts < now - self.rules.track_idle_s)
        for key in idle:
            state = live[key]
            if state.global_id is None:
                self._decide_pending(state, events)
            self._end_track(state)

    def _end_track(self, state: TrackState) -> None:
        key = state.key
        camera = state.camera_id
        self.tracks.pop(key, None)
        live = self.camera_tracks.get(camera, {})
        live.pop(key, None)
        self.counters.tracks_ended += 1
        state.accumulated = None  # an ended track takes no more sightings (its record keeps the evidence)
        gallery = self.gallery
        if state.global_id is not None:
            if gallery is not None and state.global_id in gallery.identities:
                gallery.identities[state.global_id].live_tracks.discard(key)
            self.ended.setdefault(camera, []).append(
                EndedSpan(key, state.first_seen_ts, state.last_seen_ts, state.global_id)
            )
        # An ended span matters only while a live track of the camera started before it ended.
        if live:
            earliest = min(s.first_seen_ts for s in live.values())
            self.ended[camera] = [
                s
                for s in self.ended.get(camera, [])
                if s.last_seen_ts >= earliest - self.rules.cooccurrence_min_overlap_s
            ]
        else:
            self.ended.pop(camera, None)

    def _expire(self, events: list[Event]) -> None:
        gallery = self.gallery
        if gallery is None:
            return
        # A camera that went silent without an end of stream: its tracks end after ttl_s.
        stale = sorted(
            k for k, s in self.tracks.items() if s.last_seen_ts < self.clock - gallery.config.ttl_s
        )
        for key in stale:
            self._end_track(self.tracks[key])
        expired = gallery.expired(self.clock)
        if expired:
            self._emit(IdentityEviction(self.last_seq + 1, tuple(expired), "ttl", self.clock), events)


def _cluster_track(s: TrackState) -> ClusterTrack:
    assert s.evidence is not None
    return ClusterTrack(
        s.key,
        s.camera_id,
        s.modality,
        s.first_seen_ts,
        s.last_seen_ts,
        s.evidence,
        float(max(s.sightings, 1)),
        s.global_id,
    )


def _unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v.copy()
