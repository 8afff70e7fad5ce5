"""TensorRT backend: a ``.plan`` behind the :class:`Embedder` interface.

Every TensorRT and CUDA call lives in :mod:`engines.tensorrt` (imported lazily here, so a machine
without TensorRT can still import the runtime); this module only adapts it.
"""

from __future__ import annotations

import os

import numpy as np

from engines.runtime.base import Embedder, EmbedderError
from engines.sidecar import EngineSidecar, SidecarError

__all__ = ["TensorRTEmbedder"]


class TensorRTEmbedder(Embedder):
    """Runs a TensorRT plan on a CUDA device.

    Args:
        sidecar, artifact: the ``.plan`` and its sidecar.
        device: ``cuda`` or ``cuda:N``.

    Raises:
        engines.tensorrt.TensorRTUnavailable: TensorRT / cuda-python missing.
        SidecarError: the plan does not match its sidecar or does not deserialize here.
    """

    backend = "tensorrt"

    def __init__(
        self, sidecar: EngineSidecar, artifact: str | os.PathLike[str], *, device: str = "cuda"
    ) -> None:
        from engines.tensorrt import TensorRTRunner

        super().__init__(sidecar, artifact)
        if sidecar.format != "tensorrt":
            raise SidecarError(
                f"{self.artifact}: sidecar says format {sidecar.format!r}, expected 'tensorrt'"
            )
        if device != "cuda" and not device.startswith("cuda:"):
            raise EmbedderError(f"TensorRT plans run on CUDA devices; got device {device!r}")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        self.device = device
        self._runner = TensorRTRunner(self.artifact, sidecar, device=index)

    @property
    def max_batch(self) -> int | None:
        """The plan's profile maximum (larger batches are split by :meth:`embed`)."""
        return self._runner.max_batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._runner.run(batch)

    def close(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            runner.close()
        super().close()
