"""Speed of the vectorised ``evaluate_sysu`` against straightforward per-query loops, full-size case.

The case has the real SYSU-MM01 test structure: 3,803 infrared queries (cams 3 and 6) of 96 ids and
the 3,010-image multi-shot all-search gallery (301 (camera, id) pairs x 10 images, cams 1/2/4/5),
with distances from noisy identity features (so rankings look like a trained model's).

Two per-query loops are timed, both ranking with one ``np.argsort(distmat, axis=1)`` first:

- ``loop_reference_style``: the shape of the AGW baseline's ``eval_sysu`` (what most VI-ReID code
  runs): per query, remove cam-2 items for cam-3 queries, de-duplicate identities, cumsum, and the
  precision at every gallery position in a Python-level list comprehension;
- ``loop_numpy``: the same per-query loop with every step done by numpy on the row (a tight loop).

The argsort alone is timed too: no implementation can skip it, so it bounds any speed-up.

    python benchmarks/bench_eval_speed.py [--repeats 3] [--out benchmarks/results/eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.files import atomic_write_text  # noqa: E402
from trainer.evaluation.metrics import evaluate_sysu  # noqa: E402


def build_case(seed: int = 0) -> tuple[np.ndarray, ...]:
    """(distmat, q_pids, g_pids, q_camids, g_camids) with SYSU-MM01 test-set structure."""
    rng = np.random.default_rng(seed)
    ids = np.arange(96)
    # Queries: 1,883 from cam 3 and 1,920 from cam 6, spread over the ids.
    q_pids = np.concatenate([rng.choice(ids, 1883), rng.choice(ids, 1920)])
    q_cams = np.concatenate([np.full(1883, 3), np.full(1920, 6)])
    # Gallery: 56 ids in cam 1, 56 in cam 2, 94 in cam 4, 95 in cam 5 (301 pairs) x 10 images.
    pairs = [
        (cam, pid)
        for cam, n in ((1, 56), (2, 56), (4, 94), (5, 95))
        for pid in rng.choice(ids, n, replace=False)
    ]
    g_cams = np.repeat([c for c, _ in pairs], 10)
    g_pids = np.repeat([p for _, p in pairs], 10)
    codes = rng.normal(size=(96, 128))
    q = codes[q_pids] + 1.6 * rng.normal(size=(q_pids.size, 128))
    g = codes[g_pids] + 1.6 * rng.normal(size=(g_pids.size, 128))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    distmat = -(q @ g.T).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def evaluate_sysu_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20):
    """Tight per-query loop (numpy per row); returns (cmc[:max_rank], mAP, mINP)."""
    indices = np.argsort(distmat, axis=1)
    cmc_sum = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(distmat.shape[0]):
        order = indices[i]
        keep = ~((q_camids[i] == 3) & (g_camids[order] == 2))
        ranked = g_pids[order][keep]
        matches = (ranked == q_pids[i]).astype(np.int32)
        if not matches.any():
            continue
        _, first = np.unique(ranked, return_index=True)
        distinct = ranked[np.sort(first)]
        hit = (distinct == q_pids[i]).astype(np.int32).cumsum()[:max_rank]
        cmc_sum[: hit.size] += hit
        cmc_sum[hit.size :] += hit[-1]
        cumulative = matches.cumsum()
        positions = np.flatnonzero(matches)
        inps.append(cumulative[positions[-1]] / (positions[-1] + 1.0))
        aps.append(np.sum(cumulative[positions] / (positions + 1.0)) / matches.sum())
    return cmc_sum / len(aps), float(np.mean(aps)), float(np.mean(inps))


def evaluate_sysu_reference_style(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20):
    """Per-query loop shaped like the AGW baseline's ``eval_sysu`` (Python-level precision list)."""
    indices = np.argsort(distmat, axis=1)
    labels = g_pids[indices]
    cmc_rows, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        keep = np.invert((q_camids[i] == 3) & (g_camids[indices[i]] == 2))
        kept = labels[i][keep]
        first_seen = np.unique(kept, return_index=True)[1]
        distinct = [kept[j] for j in sorted(first_seen)]
        cmc_rows.append((np.asarray(distinct) == q_pids[i]).astype(np.int32).cumsum()[:max_rank])
        hits = (kept == q_pids[i]).astype(np.int32)
        if not hits.any():
            continue
        running = hits.cumsum()
        last = np.max(np.where(hits == 1))
        inps.append(running[last] / (last + 1.0))
        precision = np.asarray([count / (k + 1.0) for k, count in enumerate(running)]) * hits
        aps.append(precision.sum() / hits.sum())
    cmc = np.asarray(cmc_rows).astype(np.float32).sum(0) / len(aps)
    return cmc, float(np.mean(aps)), float(np.mean(inps))


def _median_time(function, case, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*case)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_speed.json"))
    args = parser.parse_args()
    case = build_case()
    argsort_s, _ = _median_time(lambda d, *_: np.argsort(d, axis=1), case, args.repeats)
    vectorised_s, result = _median_time(evaluate_sysu, case, args.repeats)
    numpy_loop_s, (cmc_a, map_a, minp_a) = _median_time(evaluate_sysu_loop, case, args.repeats)
    reference_s, (cmc_b, map_b, minp_b) = _median_time(evaluate_sysu_reference_style, case, 1)
    difference = max(
        float(np.max(np.abs(result["cmc"][:20] - cmc_a))),
        float(np.max(np.abs(result["cmc"][:20] - cmc_b))),
        abs(result["mAP"] - map_a),
        abs(result["mAP"] - map_b),
        abs(result["mINP"] - minp_a),
        abs(result["mINP"] - minp_b),
    )
    report = {
        "benchmark": "evaluate_sysu vs per-query loops (SYSU-MM01 all-search multi-shot size)",
        "num_query": int(case[0].shape[0]),
        "num_gallery": int(case[0].shape[1]),
        "repeats": args.repeats,
        "seconds_median": {
            "evaluate_sysu": vectorised_s,
            "loop_reference_style": reference_s,
            "loop_numpy": numpy_loop_s,
            "argsort_only": argsort_s,
        },
        "speedup_vs_loop_reference_style": reference_s / vectorised_s,
        "speedup_vs_loop_numpy": numpy_loop_s / vectorised_s,
        "max_abs_metric_difference": difference,
        "metrics": {k: result[k] for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")},
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if difference < 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
