"""Global clustering of camera tracks into people: average linkage under cannot-link constraints.

Used by the linker's identity hygiene (periodic micro-batch re-clustering of recent tracks, in the
manner of NVIDIA Metropolis' multi-camera tracker, which re-clusters its behaviours in micro
batches and re-assigns identities) and by the final offline pass of a replay, which clusters every
track of the run and publishes the final identities.

Score of two clusters A and B: the *average excess* over all their cross pairs of tracks,
``mean(cos(a, b) - threshold(modality(a), modality(b)))``, with the per-pair thresholds of the
engine's calibration. Because the tracks' evidence vectors are unit length, the mean cosine of a
modality pair is ``dot(sum_A, sum_B) / (n_A n_B)`` of per-modality sums, so the exact average
linkage costs O(D) per cluster pair. Clusters merge best-first while the score is >= ``margin``
and no cannot-link pair is between them:

- two tracks of one camera whose lifetimes overlap (two people seen at once);
- two tracks the camera topology rules out (:class:`edge.linking.topology.Topology`).

Candidate pairs come from each track's ``neighbours`` nearest tracks (inner product), so the work
grows as N x neighbours, not N^2; merged clusters inherit both sides' candidates.

:func:`assign_identities` maps clusters to identity numbers: a number stays with the cluster that
holds its earliest track, the others get new numbers.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.modality import Modality

__all__ = ["ClusterTrack", "assign_identities", "cluster_tracks"]


@dataclass(frozen=True)
class ClusterTrack:
    """One track as the clustering sees it.

    Attributes:
        key: (producer_id, camera_id, track_id).
        camera_id, modality: of its camera.
        first_seen_ts, last_seen_ts: its lifetime (capture s).
        evidence: (D,) float32 unit vector.
        weight: how much it counts when clusters are named (its sightings).
        global_id: its identity now (None: none yet).
    """

    key: tuple[str, str, int]
    camera_id: str
    modality: Modality
    first_seen_ts: float
    last_seen_ts: float
    evidence: np.ndarray
    weight: float = 1.0
    global_id: int | None = None


CannotLink = Callable[[ClusterTrack, ClusterTrack], bool]


class _Cluster:
    __slots__ = ("members", "sums", "counts", "version")

    def __init__(self, index: int, track: ClusterTrack, dim: int) -> None:
        self.members = [index]
        self.sums = {m: np.zeros(dim, np.float64) for m in Modality}
        self.counts = dict.fromkeys(Modality, 0)
        self.sums[track.modality] += track.evidence
        self.counts[track.modality] = 1
        self.version = 0


def cluster_tracks(
    tracks: Sequence[ClusterTrack],
    threshold: Callable[[Modality, Modality], float],
    cannot_link: CannotLink,
    margin: float = 0.0,
    neighbours: int = 10,
    start: Sequence[int | None] | None = None,
) -> list[list[int]]:
    """Clusters of ``tracks`` (lists of indices into it, each sorted, clusters ordered by first index).

    Args:
        threshold: the least cosine of a same-person pair for two modalities (symmetric).
        cannot_link: True for two tracks that cannot be one person.
        margin: the least average excess at which two clusters merge.
        neighbours: candidate partners per track.
        start: optional label per track: tracks with one label start as one cluster (the online
            identities: the final pass then only merges what the online linker kept apart);
            ``None``: a singleton.

    Deterministic: ties are broken by cluster indices.
    """
    n = len(tracks)
    if n == 0:
        return []
    dim = int(tracks[0].evidence.shape[0])
    x = np.stack([t.evidence for t in tracks]).astype(np.float32)
    clusters: dict[int, _Cluster] = {i: _Cluster(i, t, dim) for i, t in enumerate(tracks)}
    candidates: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, row in enumerate(_nearest(x, min(neighbours, n - 1))):
        for j in row:
            if j != i:
                candidates[i].add(int(j))
                candidates[int(j)].add(i)
    owner = list(range(n))
    if start is not None:
        first: dict[int, int] = {}
        for i, label in enumerate(start):
            if label is None:
                continue
            if label not in first:
                first[label] = i
                continue
            a = first[label]
            owner[i] = a
            cluster = clusters.pop(i)
            clusters[a].members.append(i)
            for m in Modality:
                clusters[a].sums[m] += cluster.sums[m]
                clusters[a].counts[m] += cluster.counts[m]
        merged: dict[int, set[int]] = {i: set() for i in clusters}
        for i, partners in candidates.items():
            merged[owner[i]] |= {owner[j] for j in partners}
        candidates = {i: p - {i} for i, p in merged.items()}
    thresholds = {(a, b): threshold(a, b) for a in Modality for b in Modality}
    heap: list[tuple[float, int, int, int, int]] = []

    def push(a: int, b: int) -> None:
        if a > b:
            a, b = b, a
        score = _score(clusters[a], clusters[b], thresholds)
        if score >= margin:
            heapq.heappush(heap, (-score, a, b, clusters[a].version, clusters[b].version))

    for i in sorted(clusters):
        for j in sorted(candidates[i]):
            if i < j:
                push(i, j)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if a not in clusters or b not in clusters or clusters[a].version != va or clusters[b].version != vb:
            continue
        if any(cannot_link(tracks[p], tracks[q]) for p in clusters[a].members for q in clusters[b].members):
            continue
        merged = clusters[a]
        other = clusters.pop(b)
        merged.members += other.members
        for m in Modality:
            merged.sums[m] += other.sums[m]
            merged.counts[m] += other.counts[m]
        merged.version += 1
        candidates[a] = (candidates[a] | candidates.pop(b)) - {a, b}
        for c in candidates[a]:
            if c in clusters:
                candidates[c].discard(b)
                candidates[c].add(a)
                push(a, c)
    return sorted((sorted(c.members) for c in clusters.values()), key=lambda m: m[0])


def _score(a: _Cluster, b: _Cluster, thresholds: dict[tuple[Modality, Modality], float]) -> float:
    """Average excess over all cross pairs of tracks (module docstring)."""
    total = 0.0
    pairs = 0
    for ma in Modality:
        if not a.counts[ma]:
            continue
        for mb in Modality:
            if not b.counts[mb]:
                continue
            count = a.counts[ma] * b.counts[mb]
            total += float(a.sums[ma] @ b.sums[mb]) - thresholds[(ma, mb)] * count
            pairs += count
    return total / pairs if pairs else -np.inf


def _nearest(x: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's k most similar other rows (inner product), in blocks."""
    n = len(x)
    if k <= 0:
        return np.zeros((n, 0), np.int64)
    out = np.empty((n, k), np.int64)
    block = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n, block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.argsort(-sims, axis=1)[:, :k]
        out[start : start + block] = part
    return out


def assign_identities(
    tracks: Sequence[ClusterTrack], clusters: list[list[int]], next_id: int
) -> tuple[list[int], int]:
    """An identity per cluster: an identity number stays with the cluster holding its earliest
    track (consumers saw it there first); a cluster that holds several keeps the one most of its
    sightings have, a cluster that holds none gets a new number from ``next_id``.
    Returns (identity per cluster, the next free number)."""
    owner: dict[int, tuple[tuple[float, tuple[str, str, int]], int]] = {}
    for c, members in enumerate(clusters):
        for i in members:
            g = tracks[i].global_id
            if g is None:
                continue
            claim = (tracks[i].first_seen_ts, tracks[i].key)
            if g not in owner or claim < owner[g][0]:
                owner[g] = (claim, c)
    out = []
    for c, members in enumerate(clusters):
        votes: Counter[int] = Counter()
        for i in members:
            g = tracks[i].global_id
            if g is not None and owner[g][1] == c:
                votes[g] += tracks[i].weight
        if votes:
            out.append(min(votes, key=lambda g: (-votes[g], g)))
        else:
            out.append(next_id)
            next_id += 1
    return out, next_id
