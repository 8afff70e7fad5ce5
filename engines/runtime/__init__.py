"""One embedder runtime over torch / onnxruntime / TensorRT (backends are imported lazily)."""

from engines.runtime.base import Embedder, EmbedderError, l2_normalize
from engines.runtime.preprocess import preprocess_crops

__all__ = ["Embedder", "EmbedderError", "l2_normalize", "preprocess_crops"]
