"""Embedding compression for large galleries, recorded in the sidecar and applied by the runtime.

MPANet's test embedding is (P+1)*C = 14336 floats (ResNet-50): 56 KiB per sighting in float32.
Two ways to shrink it, both applied by :class:`engines.runtime.Embedder` after L2 normalisation
(the artifact itself is unchanged, so one ONNX/plan serves every variant):

* ``global``: keep only the global average-pooled part, the last C = 2048 values (7x smaller);
  no fitting needed.
* ``pca``: project the normalised embedding on the top-k principal components fitted on training
  embeddings (``mean`` and ``components`` in a ``.npz`` beside the artifact, its sha256 in the sidecar).

A compressed variant is its own artifact (a hard link, or a copy, of the original with its own
sidecar) because its embeddings live in another space: its ``engine_id`` differs, and the gallery
refuses to mix it with the uncompressed one. The accuracy cost is measured by running the dataset
protocols on each variant (``mpanet-eval --engine model.onnx --engine model.pca256.onnx ...``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.files import atomic_save, sha256_file
from engines.runtime.base import l2_normalize
from engines.sidecar import Compression, EngineSidecar, SidecarError, load_sidecar, save_sidecar

__all__ = ["CompressionError", "compress_artifact", "fit_pca", "global_dim", "load_pca", "save_pca"]


class CompressionError(ValueError):
    """A compression that cannot be built (wrong sizes, too few fitting features, already compressed)."""


def global_dim(sidecar: EngineSidecar) -> int:
    """C, the size of the global part of an MPANet embedding (the last C values)."""
    config = sidecar.model_config
    if not config.get("pam", False):
        raise CompressionError(
            f"{sidecar.artifact}: without the pattern alignment module the embedding is already the global "
            "feature; there is nothing to drop"
        )
    parts = int(config.get("num_patterns", 0)) + 1
    if sidecar.output_dim % parts:
        raise CompressionError(f"{sidecar.artifact}: output_dim {sidecar.output_dim} is not {parts} parts")
    return sidecar.output_dim // parts


def fit_pca(features: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Principal components of L2-normalised ``features``.

    Args:
        features: (N, D) embeddings (normalised here, as the runtime normalises before projecting).
        dim: k, the number of components kept; at most min(N - 1, D).

    Returns:
        (mean (D,), components (k, D), explained variance ratio of the k components), float32.
    """
    x = l2_normalize(np.asarray(features, dtype=np.float32)).astype(np.float64)
    n, d = x.shape
    if not 0 < dim <= min(n - 1, d):
        raise CompressionError(
            f"PCA dim must be in 1..{min(n - 1, d)} for {n} features of size {d}, got {dim}"
        )
    mean = x.mean(axis=0)
    centred = x - mean
    if n < d:
        # Economy SVD over the (N, D) matrix: O(N^2 D), the cheap side when there are fewer
        # fitting images than embedding dimensions (the usual case: 14336-d).
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        variance = singular**2
        components = vt[:dim]
    else:
        cov = centred.T @ centred
        variance, vectors = np.linalg.eigh(cov)
        order = np.argsort(variance)[::-1]
        variance, components = variance[order], vectors[:, order[:dim]].T
    explained = float(variance[:dim].sum() / max(variance.sum(), 1e-30))
    return mean.astype(np.float32), components.astype(np.float32), explained


def save_pca(path: str | os.PathLike[str], mean: np.ndarray, components: np.ndarray, **info: Any) -> Path:
    """Write ``mean`` and ``components`` (and scalar ``info``) to a ``.npz`` atomically."""
    target = Path(path)
    extras = {k: np.asarray(v) for k, v in info.items()}
    atomic_save(target, lambda handle: np.savez(handle, mean=mean, components=components, **extras))
    return target


def load_pca(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components) from a file written by :func:`save_pca`."""
    with np.load(path) as data:
        return data["mean"].astype(np.float32), data["components"].astype(np.float32)


def compress_artifact(
    artifact: str | os.PathLike[str],
    kind: str,
    *,
    dim: int | None = None,
    features: np.ndarray | None = None,
    output: str | os.PathLike[str] | None = None,
    fit_info: dict[str, Any] | None = None,
) -> EngineSidecar:
    """Make a compressed variant of an artifact: ``<stem>.<kind><dim><suffix>`` with its own sidecar.

    Args:
        artifact: an ``.onnx`` / ``.plan`` / ``.pt`` with its sidecar, uncompressed.
        kind: ``global`` or ``pca``.
        dim: output size (``global``: default and maximum C; ``pca``: required).
        features: ``pca`` only: (N, D) training embeddings of this artifact (uncompressed).
        output: the variant's path (default beside ``artifact``). It is a hard link to ``artifact``
            when the file system allows, a copy otherwise.
        fit_info: what the PCA was fitted on (dataset, image count), stored in the sidecar.

    Returns:
        The variant's sidecar (already saved).
    """
    artifact = Path(artifact)
    sidecar = load_sidecar(artifact)
    if sidecar.compression is not None:
        raise CompressionError(
            f"{artifact} is already compressed ({sidecar.compression.kind}); start from the original"
        )
    source_info: dict[str, Any] = {}
    if kind == "global":
        full = global_dim(sidecar)
        dim = full if dim is None else int(dim)
        if not 0 < dim <= full:
            raise CompressionError(f"global dim must be in 1..{full}, got {dim}")
        output = (
            Path(output) if output else artifact.with_name(f"{artifact.stem}.global{dim}{artifact.suffix}")
        )
        compression = Compression(kind="global", dim=dim, input_dim=sidecar.output_dim)
    elif kind == "pca":
        if dim is None or features is None:
            raise CompressionError("pca compression needs dim and the training features to fit on")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != sidecar.output_dim:
            raise CompressionError(
                f"PCA features must be (N, {sidecar.output_dim}) uncompressed embeddings, got {features.shape}"
            )
        output = Path(output) if output else artifact.with_name(f"{artifact.stem}.pca{dim}{artifact.suffix}")
        mean, components, explained = fit_pca(features, int(dim))
        pca_path = output.with_name(output.name + ".pca.npz")
        save_pca(pca_path, mean, components, explained_variance_ratio=explained, fit_count=features.shape[0])
        compression = Compression(
            kind="pca",
            dim=int(dim),
            input_dim=sidecar.output_dim,
            pca_file=pca_path.name,
            pca_sha256=sha256_file(pca_path),
        )
        source_info = {"explained_variance_ratio": explained, "fit_count": int(features.shape[0])}
    else:
        raise CompressionError(f"compression kind must be 'global' or 'pca', got {kind!r}")
    if output.resolve() == artifact.resolve():
        raise SidecarError(f"the compressed variant needs its own file name, not {artifact}")
    _link_or_copy(artifact, output)
    variant = dataclasses.replace(
        sidecar,
        artifact=output.name,
        compression=compression,
        engine_id="",
        source={
            **sidecar.source,
            "compressed_from": {"artifact": artifact.name, "engine_id": sidecar.engine_id},
            "compression_fit": {**source_info, **(fit_info or {})},
        },
    )
    save_sidecar(variant, output)
    return variant


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        import shutil

        shutil.copyfile(source, target)
