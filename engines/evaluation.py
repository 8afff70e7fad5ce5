"""Engine-in-the-loop accuracy: the dataset protocols run through the deployed runtime.

Each artifact (a ``.pt`` checkpoint through the torch backend, an ``.onnx`` through onnxruntime, a
``.plan`` through TensorRT) is opened with :func:`engines.runtime.load_embedder`, its
:meth:`~engines.runtime.Embedder.embed` becomes the ``embed_fn`` of the trainer's feature extraction,
and the SYSU-MM01 or RegDB protocols score the features. Several artifacts of one checkpoint
(torch FP32 vs ONNX FP32 vs FP16 vs INT8, compressed variants) are compared in one table, with their
embedding agreement against the first (reference) artifact on the same test images.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.runtime import Embedder, l2_normalize, load_embedder

__all__ = [
    "EngineEvaluation",
    "comparison_markdown",
    "evaluate_artifacts",
    "evaluate_embedder",
    "headline_metrics",
]


@dataclass
class EngineEvaluation:
    """One artifact's accuracy on a dataset and its agreement with the reference artifact.

    Attributes:
        label: short name (file name).
        backend, precision, compression, engine_id: from the embedder and its sidecar.
        metrics: :func:`headline_metrics` of ``results``.
        results: the protocol runner's full result dict.
        crops_per_second: feature extraction throughput on this machine (image decoding included).
        cosine_vs_reference: (mean, min) per-image cosine of L2-normalised embeddings vs the
            reference, or ``None`` (the reference itself, or a different embedding size).
    """

    label: str
    artifact: str
    backend: str
    precision: str
    compression: str
    engine_id: str
    embedding_dim: int
    metrics: dict[str, float]
    results: dict[str, Any] = field(repr=False)
    crops_per_second: float
    cosine_vs_reference: tuple[float, float] | None = None


def evaluate_embedder(
    embedder: Embedder,
    dataset: str,
    root: str | os.PathLike[str],
    *,
    trials: int = 10,
    regdb_trial: int = 1,
    batch_size: int = 32,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], np.ndarray, float]:
    """Score one embedder on the test split of ``dataset``.

    Returns:
        (results, features (N, D) of the test images in protocol order, crops per second).
    """
    from trainer.data import regdb, sysu_mm01
    from trainer.evaluation.features import extract_features
    from trainer.evaluation.protocols import (
        evaluate_regdb_protocols,
        evaluate_sysu_protocols,
        summarise_trials,
    )

    h, w = embedder.input_size
    cache = Path(cache_dir) if cache_dir is not None else None
    if dataset == "sysu":
        test_set = sysu_mm01.load_test_set(root)
        images = list(test_set.query) + list(test_set.gallery_pool)
    elif dataset == "regdb":
        visible, thermal = regdb.load_test_samples(root, regdb_trial)
        images = visible + thermal
    else:
        raise ValueError(f"dataset must be 'sysu' or 'regdb', got {dataset!r}")
    started = time.perf_counter()
    features = extract_features(
        images,
        embedder.embed,
        height=h,
        width=w,
        batch_size=batch_size,
        cache_path=cache / f"{dataset}-test-{embedder.engine_id}.npz" if cache else None,
        embedder_id=embedder.engine_id,
        progress=progress,
    )
    rate = len(images) / max(time.perf_counter() - started, 1e-9)
    if dataset == "sysu":
        nq = len(test_set.query)
        results = evaluate_sysu_protocols(
            features[:nq], features[nq:], test_set, trials=range(min(trials, sysu_mm01.NUM_TRIALS))
        )
    else:
        scored = evaluate_regdb_protocols(
            features[: len(visible)], visible, features[len(visible) :], thermal
        )
        results = {
            "dataset": "regdb",
            "protocols": {
                d: {"direction": d, **summarise_trials([{"trial": regdb_trial, **m}])}
                for d, m in scored.items()
            },
        }
    results.update(root=str(root), embedder_id=embedder.engine_id, input_size=[h, w])
    return results, features, rate


def headline_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The numbers a comparison table shows, in percent.

    SYSU-MM01: all-search and indoor-search single-shot rank-1 / mAP / mINP (trial means).
    RegDB: rank-1 / mAP / mINP of both search directions.
    """
    from trainer.evaluation.protocols import scored_protocols

    out: dict[str, float] = {}
    for name, protocol in scored_protocols(results):
        if results.get("dataset") == "sysu" and not name.endswith("_1shot"):
            continue
        for metric in ("rank1", "mAP", "mINP"):
            out[f"{name}/{metric}"] = 100.0 * float(protocol["mean"][metric])  # metrics are in [0, 1]
    return out


def evaluate_artifacts(
    artifacts: Sequence[str | os.PathLike[str]],
    dataset: str,
    root: str | os.PathLike[str],
    *,
    device: str = "cpu",
    trials: int = 10,
    regdb_trial: int = 1,
    batch_size: int = 32,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> list[EngineEvaluation]:
    """Evaluate each artifact; the first is the reference for embedding agreement.

    Args:
        artifacts: ``.pt`` / ``.onnx`` / ``.plan`` paths (each with its sidecar where needed).
        options: backend options passed to :func:`load_embedder` for ONNX artifacts
            (e.g. ``intra_op_threads``).
    """
    rows: list[EngineEvaluation] = []
    reference: np.ndarray | None = None
    for artifact in artifacts:
        path = Path(artifact)
        extra = dict(options or {}) if path.suffix == ".onnx" else {}
        with load_embedder(path, device=device, **extra) as embedder:
            results, features, rate = evaluate_embedder(
                embedder,
                dataset,
                root,
                trials=trials,
                regdb_trial=regdb_trial,
                batch_size=batch_size,
                cache_dir=cache_dir,
                progress=progress,
            )
            sidecar = embedder.sidecar
            compression = (
                f"{sidecar.compression.kind}{sidecar.compression.dim}" if sidecar.compression else "none"
            )
            agreement = None
            normalised = l2_normalize(features)
            if reference is None:
                reference = normalised
            elif reference.shape == normalised.shape:
                cosines = np.sum(reference * normalised, axis=1)
                agreement = (float(np.mean(cosines)), float(np.min(cosines)))
            rows.append(
                EngineEvaluation(
                    label=path.name,
                    artifact=str(path),
                    backend=embedder.backend,
                    precision=sidecar.precision,
                    compression=compression,
                    engine_id=embedder.engine_id,
                    embedding_dim=embedder.embedding_dim,
                    metrics=headline_metrics(results),
                    results=results,
                    crops_per_second=rate,
                    cosine_vs_reference=agreement,
                )
            )
    return rows


def comparison_markdown(rows: Sequence[EngineEvaluation]) -> str:
    """A markdown table: one row per artifact, headline metrics (%), agreement with the first row."""
    if not rows:
        return ""
    metric_names = list(rows[0].metrics)
    header = ["artifact", "backend", "precision", "dim", *metric_names, "cos vs ref (mean / min)", "crops/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        agreement = (
            "reference"
            if row is rows[0]
            else (
                f"{row.cosine_vs_reference[0]:.5f} / {row.cosine_vs_reference[1]:.5f}"
                if row.cosine_vs_reference
                else "n/a (other space)"
            )
        )
        cells = [
            row.label,
            row.backend,
            row.precision,
            str(row.embedding_dim),
            *[f"{row.metrics.get(m, float('nan')):.2f}" for m in metric_names],
            agreement,
            f"{row.crops_per_second:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
