"""Cosine thresholds for the linker, measured for one engine on labelled people.

The linker (``edge.linking``) matches a camera track to a global identity when the cosine of the
track's aggregated embedding with an identity's prototype clears ``cosine_min_same`` (same modality)
or ``cosine_min_cross`` (visible vs infrared). Where those lie depends entirely on the engine: a
weakly trained model has same-person cross-modality cosines around 0.1, a strong one around 0.6.
This module measures them on a labelled set (a dataset's test split: people the model never saw):

1. *tracklets*: each person's images per camera, in chunks of ``tracklet_size``, averaged and
   L2-normalised, as the edge node aggregates a track (``track_mean``);
2. cosines of tracklet pairs, same and different person, within a modality (different cameras) and
   across modalities;
3. per kind, the threshold that lets through at most ``fpr_max`` (10 %) of different-person pairs,
   with the share of same-person pairs it accepts (TPR) and the ROC AUC, a measure of how
   separable they are at all. A false-positive budget rather than the balanced-accuracy optimum:
   a false match merges two people into one identity, which the linker cannot undo as easily as it
   joins a split, and different-person pairs far outnumber same-person ones in a gallery.

Output: a JSON beside the artifact, ``<artifact>.linking.json``; ``run_pipeline.py`` applies it to
the linker unless thresholds are set explicitly.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.files import atomic_write_text

__all__ = ["calibrate_thresholds", "linking_path", "load_linking_thresholds", "save_linking_thresholds"]


def linking_path(artifact: str | os.PathLike[str]) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".linking.json")


def _threshold_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr_max: float) -> dict[str, float]:
    """Threshold accepting at most ``fpr_max`` of ``negative`` cosines; its TPR, the ROC AUC."""
    threshold = float(np.quantile(negative, 1.0 - fpr_max))
    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="stable")
    tpr = np.concatenate([[0.0], np.cumsum(labels[order]) / len(positive)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - labels[order]) / len(negative)])
    return {
        "threshold": threshold,
        "tpr": float((positive > threshold).mean()),
        "fpr": float((negative > threshold).mean()),
        "auc": float(np.trapezoid(tpr, fpr)),
    }


def calibrate_thresholds(
    embeddings: np.ndarray,
    pids: Sequence[int],
    camids: Sequence[int],
    modalities: Sequence[str],
    tracklet_size: int = 8,
    fpr_max: float = 0.10,
    floor: float = 0.05,
) -> dict[str, Any]:
    """Thresholds from (N, D) L2-normalised embeddings of labelled images.

    Args:
        embeddings: one row per image (the engine's output).
        pids, camids, modalities: per image: person, camera, ``visible``/``infrared``.
        tracklet_size: images averaged into one tracklet.
        fpr_max: share of different-person tracklet pairs a threshold may let through.
        floor: the lowest threshold returned (a threshold near 0 would match anything).

    Returns:
        ``{"cosine_min_same", "cosine_min_cross", "same": {...}, "cross": {...}, "tracklets"}``
        where each kind holds the threshold, its TPR/FPR, the AUC, mean cosines and pair counts.
    """
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, (pid, cam) in enumerate(zip(pids, camids, strict=True)):
        groups[(int(pid), int(cam))].append(index)
    vectors, t_pid, t_cam, t_mod = [], [], [], []
    for (pid, cam), rows in sorted(groups.items()):
        for start in range(0, len(rows), tracklet_size):
            chunk = rows[start : start + tracklet_size]
            mean = embeddings[chunk].mean(axis=0)
            vectors.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            t_pid.append(pid)
            t_cam.append(cam)
            t_mod.append(modalities[chunk[0]])
    if not vectors:
        raise ValueError("no labelled images to calibrate linking thresholds on")
    v = np.stack(vectors).astype(np.float32)
    pid_a, cam_a, mod_a = np.asarray(t_pid), np.asarray(t_cam), np.asarray(t_mod)
    cos = v @ v.T
    upper = np.triu(np.ones_like(cos, dtype=bool), k=1)
    same_person = pid_a[:, None] == pid_a[None, :]
    same_modality = mod_a[:, None] == mod_a[None, :]
    other_camera = cam_a[:, None] != cam_a[None, :]
    result: dict[str, Any] = {"tracklets": len(v), "tracklet_size": tracklet_size}
    for kind, mask in (("same", same_modality & other_camera), ("cross", ~same_modality)):
        pos = cos[upper & mask & same_person]
        neg = cos[upper & mask & ~same_person]
        if len(pos) == 0 or len(neg) == 0:
            raise ValueError(
                f"no {kind}-modality pairs of both kinds (same and different person) to calibrate on"
            )
        chosen = _threshold_at_fpr(pos, neg, fpr_max)
        result[kind] = {
            **chosen,
            "threshold": max(chosen["threshold"], floor),
            "same_person_mean": float(pos.mean()),
            "other_person_mean": float(neg.mean()),
            "pairs": [int(len(pos)), int(len(neg))],
        }
    result["cosine_min_same"] = result["same"]["threshold"]
    result["cosine_min_cross"] = result["cross"]["threshold"]
    return result


def save_linking_thresholds(
    result: dict[str, Any], artifact: str | os.PathLike[str], engine_id: str, source: str
) -> Path:
    """Write ``<artifact>.linking.json`` (atomically) with the engine id it belongs to."""
    path = linking_path(artifact)
    atomic_write_text(
        path, json.dumps({**result, "engine_id": engine_id, "measured_on": source}, indent=2) + "\n"
    )
    return path


def load_linking_thresholds(
    artifact: str | os.PathLike[str], engine_id: str | None = None
) -> dict[str, Any] | None:
    """The thresholds beside ``artifact`` (``None`` if there are none); refuses another engine's."""
    path = linking_path(artifact)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if engine_id is not None and data.get("engine_id") != engine_id:
        raise ValueError(f"{path} was measured for engine {data.get('engine_id')}, not {engine_id}")
    return data


def calibrate_artifact(
    artifact: str | os.PathLike[str],
    dataset_root: str | os.PathLike[str],
    progress: bool = False,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Measure thresholds for an engine on a SYSU-MM01-layout split and save them beside it.

    ``split``: ``test`` (people the model never saw: what a deployment meets) or ``train`` (people
    it was trained on, for pipelines that watch exactly those people, such as the end-to-end test).
    """
    from engines.runtime import load_embedder
    from trainer.data import load_train_samples, sysu_mm01
    from trainer.evaluation.features import extract_features

    embedder = load_embedder(artifact)
    if split == "test":
        test_set = sysu_mm01.load_test_set(dataset_root)
        samples = test_set.query + test_set.gallery_pool
    elif split == "train":
        samples = list(load_train_samples(dataset_root, "sysu"))
    else:
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    h, w = embedder.input_size
    features = extract_features(
        samples, embed or embedder.embed, height=h, width=w, batch_size=64, progress=progress
    )
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    result = calibrate_thresholds(
        features, [s.pid for s in samples], [s.camid for s in samples], [str(s.modality) for s in samples]
    )
    save_linking_thresholds(
        result, artifact, embedder.engine_id, f"SYSU-MM01-layout {split} split at {dataset_root}"
    )
    return result
