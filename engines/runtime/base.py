"""The one embedder interface every backend (torch, onnxruntime, TensorRT) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.files import sha256_file
from engines.runtime.preprocess import preprocess_crops
from engines.sidecar import EngineSidecar


class EmbedderError(ValueError):
    """Wrong input for an embedder (shape, dtype) or an artifact it cannot run."""


class Embedder(ABC):
    """``embed(batch) -> (N, D) float32 L2-normalised`` over any backend.

    Subclasses implement :meth:`_run` for one chunk of at most :attr:`max_batch` images; this class
    validates input, splits large batches, applies the sidecar's compression, and normalises.

    Attributes:
        sidecar: the artifact's :class:`EngineSidecar`.
        backend: ``torch``, ``onnxruntime`` or ``tensorrt``.
    """

    backend: str = "abstract"

    def __init__(self, sidecar: EngineSidecar, artifact: str | Path) -> None:
        self.sidecar = sidecar
        self.artifact = Path(artifact)
        self._projection = _load_projection(sidecar, self.artifact)

    @property
    def engine_id(self) -> str:
        return self.sidecar.engine_id

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.sidecar.preprocessing.height, self.sidecar.preprocessing.width

    @property
    def embedding_dim(self) -> int:
        return self.sidecar.embedding_dim

    @property
    def max_batch(self) -> int | None:
        """Largest batch one backend call takes (``None``: any); larger batches are split."""
        return self.sidecar.batch.max

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed preprocessed images.

        Args:
            batch: (N, 3, H, W) float32, preprocessed as the sidecar says (see :meth:`embed_crops`).

        Returns:
            (N, D) float32, each row L2-normalised; (0, D) for N = 0.
        """
        h, w = self.input_size
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            shape = getattr(batch, "shape", None)
            raise EmbedderError(f"{self.artifact.name}: expected a (N, 3, {h}, {w}) array, got shape {shape}")
        if batch.dtype != np.float32:
            raise EmbedderError(f"{self.artifact.name}: expected float32 input, got {batch.dtype}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        step = self.max_batch or batch.shape[0]
        chunks = [
            self._run(np.ascontiguousarray(batch[i : i + step])) for i in range(0, batch.shape[0], step)
        ]
        raw = np.concatenate(chunks, axis=0).astype(np.float32, copy=False)
        if raw.shape != (batch.shape[0], self.sidecar.output_dim):
            raise EmbedderError(
                f"{self.artifact.name}: backend returned shape {raw.shape}, sidecar says (N, {self.sidecar.output_dim})"
            )
        return self._finish(raw)

    def embed_crops(self, crops: Sequence[np.ndarray], input_order: str = "BGR") -> np.ndarray:
        """Preprocess uint8 crops (see :func:`preprocess_crops`) and embed them: (N, D) float32."""
        return self.embed(preprocess_crops(crops, self.sidecar.preprocessing, input_order))

    def close(self) -> None:
        """Release backend resources (sessions, device buffers). Idempotent."""
        self._closed = True

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Backend forward of one contiguous (n, 3, H, W) float32 chunk -> (n, output_dim)."""

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        out = l2_normalize(raw)
        compression = self.sidecar.compression
        if compression is None:
            return out
        if compression.kind == "global":
            return l2_normalize(out[:, -compression.dim :])
        mean, components = self._projection
        return l2_normalize((out - mean) @ components.T)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of a (N, D) array scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def _load_projection(sidecar: EngineSidecar, artifact: Path) -> tuple[np.ndarray, np.ndarray] | None:
    compression = sidecar.compression
    if compression is None or compression.kind != "pca":
        return None
    path = artifact.parent / str(compression.pca_file)
    if not path.is_file():
        raise EmbedderError(f"PCA projection {path} named by the sidecar of {artifact.name} does not exist")
    if compression.pca_sha256 and sha256_file(path) != compression.pca_sha256:
        raise EmbedderError(
            f"PCA projection {path} does not match the sha256 in the sidecar of {artifact.name} "
            "(the projection was refitted or replaced; recreate the compressed variant)"
        )
    with np.load(path) as data:
        mean = data["mean"].astype(np.float32)
        components = data["components"].astype(np.float32)
    if mean.shape != (compression.input_dim,) or components.shape != (compression.dim, compression.input_dim):
        raise EmbedderError(
            f"{path}: expected mean ({compression.input_dim},) and components ({compression.dim}, "
            f"{compression.input_dim}), got {mean.shape} and {components.shape}"
        )
    return mean, components
