"""Evaluation protocols on top of the metric functions (spec sections 4.2-4.5).

- SYSU-MM01: query = all infrared test images; for mode in {all, indoor} x shots in {1, 10} x 10
  trials, the gallery of the trial is picked from the visible test images (``rand_perm_cam.mat`` or
  AGW sampling, recorded as ``gallery_sampling``); metrics by :func:`evaluate_sysu`; mean and
  (population) std over trials.
- RegDB: both search directions (visible->thermal, thermal->visible) of each given trial, metrics by
  :func:`evaluate_regdb` (standard CMC, as AGW); mean and std over the trials evaluated.

Distance, both datasets: features are L2-normalised and the distance is ``-q.g`` (negative cosine
similarity, as AGW); it ranks exactly like MPANet's squared Euclidean distance on normalised features.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data import regdb, sysu_mm01
from trainer.data.samples import Sample
from trainer.evaluation.features import EmbedFn, extract_features
from trainer.evaluation.metrics import RANKS, evaluate_regdb, evaluate_sysu

__all__ = [
    "DISTANCE",
    "SYSU_PROTOCOLS",
    "evaluate_regdb_embedder",
    "evaluate_regdb_protocols",
    "evaluate_sysu_embedder",
    "evaluate_sysu_protocols",
    "pairwise_distance",
    "scored_protocols",
    "summarise_trials",
]

DISTANCE = "-q.g on L2-normalised features (negative cosine similarity)"
SYSU_PROTOCOLS = tuple((mode, shots) for mode in ("all", "indoor") for shots in (1, 10))
METRIC_KEYS = tuple(f"rank{k}" for k in RANKS) + ("mAP", "mINP")
CMC_RANKS_KEPT = 50  # CMC values kept per protocol in the results (enough for the curve)


def pairwise_distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``-q.g`` after L2-normalising each row; float32 (Q, G). Smaller = more similar."""
    q = _normalise(np.asarray(query, dtype=np.float32))
    g = _normalise(np.asarray(gallery, dtype=np.float32))
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features are {q.shape[1]}-d but gallery features are {g.shape[1]}-d")
    return -(q @ g.T)


