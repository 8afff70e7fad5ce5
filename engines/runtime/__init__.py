"""One embedder runtime over torch / onnxruntime / TensorRT (backends are imported lazily).

Usage::

    from engines.runtime import load_embedder

    embedder = load_embedder("model.onnx")            # backend from the artifact and its sidecar
    embeddings = embedder.embed_crops(crops)           # list of uint8 BGR or grey crops -> (N, D) float32
    embeddings = embedder.embed(batch)                 # (N, 3, H, W) float32, preprocessed -> (N, D)
    embedder.engine_id                                 # what the gallery compares

No backend module is imported until :func:`load_embedder` needs it, and this package never imports
torch at module level: the onnxruntime path runs without torch installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engines.runtime.base import Embedder, EmbedderError, l2_normalize
from engines.runtime.preprocess import preprocess_crops
from engines.sidecar import SidecarError, load_sidecar

__all__ = [
    "BACKENDS",
    "Embedder",
    "EmbedderError",
    "backend_for",
    "l2_normalize",
    "load_embedder",
    "preprocess_crops",
]

# Artifact suffix -> (backend name, sidecar format).
BACKENDS: dict[str, tuple[str, str]] = {
    ".onnx": ("onnxruntime", "onnx"),
    ".plan": ("tensorrt", "tensorrt"),
    ".engine": ("tensorrt", "tensorrt"),
    ".pt": ("torch", "torch"),
    ".pth": ("torch", "torch"),
}


def backend_for(path: str | os.PathLike[str]) -> str:
    """The backend that runs ``path``, from its suffix (``onnxruntime``, ``tensorrt`` or ``torch``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in BACKENDS:
        raise EmbedderError(f"{path}: unknown artifact type {suffix!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[suffix][0]


def load_embedder(path: str | os.PathLike[str], device: str = "cpu", **options: Any) -> Embedder:
    """Open an artifact with the backend its type and sidecar call for.

    Args:
        path: ``.onnx`` (onnxruntime), ``.plan`` / ``.engine`` (TensorRT) or ``.pt`` / ``.pth``
            (torch; a checkpoint needs no sidecar, one is derived from it). ONNX and TensorRT
            artifacts need their sidecar ``<path>.json``, whose sha256 must match the file.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (TensorRT needs CUDA).
        **options: backend options: onnxruntime ``intra_op_threads``, ``inter_op_threads``,
            ``graph_optimization``; torch ``half``, ``channels_last``, ``cuda_graph_batch_sizes``.

    Raises:
        EmbedderError: unknown artifact type or device.
        SidecarError: missing/mismatched sidecar, or a graph that disagrees with it.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"engine artifact {path} does not exist")
    backend = backend_for(path)
    if backend == "torch":
        from engines.runtime.torch_backend import load_torch_embedder

        return load_torch_embedder(path, device=device, **options)
    sidecar = load_sidecar(path)
    expected_format = BACKENDS[path.suffix.lower()][1]
    if sidecar.format != expected_format:
        raise SidecarError(
            f"{path}: its sidecar describes a {sidecar.format!r} artifact, but the file is {expected_format!r}"
        )
    if backend == "onnxruntime":
        from engines.runtime.onnxruntime_backend import OnnxRuntimeEmbedder

        return OnnxRuntimeEmbedder(sidecar, path, device=device, **options)
    from engines.runtime.tensorrt_backend import TensorRTEmbedder

    if device == "cpu":
        device = "cuda"  # a plan only runs on a GPU; "cpu" is just this function's default
    return TensorRTEmbedder(sidecar, path, device=device, **options)
