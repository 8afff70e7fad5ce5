"""Re-identification metrics (CMC, mAP, mINP) as pure, vectorised numpy functions (spec section 4.4).

Both functions take a distance matrix ``distmat`` (num_query, num_gallery) where smaller means more
similar, rank every row with ``np.argsort(distmat, axis=1)`` (the same call as the AGW baseline, so
ties break identically), and return a dict:

- ``rank1``, ``rank5``, ``rank10``, ``rank20``, ``mAP``, ``mINP``: floats in [0, 1];
- ``cmc``: float64 array, ``cmc[k-1]`` = fraction of valid queries matched within rank k (its length
  is the number of gallery identities for SYSU, the gallery size for RegDB; a rank beyond the end
  reads the last value);
- ``num_queries``, ``num_valid_queries``.

Conventions (identical to AGW's ``eval_sysu`` / ``eval_regdb`` in ``eval_metrics.py``):

- a query with no true match left in its ranking is *invalid* and left out of every average;
- AP = (1/G) sum_j j / rank_j over the G true matches (rank_j 1-based, in the ranking after removals);
- INP = G / rank of the last (hardest) true match; mINP is its mean over valid queries;
- SYSU: a query from camera 3 ignores every gallery image from camera 2 (same room), whatever its
  identity; the CMC is the *unique-identity* CMC (after removal, keep only the first occurrence of
  each identity; rank-k hit = the true identity among the first k distinct identities); mAP and
  mINP use the raw ranking after removal;
- RegDB: no removal; *standard* CMC (position of the first true match in the raw ranking).

AGW stores its CMC as float32; these functions use float64, so they differ from AGW by < 1e-7.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["RANKS", "evaluate_regdb", "evaluate_sysu"]

RANKS = (1, 5, 10, 20)


def evaluate_sysu(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> dict[str, Any]:
    """SYSU-MM01 metrics: cam-3 queries skip cam-2 gallery images; unique-identity CMC; mAP; mINP.

    Args:
        distmat: (Q, G) distances, smaller = more similar (any real dtype).
        q_pids, g_pids: (Q,) and (G,) integer identities.
        q_camids, g_camids: (Q,) and (G,) integer SYSU camera ids (1..6).

    Raises:
        ValueError: shapes that do not fit, or no query with a true match.
    """
    distmat, q_pids, g_pids = _check(distmat, q_pids, g_pids)
    q_camids = _vector(q_camids, distmat.shape[0], "q_camids")
    g_camids = _vector(g_camids, distmat.shape[1], "g_camids")
    identities, g_codes, q_codes = _codes(q_pids, g_pids)
    g_cam2 = g_camids == 2
    # Gallery columns grouped by identity, for the first-occurrence positions of each identity.
    by_identity = np.argsort(g_codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(g_codes[by_identity]) != 0])

    def rows(chunk: slice) -> tuple[np.ndarray, ...]:
        indices = np.argsort(distmat[chunk], axis=1)
        num_q, num_g = indices.shape
        keep = None
        if np.any(q_camids[chunk] == 3):
            keep = ~((q_camids[chunk] == 3)[:, None] & g_cam2[indices])
        codes = g_codes[indices]
        matches = codes == q_codes[chunk, None]
        if keep is not None:
            matches &= keep
        valid, ap, inp = _ap_inp(matches, keep)
        # Unique-identity CMC: 0-based rank of the true identity among the distinct identities of the
        # kept ranking = number of identities whose first kept position comes before the true one's.
        ranks = np.broadcast_to(np.arange(num_g, dtype=np.int32), (num_q, num_g))
        if keep is not None:
            ranks = np.where(keep, ranks, np.int32(num_g))  # removed items never come first
        position = np.empty((num_q, num_g), dtype=np.int32)
        np.put_along_axis(position, indices, ranks, axis=1)
        first = np.minimum.reduceat(position[:, by_identity], starts, axis=1)  # (q, identities)
        true_first = first[np.arange(num_q), np.maximum(q_codes[chunk], 0)]
        unique_rank = np.count_nonzero(first < true_first[:, None], axis=1)
        return valid, ap, inp, unique_rank

    valid, ap, inp, unique_rank = _by_chunks(rows, distmat.shape[0])
    return _summary(unique_rank[valid], identities.size, valid, ap, inp)


def evaluate_regdb(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray) -> dict[str, Any]:
    """RegDB metrics (AGW ``eval_regdb``): no camera filtering, standard CMC, mAP, mINP.

    Args:
        distmat: (Q, G) distances, smaller = more similar.
        q_pids, g_pids: (Q,) and (G,) integer identities.

    Raises:
        ValueError: shapes that do not fit, or no query with a true match.
    """
    distmat, q_pids, g_pids = _check(distmat, q_pids, g_pids)
    _, g_codes, q_codes = _codes(q_pids, g_pids)

    def rows(chunk: slice) -> tuple[np.ndarray, ...]:
        indices = np.argsort(distmat[chunk], axis=1)
        matches = g_codes[indices] == q_codes[chunk, None]
        valid, ap, inp = _ap_inp(matches, None)
        return valid, ap, inp, np.argmax(matches, axis=1)

    valid, ap, inp, first_match = _by_chunks(rows, distmat.shape[0])
    return _summary(first_match[valid], distmat.shape[1], valid, ap, inp)


# ------------------------------------------------------------------------------------------ helpers

_CHUNK_ROWS = 256  # queries per work item: bounds memory at a few (256, G) arrays


def _by_chunks(work: Callable[[slice], tuple[np.ndarray, ...]], num_rows: int) -> tuple[np.ndarray, ...]:
    """Run ``work`` over row chunks (in threads: numpy's sort and gathers release the GIL), concatenate.

    Each query row is ranked on its own (``np.argsort`` along axis 1 does the same row by row), so
    the result does not depend on the chunking.
    """
    chunks = [slice(start, min(start + _CHUNK_ROWS, num_rows)) for start in range(0, num_rows, _CHUNK_ROWS)]
    threads = min(len(chunks), os.cpu_count() or 1, 8)
    if threads <= 1:
        parts = [work(chunk) for chunk in chunks]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(work, chunks))
    return tuple(np.concatenate(column) for column in zip(*parts))


def _codes(q_pids: np.ndarray, g_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery identities, compact int32 gallery codes, query codes (-1: identity not in the gallery)."""
    identities, g_codes = np.unique(g_pids, return_inverse=True)
    position = np.clip(np.searchsorted(identities, q_pids), 0, identities.size - 1)
    q_codes = np.where(identities[position] == q_pids, position, -1)
    return identities, g_codes.astype(np.int32), q_codes.astype(np.int32)


def _ap_inp(matches: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query validity, AP and INP from the (Q, G) ranked match mask (and kept mask, if any)."""
    num_q, num_g = matches.shape
    rows, cols = np.nonzero(matches)  # row-major: each row's matches in rank order
    hit_number = np.cumsum(matches, axis=1, dtype=np.int32)[rows, cols].astype(np.float64)
    if keep is None:
        rank = cols.astype(np.float64) + 1.0
    else:
        rank = np.cumsum(keep, axis=1, dtype=np.int32)[rows, cols].astype(np.float64)
    num_hits = np.bincount(rows, minlength=num_q).astype(np.float64)
    valid = num_hits > 0
    precision_sum = np.bincount(rows, weights=hit_number / rank, minlength=num_q)
    last_rank = np.zeros(num_q, dtype=np.float64)
    np.maximum.at(last_rank, rows, rank)
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = np.where(valid, precision_sum / num_hits, 0.0)
        inp = np.where(valid, num_hits / last_rank, 0.0)
    return valid, ap, inp


def _summary(
    first_hit: np.ndarray, length: int, valid: np.ndarray, ap: np.ndarray, inp: np.ndarray
) -> dict[str, Any]:
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a true match in the gallery: metrics are undefined")
    cmc = np.cumsum(np.bincount(first_hit, minlength=length)[:length]) / float(num_valid)
    result: dict[str, Any] = {f"rank{k}": float(cmc[min(k, length) - 1]) for k in RANKS}
    result["mAP"] = float(ap[valid].mean())
    result["mINP"] = float(inp[valid].mean())
    result["cmc"] = cmc
    result["num_queries"] = int(valid.size)
    result["num_valid_queries"] = num_valid
    return result


def _check(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    distmat = np.asarray(distmat)
    if distmat.ndim != 2 or distmat.shape[0] == 0 or distmat.shape[1] == 0:
        raise ValueError(
            f"distmat must be a non-empty (num_query, num_gallery) matrix, got shape {distmat.shape}"
        )
    if not np.issubdtype(distmat.dtype, np.number) or np.iscomplexobj(distmat):
        raise ValueError(f"distmat must hold real numbers, got dtype {distmat.dtype}")
    return distmat, _vector(q_pids, distmat.shape[0], "q_pids"), _vector(g_pids, distmat.shape[1], "g_pids")


def _vector(values: np.ndarray, length: int, name: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1) if np.ndim(values) else np.asarray(values)
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},) to fit distmat, got {np.shape(values)}")
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)):
            return array.astype(np.int64)
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array
