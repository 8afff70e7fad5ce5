"""torch backend: runs an MPANet checkpoint (``.pt``) directly, on CPU or CUDA.

The one runtime module allowed to touch training code: torch and :mod:`trainer.checkpoint` are
imported inside the functions that need them, so ``import engines.runtime`` stays torch-free.

On CUDA it can run FP16 with channels_last memory and replay CUDA graphs captured for fixed batch
sizes. FP16 here follows the same rule as the FP16 ONNX: the instance norms of the modality
alleviation module are computed in FP32 (their per-image variance over a 24x8 map is a known FP16
error source), everything else in FP16.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.files import sha256_file
from engines.runtime.base import Embedder, EmbedderError
from engines.sidecar import (
    BatchProfile,
    EngineSidecar,
    Preprocessing,
    SidecarError,
    load_sidecar,
    sidecar_path,
)

if TYPE_CHECKING:
    import torch

__all__ = ["TorchEmbedder", "load_torch_embedder", "torch_sidecar"]


class TorchEmbedder(Embedder):
    """``model.embed`` of an MPANet checkpoint behind the :class:`Embedder` interface.

    Build it with :func:`load_torch_embedder`.

    Attributes:
        device: the torch device string.
        half: FP16 weights/activations (CUDA only), MAM instance norms in FP32.
        channels_last: NHWC memory format for the convolutions.
        cuda_graph_batch_sizes: batch sizes with a captured CUDA graph; a chunk of n images replays
            the smallest captured size >= n (padded), larger chunks are split by :attr:`max_batch`.
    """

    backend = "torch"

    def __init__(
        self,
        sidecar: EngineSidecar,
        artifact: str | os.PathLike[str],
        model: torch.nn.Module,
        *,
        device: str = "cpu",
        half: bool = False,
        channels_last: bool = False,
        cuda_graph_batch_sizes: Sequence[int] = (),
    ) -> None:
        import torch

        super().__init__(sidecar, artifact)
        self.device = str(device)
        self.half = bool(half)
        self.channels_last = bool(channels_last)
        self._torch = torch
        self._dtype = torch.float16 if self.half else torch.float32
        self._model = model
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self.cuda_graph_batch_sizes = tuple(sorted({int(b) for b in cuda_graph_batch_sizes}))
        if self.cuda_graph_batch_sizes:
            if not self.device.startswith("cuda"):
                raise EmbedderError("CUDA graphs need device='cuda'")
            if self.cuda_graph_batch_sizes[0] < 1:
                raise EmbedderError(f"CUDA graph batch sizes must be >= 1, got {self.cuda_graph_batch_sizes}")
            for size in self.cuda_graph_batch_sizes:
                self._graphs[size] = self._capture(size)

    @property
    def max_batch(self) -> int | None:
        if self.cuda_graph_batch_sizes:
            return self.cuda_graph_batch_sizes[-1]
        return super().max_batch

    def _input(self, batch: np.ndarray) -> torch.Tensor:
        x = self._torch.from_numpy(batch).to(self.device, non_blocking=False).to(self._dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=self._torch.channels_last)
        return x

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        n = batch.shape[0]
        size = next((s for s in self.cuda_graph_batch_sizes if s >= n), None)
        with torch.inference_mode():
            if size is None:
                out = self._model.embed(self._input(batch))
            else:
                graph, static_in, static_out = self._graphs[size]
                # Rows are independent in eval mode (BN uses running stats, IN is per image), so
                # stale rows beyond n in the static input do not affect the first n outputs.
                static_in[:n].copy_(self._input(batch))
                graph.replay()
                out = static_out[:n]
            return out.float().cpu().numpy()

    def _capture(self, size: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        torch = self._torch
        h, w = self.input_size
        static_in = torch.zeros((size, 3, h, w), device=self.device, dtype=self._dtype)
        if self.channels_last:
            static_in = static_in.contiguous(memory_format=torch.channels_last)
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream: cuDNN picks its kernels before capture
                self._model.embed(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self._model.embed(static_in)
        return graph, static_in, static_out

    def close(self) -> None:
        self._graphs.clear()
        self._model = None
        super().close()


def torch_sidecar(
    checkpoint: str | os.PathLike[str], precision: str = "fp32", *, model_config: Any = None
) -> EngineSidecar:
    """The sidecar of a ``.pt`` checkpoint, derived from the checkpoint itself.

    A checkpoint carries its model config (input size, embedding size); the preprocessing is the
    training one (ImageNet mean/std, RGB, infrared replicated to 3 channels).

    Args:
        checkpoint: the ``.pt`` file.
        precision: ``fp32`` or ``fp16`` (what the torch backend will run).
        model_config: the checkpoint's :class:`trainer.model.ModelConfig` when the caller already
            loaded the model; otherwise the checkpoint is loaded to get it.
    """
    checkpoint = Path(checkpoint)
    if model_config is None:
        from trainer.checkpoint import load_model

        model_config = load_model(checkpoint, map_location="cpu")[0].config
    digest = sha256_file(checkpoint)
    return EngineSidecar(
        format="torch",
        artifact=checkpoint.name,
        artifact_sha256=digest,
        preprocessing=Preprocessing(height=model_config.height, width=model_config.width),
        output_dim=model_config.embedding_dim,
        precision=precision,
        normalized=False,
        batch=BatchProfile(min=1, opt=8, max=None),
        checkpoint_sha256=digest,
        model_config={**dataclasses.asdict(model_config), "pretrained": None},
        source={"created_by": "engines.runtime.torch_backend"},
    )


def load_torch_embedder(
    path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    half: bool | None = None,
    channels_last: bool | None = None,
    cuda_graph_batch_sizes: Sequence[int] = (),
) -> TorchEmbedder:
    """Load a checkpoint as an embedder.

    Args:
        path: an ``mpanet-checkpoint`` ``.pt`` file. A sidecar ``<path>.json`` is used (and checked
            against the file) when present; otherwise one is derived with :func:`torch_sidecar`.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        half: FP16 (default: on for CUDA, off for CPU; CPU FP16 is refused).
        channels_last: NHWC memory (default: on for CUDA).
        cuda_graph_batch_sizes: capture a CUDA graph per size (CUDA only).
    """
    import torch

    from trainer.checkpoint import load_model

    path = Path(path)
    cuda = str(device).startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise EmbedderError(f"device {device!r} asked for, but torch sees no CUDA device")
    if not cuda and str(device) != "cpu":
        raise EmbedderError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    half = cuda if half is None else bool(half)
    channels_last = cuda if channels_last is None else bool(channels_last)
    if half and not cuda:
        raise EmbedderError("FP16 (half=True) is for CUDA; on CPU use the FP32 model or an ONNX engine")
    precision = "fp16" if half else "fp32"
    model, _ = load_model(path, map_location="cpu")
    if sidecar_path(path).is_file():
        sidecar = load_sidecar(path)
        if sidecar.format != "torch":
            raise SidecarError(
                f"{sidecar_path(path)} says format {sidecar.format!r}, expected 'torch' for {path}"
            )
        if sidecar.precision != precision:
            sidecar = dataclasses.replace(sidecar, precision=precision, engine_id="")
    else:
        sidecar = torch_sidecar(path, precision, model_config=model.config)
    if model.embedding_dim != sidecar.output_dim or (model.config.height, model.config.width) != (
        sidecar.preprocessing.height,
        sidecar.preprocessing.width,
    ):
        raise SidecarError(
            f"{sidecar_path(path)} does not match {path}: the checkpoint embeds {model.embedding_dim}-d at "
            f"{model.config.height}x{model.config.width}"
        )
    if half:
        model = model.half()
        _keep_instance_norm_fp32(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device).eval()
    return TorchEmbedder(
        sidecar,
        path,
        model,
        device=str(device),
        half=half,
        channels_last=channels_last,
        cuda_graph_batch_sizes=cuda_graph_batch_sizes,
    )


def _keep_instance_norm_fp32(model: torch.nn.Module) -> int:
    """Wrap every InstanceNorm2d so it computes in FP32 inside an FP16 model; returns how many."""
    from torch import nn

    class Float32InstanceNorm(nn.Module):
        def __init__(self, norm: nn.Module) -> None:
            super().__init__()
            self.norm = norm.float()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x.float()).to(x.dtype)

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d):
                setattr(parent, name, Float32InstanceNorm(child))
                count += 1
    return count
