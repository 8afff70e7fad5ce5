"""Synthetic sightings for the linker's tests: people as random unit vectors, modality as a shift.

A person ``i`` is a random unit vector ``p_i``; a camera of modality ``m`` sees
``normalize(p_i + gap * d_m + noise)`` where ``d_visible = -d_infrared`` is one shared direction,
so same-person cosines are high within a modality and lower across (as for MPANet), and different
people of one modality share the modality component (cosine ~0.2), as real embeddings do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from common.modality import Modality
from edge.messages import EndOfStream, SightingBatch, encode_message

ENGINE_ID = "0123456789abcdef"


@dataclass
class People:
    """``n`` synthetic people in ``dim`` dimensions (see the module docstring)."""

    n: int
    dim: int = 64
    gap: float = 0.5
    noise: float = 0.35
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        base = rng.standard_normal((self.n, self.dim))
        self.base = base / np.linalg.norm(base, axis=1, keepdims=True)
        direction = rng.standard_normal(self.dim)
        self.direction = direction / np.linalg.norm(direction)
        self.rng = np.random.default_rng(self.seed + 1)

    def embed(self, person: int, modality: Modality, noise: float | None = None) -> np.ndarray:
        """One unit (D,) float32 embedding of ``person`` seen in ``modality``."""
        sign = 1.0 if modality is Modality.VISIBLE else -1.0
        sigma = self.noise if noise is None else noise
        v = self.base[person] + sign * self.gap * self.direction
        v = v + sigma * self.rng.standard_normal(self.dim) / np.sqrt(self.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)


def sighting_batch(
    camera_id: str,
    modality: Modality,
    seq: int,
    ts: float,
    track_ids: list[int],
    embeddings: np.ndarray | None,
    producer_id: str = "node0",
    engine_id: str = ENGINE_ID,
    dtype: str = "float16",
) -> tuple[SightingBatch, np.ndarray | None]:
    """A SightingBatch of one frame (every sighting has an embedding row) and its (N, D) rows."""
    n = len(track_ids)
    rows = list(range(n)) if embeddings is not None and n else []
    shape = (n, int(embeddings.shape[1])) if rows else (0, 0)
    batch = SightingBatch(
        producer_id=producer_id,
        camera_id=camera_id,
        seq=seq,
        capture_ts=ts,
        send_ts=time.time(),
        engine_id=engine_id,
        modality=modality,
        frame_index=seq,
        frame_width=640,
        frame_height=480,
        boxes=[(10.0 * k, 10.0, 10.0 * k + 40.0, 120.0) for k in range(n)],
        track_ids=track_ids,
        scores=[0.9] * n,
        quality=[1.0] * n,
        embedding_rows=rows,
        embedding_dtype=dtype,
        embedding_shape=shape,
    )
    return batch, (np.asarray(embeddings, dtype=dtype) if rows else None)


@dataclass(frozen=True)
class Appearance:
    """``person`` walks through ``camera_id`` as ``track_id`` from ``start_s`` for ``duration_s``."""

    person: int
    camera_id: str
    modality: Modality
    track_id: int
    start_s: float
    duration_s: float


def scene_messages(
    people: People,
    appearances: list[Appearance],
    fps: float = 10.0,
    producer_id: str = "node0",
    engine_id: str = ENGINE_ID,
    end_of_stream: bool = True,
) -> list[tuple[SightingBatch | EndOfStream, np.ndarray | None]]:
    """Every camera's frames in capture-time order (one batch per camera frame, empty ones too),
    each track sending its running mean (``track_mean``), then one end-of-stream per camera."""
    cameras = sorted({(a.camera_id, a.modality) for a in appearances})
    end_s = max(a.start_s + a.duration_s for a in appearances) + 1.0 / fps
    sums: dict[tuple[str, int], np.ndarray] = {}
    out: list[tuple[SightingBatch | EndOfStream, np.ndarray | None]] = []
    seqs = {camera: 0 for camera, _ in cameras}
    frames = int(round(end_s * fps)) + 1
    for f in range(frames):
        ts = f / fps
        for camera, modality in cameras:
            tracks, rows = [], []
            for a in appearances:
                if a.camera_id == camera and a.start_s <= ts < a.start_s + a.duration_s:
                    key = (camera, a.track_id)
                    sums[key] = sums.get(key, 0) + people.embed(a.person, modality)
                    tracks.append(a.track_id)
                    rows.append(sums[key] / np.linalg.norm(sums[key]))
            emb = np.stack(rows) if rows else None
            out.append(
                sighting_batch(camera, modality, seqs[camera], ts, tracks, emb, producer_id, engine_id)
            )
            seqs[camera] += 1
    for camera, _ in cameras:
        eos = EndOfStream(
            producer_id=producer_id,
            camera_id=camera,
            seq=seqs[camera],
            capture_ts=end_s,
            send_ts=time.time(),
            engine_id=engine_id,
            reason="source_ended",
            messages_sent=seqs[camera],
        )
        out.append((eos, None))
    return out


def encode(item: tuple[SightingBatch | EndOfStream, np.ndarray | None]) -> list[bytes]:
    """Wire frames of one scene message (bytes, ready for send_multipart)."""
    return [bytes(f) for f in encode_message(item[0], item[1])]


def basis(dim: int, *weights: float) -> np.ndarray:
    """A unit (dim,) float32 vector ``sum_k weights[k] * e_k`` plus whatever completes it to unit length
    along the last axis (so ``cos(basis(d, c), e_0) == c``)."""
    v = np.zeros(dim, dtype=np.float64)
    v[: len(weights)] = weights
    rest = 1.0 - float(np.sum(v**2))
    assert rest >= -1e-9 and len(weights) < dim
    v[dim - 1] = np.sqrt(max(rest, 0.0))
    return v.astype(np.float32)


def feed(
    linker,
    camera_id: str,
    modality: Modality,
    ts: float,
    tracks: dict[int, np.ndarray],
    seq: int = 0,
    producer_id: str = "node0",
    engine_id: str = ENGINE_ID,
):
    """One frame of ``camera_id`` at ``ts`` with ``{track_id: evidence}`` (float32 rows) into ``linker``."""
    ids = sorted(tracks)
    emb = np.stack([tracks[t] for t in ids]) if ids else None
    batch, rows = sighting_batch(
        camera_id, modality, seq, ts, ids, emb, producer_id, engine_id, dtype="float32"
    )
    return linker.observe(batch, rows)
