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

__all__ = [
    "PAIRS",
    "calibrate_thresholds",
    "linking_path",
    "load_linking_thresholds",
    "plot_distributions",
    "save_linking_thresholds",
]

PAIRS = ("visible-visible", "infrared-infrared", "visible-infrared")


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
    distributions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    min_auc: float = 0.6,
) -> dict[str, Any]:
    """Thresholds from (N, D) L2-normalised embeddings of labelled images.

    Args:
        embeddings: one row per image (the engine's output).
        pids, camids, modalities: per image: person, camera, ``visible``/``infrared``.
        tracklet_size: images averaged into one tracklet.
        fpr_max: the target false-match rate: the share of different-person tracklet pairs a
            threshold may let through.
        floor: the lowest threshold returned (a threshold near 0 would match anything).
        distributions: if given, filled with ``{pair: (same-person cosines, different-people
            cosines)}`` (float32 arrays) for pictures.
        min_auc: a modality pair whose ROC AUC is below this cannot be linked by this engine: its
            per-pair threshold becomes 1.0 (no match; the entry says ``usable: false``) rather than
            a value that would merge people at random. The pooled ``same`` / ``cross`` values stay
            as measured.

    Returns:
        ``{"cosine_min_visible", "cosine_min_infrared", "cosine_min_cross", "cosine_min_same",
        "pairs": {"visible-visible", "infrared-infrared", "visible-infrared"}, "same", "cross",
        "tracklets", "target_fpr"}``: per modality pair (and pooled: ``same`` = both same-modality
        pairs, ``cross`` = visible-infrared) the threshold, its TPR/FPR, the ROC AUC, mean cosines
        and pair counts ``[same person, different people]``. Same-modality pairs are taken across
        cameras only (one camera's tracklets of a person are one track to the linker). A pair with
        no same-person or no different-person samples is left out (``None`` threshold); the
        pooled ``same`` needs at least one same-modality pair.
    """
    v, pid_a, cam_a, mod_a = _tracklets(embeddings, pids, camids, modalities, tracklet_size)
    cos = v @ v.T
    upper = np.triu(np.ones_like(cos, dtype=bool), k=1)
    same_person = pid_a[:, None] == pid_a[None, :]
    same_modality = mod_a[:, None] == mod_a[None, :]
    other_camera = cam_a[:, None] != cam_a[None, :]
    visible = mod_a == "visible"
    masks = {
        "visible-visible": visible[:, None] & visible[None, :] & other_camera,
        "infrared-infrared": ~visible[:, None] & ~visible[None, :] & other_camera,
        "visible-infrared": ~same_modality,
        "same": same_modality & other_camera,
        "cross": ~same_modality,
    }
    result: dict[str, Any] = {
        "tracklets": len(v),
        "tracklet_size": tracklet_size,
        "target_fpr": fpr_max,
        "pairs": {},
    }
    for kind, mask in masks.items():
        pos = cos[upper & mask & same_person]
        neg = cos[upper & mask & ~same_person]
        entry: dict[str, Any] = {"pairs": [int(len(pos)), int(len(neg))], "threshold": None}
        if distributions is not None and kind in PAIRS:
            distributions[kind] = (pos.astype(np.float32), neg.astype(np.float32))
        if len(pos) and len(neg):
            chosen = _threshold_at_fpr(pos, neg, fpr_max)
            entry.update(
                chosen,
                threshold=max(chosen["threshold"], floor),
                same_person_mean=float(pos.mean()),
                other_person_mean=float(neg.mean()),
                same_person_median=float(np.median(pos)),
                other_person_median=float(np.median(neg)),
            )
        entry["usable"] = entry["threshold"] is not None and entry.get("auc", 0.0) >= min_auc
        if kind in ("same", "cross"):
            result[kind] = entry
        else:
            result["pairs"][kind] = entry
    if result["same"]["threshold"] is None and result["cross"]["threshold"] is None:
        raise ValueError(
            "no modality pair has both same-person and different-person tracklet pairs to calibrate on "
            f"({len(v)} tracklets)"
        )

    def per_pair(entry: dict[str, Any]) -> float | None:
        if entry["threshold"] is None:
            return None
        return entry["threshold"] if entry["usable"] else 1.0

    result["min_auc"] = min_auc
    result["cosine_min_same"] = result["same"]["threshold"]
    result["cosine_min_visible"] = per_pair(result["pairs"]["visible-visible"])
    result["cosine_min_infrared"] = per_pair(result["pairs"]["infrared-infrared"])
    result["cosine_min_cross"] = per_pair(result["pairs"]["visible-infrared"])
    return result


def _tracklets(
    embeddings: np.ndarray,
    pids: Sequence[int],
    camids: Sequence[int],
    modalities: Sequence[str],
    tracklet_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each person's images per camera in chunks of ``tracklet_size``, averaged and L2-normalised, as
    the edge node aggregates a track: (T, D) float32 vectors, (T,) pids, camids, modalities."""
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
            t_mod.append(str(modalities[chunk[0]]))
    if not vectors:
        raise ValueError("no labelled images to calibrate linking thresholds on")
    return np.stack(vectors).astype(np.float32), np.asarray(t_pid), np.asarray(t_cam), np.asarray(t_mod)


def plot_distributions(
    distributions: dict[str, tuple[np.ndarray, np.ndarray]],
    result: dict[str, Any],
    path: str | os.PathLike[str],
) -> Path:
    """A PNG with one panel per modality pair: same-person vs different-people cosine histograms and
    the chosen threshold (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.files import atomic_write_bytes

    fig, axes = plt.subplots(1, len(PAIRS), figsize=(4.2 * len(PAIRS), 3.2), sharex=True)
    bins = np.linspace(-0.2, 1.0, 49)
    for ax, pair in zip(axes, PAIRS):
        entry = result["pairs"].get(pair, {})
        pos, neg = distributions.get(pair, (np.zeros(0), np.zeros(0)))
        if len(neg):
            ax.hist(
                neg, bins=bins, density=True, alpha=0.55, color="tab:red", label=f"different ({len(neg)})"
            )
        if len(pos):
            ax.hist(
                pos, bins=bins, density=True, alpha=0.55, color="tab:green", label=f"same person ({len(pos)})"
            )
        if entry.get("threshold") is not None:
            ax.axvline(
                entry["threshold"], color="black", linestyle="--", label=f"threshold {entry['threshold']:.2f}"
            )
            ax.set_title(f"{pair}: AUC {entry['auc']:.3f}", fontsize=10)
        else:
            ax.set_title(f"{pair}: not enough pairs", fontsize=10)
        ax.set_xlabel("cosine of tracklet pair")
        if len(pos) or len(neg):
            ax.legend(fontsize=7)
    fig.suptitle(
        f"linking calibration, target false-match rate {result.get('target_fpr', 0):.2f}", fontsize=10
    )
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


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
