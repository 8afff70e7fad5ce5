"""onnxruntime backend: CPU by default, the CUDA execution provider when asked for and present.

No torch here: the edge CPU path runs an ONNX engine with numpy, OpenCV and onnxruntime only.
"""

from __future__ import annotations

import os

import numpy as np

from engines.runtime.base import Embedder, EmbedderError
from engines.sidecar import EngineSidecar, SidecarError

__all__ = ["GRAPH_OPTIMIZATION_LEVELS", "OnnxRuntimeEmbedder"]

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class OnnxRuntimeEmbedder(Embedder):
    """Runs an ``.onnx`` artifact (FP32, FP16 or INT8 Q/DQ; float32 input and output) in onnxruntime.

    Args:
        sidecar, artifact: the ONNX file and its sidecar (see :func:`engines.runtime.load_embedder`).
        device: ``cpu`` or ``cuda`` / ``cuda:N`` (needs the CUDA execution provider, i.e. the
            ``onnxruntime-gpu`` package; a clear error otherwise).
        intra_op_threads: threads inside one operator (``None``: onnxruntime's default, one per
            physical core). On a small CPU this is the knob that matters.
        inter_op_threads: threads across independent operators (the graph is a chain: 1 is right).
        graph_optimization: ``disable`` | ``basic`` | ``extended`` | ``all`` (default: all layout
            and fusion rewrites, e.g. NCHWc convolutions on AVX-512 CPUs).
        optimized_model_path: write the optimised graph there (for inspection).

    Raises:
        SidecarError: the ONNX graph's input/output names, input size or output size differ from
            the sidecar.
        EmbedderError: the requested device's execution provider is not available.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        sidecar: EngineSidecar,
        artifact: str | os.PathLike[str],
        *,
        device: str = "cpu",
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = 1,
        graph_optimization: str = "all",
        optimized_model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        super().__init__(sidecar, artifact)
        if sidecar.format != "onnx":
            raise SidecarError(f"{self.artifact}: sidecar says format {sidecar.format!r}, expected 'onnx'")
        if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise ValueError(
                f"graph_optimization must be one of {GRAPH_OPTIMIZATION_LEVELS}, got {graph_optimization!r}"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            options.inter_op_num_threads = int(inter_op_threads)
        if optimized_model_path is not None:
            options.optimized_model_filepath = str(optimized_model_path)
        self.device = device
        self.providers = _providers(device, ort.get_available_providers())
        self._session = ort.InferenceSession(str(self.artifact), options, providers=self.providers)
        self._check_graph()

    def _check_graph(self) -> None:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        name = self.artifact.name
        if len(inputs) != 1 or inputs[0].name != self.sidecar.input_name:
            raise SidecarError(
                f"{name}: graph inputs {[i.name for i in inputs]} do not match the sidecar's input_name "
                f"{self.sidecar.input_name!r}"
            )
        if self.sidecar.output_name not in [o.name for o in outputs]:
            raise SidecarError(
                f"{name}: graph outputs {[o.name for o in outputs]} do not include the sidecar's output_name "
                f"{self.sidecar.output_name!r}"
            )
        if inputs[0].type != "tensor(float)":
            raise SidecarError(
                f"{name}: input {inputs[0].name!r} is {inputs[0].type}, expected tensor(float)"
            )
        shape = list(inputs[0].shape)
        h, w = self.input_size
        if len(shape) != 4 or shape[1:] != [3, h, w]:
            raise SidecarError(
                f"{name}: graph input shape {shape} does not match the sidecar's (N, 3, {h}, {w})"
            )
        output = next(o for o in outputs if o.name == self.sidecar.output_name)
        out_shape = list(output.shape)
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != self.sidecar.output_dim):
            raise SidecarError(
                f"{name}: graph output shape {out_shape} does not match the sidecar's output_dim "
                f"{self.sidecar.output_dim}"
            )
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._fixed_batch is not None and batch.shape[0] != self._fixed_batch:
            raise EmbedderError(
                f"{self.artifact.name}: the graph takes exactly batch {self._fixed_batch}; set the sidecar's "
                f"batch.max to {self._fixed_batch} so larger batches are split"
            )
        (out,) = self._session.run([self.sidecar.output_name], {self.sidecar.input_name: batch})
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._session = None
        super().close()


def _providers(device: str, available: list[str]) -> list[str | tuple[str, dict[str, str]]]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise EmbedderError(
                f"device {device!r} needs onnxruntime's CUDAExecutionProvider (the onnxruntime-gpu package); "
                f"available providers: {available}"
            )
        index = device.split(":", 1)[1] if ":" in device else "0"
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise EmbedderError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