def _normalise(features: np.ndarray) -> np.ndarray:
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def summarise_trials(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population std over trials of each metric, and the trial-mean CMC (first 50 ranks)."""
    summary: dict[str, Any] = {
        "mean": {k: float(np.mean([t[k] for t in trials])) for k in METRIC_KEYS},
        "std": {k: float(np.std([t[k] for t in trials])) for k in METRIC_KEYS},
        "num_trials": len(trials),
    }
    length = min(min(len(t["cmc"]) for t in trials), CMC_RANKS_KEPT)
    summary["cmc_mean"] = np.mean([np.asarray(t["cmc"])[:length] for t in trials], axis=0).tolist()
    summary["trials"] = [
        {k: (np.asarray(v)[:CMC_RANKS_KEPT].tolist() if k == "cmc" else v) for k, v in t.items()}
        for t in trials
    ]
    return summary


def scored_protocols(results: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, protocol) of every protocol in ``results`` that was scored, in order.

    A protocol whose galleries were all empty (small synthetic sets) is kept in the results with a
    ``skipped`` reason instead of metrics; consumers that need metrics iterate with this.
    """
    for name, protocol in results["protocols"].items():
        if "skipped" not in protocol:
            yield name, protocol


def _ids(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.asarray([s.pid for s in samples], dtype=np.int64),
        np.asarray([s.camid for s in samples], dtype=np.int64),
    )


def evaluate_sysu_protocols(
    query_features: np.ndarray,
    pool_features: np.ndarray,
    test_set: sysu_mm01.SysuTestSet,
    *,
    protocols: Iterable[tuple[str, int]] = SYSU_PROTOCOLS,
    trials: Iterable[int] = range(sysu_mm01.NUM_TRIALS),
) -> dict[str, Any]:
    """Score SYSU-MM01 protocols from features of ``test_set.query`` and ``test_set.gallery_pool``.

    Returns ``{"dataset": "sysu", "gallery_sampling", "distance", "num_query", "protocols":
    {"<mode>_<shots>shot": {"mode", "shots", "mean", "std", "cmc_mean", "trials": [...]}}}``; every
    trial entry holds the metrics plus ``trial`` and ``gallery_size``.
    """
    if len(query_features) != len(test_set.query) or len(pool_features) != len(test_set.gallery_pool):
        raise ValueError(
            f"need features for {len(test_set.query)} query and {len(test_set.gallery_pool)} gallery-pool "
            f"images, got {len(query_features)} and {len(pool_features)}"
        )
    q_pids, q_cams = _ids(test_set.query)
    g_pids, g_cams = _ids(test_set.gallery_pool)
    distances = pairwise_distance(query_features, pool_features)  # scored once, sliced per trial
    trial_list = list(trials)
    results: dict[str, Any] = {
        "dataset": "sysu",
        "gallery_sampling": test_set.sampling,
        "distance": DISTANCE,
        "cmc": "unique-identity CMC (SYSU-MM01 protocol); cam-3 queries skip cam-2 gallery images",
        "num_query": len(test_set.query),
        "protocols": {},
    }
    for mode, shots in protocols:
        per_trial = []
        for trial in trial_list:
            chosen = test_set.gallery_indices(mode, shots, trial)  # type: ignore[arg-type]
            if chosen.size == 0:
                continue  # small synthetic sets: no test identity in these cameras (never on SYSU-MM01)
            metrics = evaluate_sysu(distances[:, chosen], q_pids, g_pids[chosen], q_cams, g_cams[chosen])
            per_trial.append({"trial": trial, "gallery_size": int(chosen.size), **metrics})
        name = f"{mode}_{shots}shot"
        if per_trial:
            results["protocols"][name] = {"mode": mode, "shots": shots, **summarise_trials(per_trial)}
        else:
            results["protocols"][name] = {
                "mode": mode,
                "shots": shots,
                "skipped": "the gallery is empty: no test identity in these cameras",
            }
    return results


def evaluate_regdb_protocols(
    visible_features: np.ndarray,
    visible_samples: Sequence[Sample],
    thermal_features: np.ndarray,
    thermal_samples: Sequence[Sample],
) -> dict[str, dict[str, Any]]:
    """Both RegDB search directions of one trial: ``{"visible_to_thermal": metrics, "thermal_to_visible": ...}``."""
    if len(visible_features) != len(visible_samples) or len(thermal_features) != len(thermal_samples):
        raise ValueError("need one feature row per visible and per thermal sample")
    v_pids, _ = _ids(visible_samples)
    t_pids, _ = _ids(thermal_samples)
    v_to_t = pairwise_distance(visible_features, thermal_features)
    return {
        "visible_to_thermal": evaluate_regdb(v_to_t, v_pids, t_pids),
        "thermal_to_visible": evaluate_regdb(v_to_t.T, t_pids, v_pids),
    }


# -------------------------------------------------------------------------- from images to results


def evaluate_sysu_embedder(
    root: str | os.PathLike[str],
    embed_fn: EmbedFn,
    *,
    embedder_id: str,
    height: int,
    width: int,
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    gallery_sampling: sysu_mm01.GallerySampling = "auto",
    num_workers: int = 0,
    progress: bool = True,
    protocols: Iterable[tuple[str, int]] = SYSU_PROTOCOLS,
    trials: Iterable[int] = range(sysu_mm01.NUM_TRIALS),
) -> dict[str, Any]:
    """Extract features of the SYSU-MM01 test images once (optionally cached) and score all protocols."""
    test_set = sysu_mm01.load_test_set(root, gallery_sampling=gallery_sampling)
    images = test_set.query + test_set.gallery_pool
    cache = Path(cache_dir) / f"sysu-test-{_safe(embedder_id)}.npz" if cache_dir is not None else None
    features = extract_features(
        images,
        embed_fn,
        height=height,
        width=width,
        batch_size=batch_size,
        cache_path=cache,
        embedder_id=embedder_id,
        num_workers=num_workers,
        progress=progress,
    )
    num_query = len(test_set.query)
    results = evaluate_sysu_protocols(
        features[:num_query], features[num_query:], test_set, protocols=protocols, trials=trials
    )
    results.update(root=str(root), embedder_id=embedder_id, input_size=[height, width])
    return results


def evaluate_regdb_embedder(
    root: str | os.PathLike[str],
    embed_fn: EmbedFn,
    *,
    embedder_id: str,
    height: int,
    width: int,
    trials: Iterable[int] = (1,),
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score both RegDB directions on the test split of each trial (MPANet: trial 1; AGW: 1..10,
    each with the model trained on that trial), with mean and std over the trials given."""
    per_direction: dict[str, list[dict[str, Any]]] = {d: [] for d in regdb.DIRECTIONS}
    for trial in trials:
        visible, thermal = regdb.load_test_samples(root, trial)
        cache = (
            Path(cache_dir) / f"regdb-test{trial}-{_safe(embedder_id)}.npz" if cache_dir is not None else None
        )
        features = extract_features(
            visible + thermal,
            embed_fn,
            height=height,
            width=width,
            batch_size=batch_size,
            cache_path=cache,
            embedder_id=embedder_id,
            num_workers=num_workers,
            progress=progress,
        )
        scored = evaluate_regdb_protocols(
            features[: len(visible)], visible, features[len(visible) :], thermal
        )
        for direction, metrics in scored.items():
            size = len(thermal) if direction == "visible_to_thermal" else len(visible)
            per_direction[direction].append({"trial": trial, "gallery_size": size, **metrics})
    return {
        "dataset": "regdb",
        "distance": DISTANCE,
        "cmc": "standard CMC (AGW eval_regdb): first true match in the raw ranking",
        "root": str(root),
        "embedder_id": embedder_id,
        "input_size": [height, width],
        "protocols": {d: {"direction": d, **summarise_trials(t)} for d, t in per_direction.items()},
    }


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]
