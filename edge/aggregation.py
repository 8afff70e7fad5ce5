"""Per-track aggregated embeddings: a quality-weighted running mean of L2-normalised vectors.

:func:`add_weighted` and :func:`mean_direction` are that mean; the edge node's
:class:`TrackEmbeddings` and the linker (tracks that send ``crop`` rows) both use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def add_weighted(
    total: np.ndarray | None, weight_sum: float, unit: np.ndarray, weight: float
) -> tuple[np.ndarray, float]:
    """One step of the running mean: ``(total + weight * unit, weight_sum + weight)``.

    Args:
        total: (D,) the weighted sum so far (None: nothing yet); its dtype is kept (else ``unit``'s).
        weight_sum: the weights in ``total``.
        unit: (D,) an L2-normalised vector.
        weight: its weight (> 0; the caller floors or skips non-positive qualities).

    Returns a new array (``total`` is not modified) and the new weight sum.
    """
    step = weight * unit
    return (step if total is None else total + step), weight_sum + float(weight)


def mean_direction(total: np.ndarray) -> np.ndarray:
    """The running mean's direction: ``total / |total|`` (same dtype; a zero sum stays zero)."""
    return total / max(float(np.linalg.norm(total)), 1e-12)


@dataclass
class _TrackState:
    total: np.ndarray  # (D,) float64 weighted sum of unit vectors
    weight: float
    count: int
    last_seen_s: float


@dataclass
class TrackEmbeddings:
    """Aggregated embedding per (camera_id, track_id).

    The aggregate after crops e_1..e_n (unit vectors) with qualities q_1..q_n is
    ``normalize(sum q_i e_i)``: the weighted mean direction, so good crops count more and a single
    blurred or occluded crop cannot swing an established track.

    Attributes:
        max_age_s: tracks not updated for this long are forgotten (:meth:`expire`).
    """

    max_age_s: float = 30.0
    _tracks: dict[tuple[str, int], _TrackState] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._tracks)

    def update(
        self, camera_id: str, track_ids: np.ndarray, embeddings: np.ndarray, weights: np.ndarray, now_s: float
    ) -> None:
        """Add crop embeddings (M, D) with weights (M,) > 0 to their tracks (M,)."""
        embeddings = np.asarray(embeddings, np.float64)
        if embeddings.ndim != 2 or len(embeddings) != len(track_ids) or len(weights) != len(track_ids):
            raise ValueError(
                f"update needs (M, D) embeddings, M track ids and M weights; got {embeddings.shape}, "
                f"{len(track_ids)}, {len(weights)}"
            )
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        units = embeddings / np.maximum(norms, 1e-12)
        for track_id, unit, weight in zip(
            np.asarray(track_ids).tolist(), units, np.asarray(weights).tolist()
        ):
            if weight <= 0:
                continue
            key = (camera_id, int(track_id))
            state = self._tracks.get(key)
            if state is None:
                total, weight_sum = add_weighted(None, 0.0, unit, weight)
                self._tracks[key] = _TrackState(total, weight_sum, 1, now_s)
            else:
                if state.total.shape != unit.shape:
                    raise ValueError(
                        f"track {key}: embedding size changed from {state.total.shape} to {unit.shape}"
                    )
                state.total, state.weight = add_weighted(state.total, state.weight, unit, weight)
                state.count += 1
                state.last_seen_s = now_s

    def get(self, camera_id: str, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aggregates of the given tracks.

        Returns:
            ``(rows, vectors)``: indices into ``track_ids`` of the tracks that have an aggregate
            (int64, increasing) and their (len(rows), D) float32 unit vectors.
        """
        rows, vectors = [], []
        for row, track_id in enumerate(np.asarray(track_ids).tolist()):
            state = self._tracks.get((camera_id, int(track_id)))
            if state is not None:
                rows.append(row)
                vectors.append(mean_direction(state.total))
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.asarray(rows, np.int64), np.asarray(vectors, np.float32)

    def crops_seen(self, camera_id: str, track_id: int) -> int:
        state = self._tracks.get((camera_id, int(track_id)))
        return 0 if state is None else state.count

    def expire(self, now_s: float, camera_id: str | None = None) -> int:
        """Forget tracks (of ``camera_id``, or all) not updated for ``max_age_s``; returns how many."""
        old = [
            key
            for key, state in self._tracks.items()
            if (camera_id is None or key[0] == camera_id) and now_s - state.last_seen_s > self.max_age_s
        ]
        for key in old:
            del self._tracks[key]
        return len(old)
