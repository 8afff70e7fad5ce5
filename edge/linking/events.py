"""State changes of the linker: what the journal records and what recovery replays.

Every change that must survive a crash is one of these events, numbered by ``seq`` (1, 2, ...):
an identity decision about a track (new / matched / revised), an eviction, the adoption of an
engine, or the end of a camera's stream. The linker applies the *same* :meth:`~edge.linking.linker.IdentityLinker.apply` code to an
event when it makes it and when recovery replays it from the journal.

JSON form (one journal line): plain fields; a decision's evidence vector travels as base64 of
little-endian float16 (``embedding_b64``): 2 bytes per dimension, the precision of the wire.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from common.modality import Modality


class EventError(ValueError):
    """A journal entry that is not a valid event."""


@dataclass(frozen=True)
class IdentityDecision:
    """A track was given a global identity (first time, or revised).

    Attributes:
        seq: event number.
        event: ``new`` (a new identity), ``matched`` (an existing one, first decision),
            ``revised`` (moved from ``previous_global_id``; into a new identity if ``created``).
        producer_id, camera_id, track_id: the track (track ids are local to producer and camera).
        modality: the track's modality.
        global_id: the identity given.
        previous_global_id: the identity before a revision, else None.
        created: ``global_id`` is a new identity made by this decision.
        score: cosine of the matched prototype (1.0 when ``created``).
        matched_modality, matched_camera_id: the matched prototype's modality / camera (None, "").
        capture_ts: capture time (s) of the sighting that triggered the decision.
        source_seq, frame_index: ``seq`` and frame of that sighting batch.
        first_seen_ts, last_seen_ts: the track's lifetime so far (capture s).
        sightings: the track's sightings with an embedding so far.
        engine_id: engine of the evidence.
        embedding: the track's evidence, (D,) float32 unit length.
        final: made by the final offline pass of a replay (:meth:`IdentityLinker.final_pass`), or
            by identity hygiene for an ended track: it renames the track's identity in the record
            (published as a ``revised`` update) and touches neither live tracks nor the gallery.
    """

    seq: int
    event: Literal["new", "matched", "revised"]
    producer_id: str
    camera_id: str
    track_id: int
    modality: Modality
    global_id: int
    previous_global_id: int | None
    created: bool
    score: float
    matched_modality: Modality | None
    matched_camera_id: str
    capture_ts: float
    source_seq: int
    frame_index: int
    first_seen_ts: float
    last_seen_ts: float
    sightings: int
    engine_id: str
    embedding: np.ndarray
    final: bool = False

    @property
    def track_key(self) -> tuple[str, str, int]:
        return (self.producer_id, self.camera_id, self.track_id)


@dataclass(frozen=True)
class IdentityEviction:
    """Identities removed from the gallery (``reason``: ``ttl`` or ``capacity``) at capture time ``ts``."""

    seq: int
    global_ids: tuple[int, ...]
    reason: Literal["ttl", "capacity"]
    ts: float


@dataclass(frozen=True)
class EngineAdopted:
    """The gallery took ``engine_id`` and embedding size ``dim`` from the first accepted batch."""

    seq: int
    engine_id: str
    dim: int


@dataclass(frozen=True)
class CameraEnded:
    """The stream of (``producer_id``, ``camera_id``) ended at capture time ``ts``: its tracks end."""

    seq: int
    producer_id: str
    camera_id: str
    ts: float


Event = IdentityDecision | IdentityEviction | EngineAdopted | CameraEnded


def event_to_json(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of ``event`` (``kind`` says which)."""
    if isinstance(event, IdentityDecision):
        raw = np.ascontiguousarray(event.embedding, dtype="<f2").tobytes()
        return {
            "kind": "decision",
            "seq": event.seq,
            "event": event.event,
            "producer_id": event.producer_id,
            "camera_id": event.camera_id,
            "track_id": event.track_id,
            "modality": str(event.modality),
            "global_id": event.global_id,
            "previous_global_id": event.previous_global_id,
            "created": event.created,
            "score": event.score,
            "matched_modality": None if event.matched_modality is None else str(event.matched_modality),
            "matched_camera_id": event.matched_camera_id,
            "capture_ts": event.capture_ts,
            "source_seq": event.source_seq,
            "frame_index": event.frame_index,
            "first_seen_ts": event.first_seen_ts,
            "last_seen_ts": event.last_seen_ts,
            "sightings": event.sightings,
            "engine_id": event.engine_id,
            "embedding_b64": base64.b64encode(raw).decode("ascii"),
            "final": event.final,
        }
    if isinstance(event, IdentityEviction):
        return {
            "kind": "eviction",
            "seq": event.seq,
            "global_ids": list(event.global_ids),
            "reason": event.reason,
            "ts": event.ts,
        }
    if isinstance(event, EngineAdopted):
        return {"kind": "engine", "seq": event.seq, "engine_id": event.engine_id, "dim": event.dim}
    if isinstance(event, CameraEnded):
        return {
            "kind": "camera_ended",
            "seq": event.seq,
            "producer_id": event.producer_id,
            "camera_id": event.camera_id,
            "ts": event.ts,
        }
    raise TypeError(f"not an event: {type(event).__name__}")


def event_from_json(data: dict[str, Any]) -> Event:
    """Rebuild an event from :func:`event_to_json`'s dict.

    Raises:
        EventError: unknown kind, missing or malformed field.
    """
    try:
        kind = data["kind"]
        if kind == "decision":
            embedding = np.frombuffer(base64.b64decode(data["embedding_b64"], validate=True), dtype="<f2")
            matched = data["matched_modality"]
            return IdentityDecision(
                seq=int(data["seq"]),
                event=data["event"],
                producer_id=str(data["producer_id"]),
                camera_id=str(data["camera_id"]),
                track_id=int(data["track_id"]),
                modality=Modality.parse(data["modality"]),
                global_id=int(data["global_id"]),
                previous_global_id=None
                if data["previous_global_id"] is None
                else int(data["previous_global_id"]),
                created=bool(data["created"]),
                score=float(data["score"]),
                matched_modality=None if matched is None else Modality.parse(matched),
                matched_camera_id=str(data["matched_camera_id"]),
                capture_ts=float(data["capture_ts"]),
                source_seq=int(data["source_seq"]),
                frame_index=int(data["frame_index"]),
                first_seen_ts=float(data["first_seen_ts"]),
                last_seen_ts=float(data["last_seen_ts"]),
                sightings=int(data["sightings"]),
                engine_id=str(data["engine_id"]),
                embedding=embedding.astype(np.float32),
                final=bool(data.get("final", False)),  # journals written before final passes lack it
            )
        if kind == "eviction":
            return IdentityEviction(
                seq=int(data["seq"]),
                global_ids=tuple(int(g) for g in data["global_ids"]),
                reason=data["reason"],
                ts=float(data["ts"]),
            )
        if kind == "engine":
            return EngineAdopted(seq=int(data["seq"]), engine_id=str(data["engine_id"]), dim=int(data["dim"]))
        if kind == "camera_ended":
            return CameraEnded(
                seq=int(data["seq"]),
                producer_id=str(data["producer_id"]),
                camera_id=str(data["camera_id"]),
                ts=float(data["ts"]),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise EventError(f"malformed {data.get('kind', '?')} event: {exc!r}") from exc
    raise EventError(f"unknown event kind {kind!r} (expected decision, eviction, engine or camera_ended)")
