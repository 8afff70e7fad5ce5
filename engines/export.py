"""Checkpoint -> ONNX with a fixed H x W and a dynamic batch axis, verified before it is kept.

The graph is :class:`trainer.model.EmbeddingHead`: ``images (N, 3, H, W) float32 -> embeddings (N, D)
float32`` (the eval-mode BN-neck feature, not L2-normalised; the runtime normalises). It is exported
with torch's ``torch.export``-based ("dynamo") ONNX exporter: on this model it gives a clean graph
(BatchNorms folded into the convolutions, no Shape/Gather/Slice chains) in which the modality
alleviation module's instance norms stay real ``InstanceNormalization`` nodes, which is what the
FP16 conversion needs to keep exactly those in FP32 (:mod:`engines.precision`). The legacy
TorchScript exporter also works but adds Identity/Constant/Shape nodes and warns that instance norm
is exported in training mode.

Export verifies itself (design principle 10): eval mode is asserted, ``onnx.checker`` runs in full
mode, and onnxruntime's embeddings are compared with torch's at batch 1, 7 and 32 (which also proves
the batch axis is really dynamic). The artifact is written to a temporary name and moved into place
only when every check passes; otherwise :class:`ExportError` is raised and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from common.files import sha256_file
from engines.runtime.base import l2_normalize
from engines.sidecar import BatchProfile, EngineSidecar, Preprocessing, save_sidecar
from trainer.checkpoint import load_model
from trainer.model import EmbeddingHead, ModelConfig, MPANet

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PARITY_BATCH_SIZES",
    "PARITY_COSINE_MIN",
    "ExportError",
    "ExportResult",
    "ParityReport",
    "check_parity",
    "export_model",
    "export_onnx",
]

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
DEFAULT_OPSET = 18
PARITY_BATCH_SIZES = (1, 7, 32)
# Worst per-row cosine similarity allowed between torch and onnxruntime L2-normalised embeddings.
# Measured on random-init and trained-shape models: >= 0.999999 (float32 reassociation only).
PARITY_COSINE_MIN = 0.9999

_LOG = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export failed one of its own checks (eval mode, ``onnx.checker``, parity, shapes)."""


@dataclass(frozen=True)
class ParityReport:
    """torch vs onnxruntime agreement on L2-normalised embeddings.

    Attributes:
        batch_sizes: the batch sizes that were run.
        cosine_min: worst per-row cosine similarity over all batches.
        cosine_min_per_batch: the same per batch size.
        max_abs_diff: largest absolute difference of normalised embedding values.
        threshold: the ``cosine_min`` the export required.
    """

    batch_sizes: tuple[int, ...]
    cosine_min: float
    cosine_min_per_batch: dict[int, float]
    max_abs_diff: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_sizes": list(self.batch_sizes),
            "cosine_min": self.cosine_min,
            "cosine_min_per_batch": {str(k): v for k, v in self.cosine_min_per_batch.items()},
            "max_abs_diff": self.max_abs_diff,
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` produced."""

    artifact: Path
    sidecar_path: Path
    sidecar: EngineSidecar
    parity: ParityReport
    seconds: float


def export_onnx(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    height: int | None = None,
    width: int | None = None,
    opset: int = DEFAULT_OPSET,
    parity_batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    cosine_min: float = PARITY_COSINE_MIN,
    opt_batch: int = 8,
) -> ExportResult:
    """Export the embedding path of an MPANet checkpoint to a single self-contained ONNX file.

    Args:
        checkpoint: an ``mpanet-checkpoint`` file (:mod:`trainer.checkpoint`).
        output: the ``.onnx`` path; its sidecar is written to ``<output>.json``.
        height, width: input size in pixels; default the checkpoint's training size. Must be valid
            for the backbone (multiples of the output stride).
        opset: ONNX opset (>= 17).
        parity_batch_sizes: batch sizes at which onnxruntime must match torch.
        cosine_min: required worst-case cosine similarity of the normalised embeddings.
        opt_batch: the batch size recorded as typical in the sidecar (TensorRT profiles start from it).

    Returns:
        :class:`ExportResult`.

    Raises:
        ExportError: a check failed; no artifact is left at ``output``.
        trainer.checkpoint.CheckpointError: the checkpoint cannot be read.
    """
    checkpoint = Path(checkpoint)
    model, payload = load_model(checkpoint, map_location="cpu")
    extra_source: dict[str, Any] = {"checkpoint": checkpoint.name}
    if "config_yaml" in payload:
        extra_source["training_config_yaml"] = payload["config_yaml"]
    return export_model(
        model,
        output,
        checkpoint_sha256=sha256_file(checkpoint),
        height=height,
        width=width,
        opset=opset,
        parity_batch_sizes=parity_batch_sizes,
        cosine_min=cosine_min,
        opt_batch=opt_batch,
        extra_source=extra_source,
    )


def export_model(
    model: MPANet,
    output: str | os.PathLike[str],
    *,
    checkpoint_sha256: str | None = None,
    height: int | None = None,
    width: int | None = None,
    opset: int = DEFAULT_OPSET,
    parity_batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    cosine_min: float = PARITY_COSINE_MIN,
    opt_batch: int = 8,
    extra_source: dict[str, Any] | None = None,
) -> ExportResult:
    """Export an in-memory :class:`MPANet` (in eval mode) like :func:`export_onnx` does."""
    started = time.perf_counter()
    if opset < 17:
        raise ExportError(
            f"opset must be >= 17 (InstanceNormalization/ReduceMean forms used here), got {opset}"
        )
    if not parity_batch_sizes or any(b < 1 for b in parity_batch_sizes):
        raise ExportError(f"parity_batch_sizes must be positive batch sizes, got {list(parity_batch_sizes)}")
    config = _input_config(model.config, height, width)
    _assert_eval(model)
    output = Path(output)
    if output.suffix != ".onnx":
        raise ExportError(f"output must end in .onnx, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    head = EmbeddingHead(model).eval()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp.onnx", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _torch_export(head, tmp, config.height, config.width, opset)
        graph = _check_graph(tmp, config, model.embedding_dim)
        parity = check_parity(head, tmp, config.height, config.width, parity_batch_sizes, cosine_min)
        sidecar = EngineSidecar(
            format="onnx",
            artifact=output.name,
            artifact_sha256=sha256_file(tmp),
            preprocessing=Preprocessing(height=config.height, width=config.width),
            output_dim=model.embedding_dim,
            precision="fp32",
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            normalized=False,
            batch=BatchProfile(min=1, opt=opt_batch, max=None),
            checkpoint_sha256=checkpoint_sha256,
            model_config=dataclasses.asdict(config),
            source={
                "created_by": "mpanet-export",
                "exporter": "torch.onnx.export(dynamo=True)",
                "torch_version": torch.__version__,
                "onnx_version": onnx.__version__,
                "opset": opset,
                "graph_ops": graph,
                "parity": parity.to_dict(),
                **(extra_source or {}),
            },
        )
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    path = save_sidecar(sidecar, output)
    seconds = time.perf_counter() - started
    _LOG.info(
        "exported %s (%s, parity cosine_min %.7f) in %.1f s",
        output,
        sidecar.engine_id,
        parity.cosine_min,
        seconds,
    )
    return ExportResult(artifact=output, sidecar_path=path, sidecar=sidecar, parity=parity, seconds=seconds)


def check_parity(
    head: torch.nn.Module,
    onnx_path: str | os.PathLike[str],
    height: int,
    width: int,
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    cosine_min: float = PARITY_COSINE_MIN,
    seed: int = 0,
) -> ParityReport:
    """Run torch and onnxruntime (CPU) on the same random batches and compare normalised embeddings.

    Inputs are standard-normal (the scale of ImageNet-normalised images), seeded.

    Raises:
        ExportError: a batch gives the wrong output shape, or the worst cosine is below ``cosine_min``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    per_batch: dict[int, float] = {}
    max_abs = 0.0
    for batch in batch_sizes:
        images = rng.standard_normal((batch, 3, height, width), dtype=np.float32)
        with torch.inference_mode():
            expected = head(torch.from_numpy(images)).float().numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
        if got.shape != expected.shape:
            raise ExportError(
                f"{onnx_path}: onnxruntime returned shape {got.shape} at batch {batch}, torch {expected.shape} "
                "(is the batch axis really dynamic?)"
            )
        a, b = l2_normalize(expected), l2_normalize(got)
        per_batch[batch] = float(np.min(np.sum(a * b, axis=1)))
        max_abs = max(max_abs, float(np.max(np.abs(a - b))))
    worst = min(per_batch.values())
    report = ParityReport(
        batch_sizes=tuple(batch_sizes),
        cosine_min=worst,
        cosine_min_per_batch=per_batch,
        max_abs_diff=max_abs,
        threshold=cosine_min,
    )
    if not np.isfinite(worst) or worst < cosine_min:
        raise ExportError(
            f"onnxruntime vs torch parity failed: worst cosine {worst:.7f} < {cosine_min} "
            f"(per batch {per_batch}, max |diff| {max_abs:.2e}); the ONNX graph does not compute what "
            "the checkpoint computes"
        )
    return report


# ------------------------------------------------------------------------------------------ helpers


def _input_config(config: ModelConfig, height: int | None, width: int | None) -> ModelConfig:
    """The model config with the export's H x W (validated by ModelConfig against the stride)."""
    try:
        return dataclasses.replace(
            config,
            height=height or config.height,
            width=width or config.width,
            pretrained=None,
        )
    except ValueError as exc:
        raise ExportError(f"invalid export input size: {exc}") from exc


def _assert_eval(model: torch.nn.Module) -> None:
    training = [name or "<root>" for name, module in model.named_modules() if module.training]
    if training:
        raise ExportError(
            f"model must be in eval mode for export; {len(training)} modules are in training mode "
            f"(e.g. {training[:3]}): the BN neck would use batch statistics"
        )


def _torch_export(head: torch.nn.Module, path: Path, height: int, width: int, opset: int) -> None:
    # Batch 2 as the example: torch.export specialises a dimension whose example size is 1.
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with torch.no_grad():
            torch.onnx.export(
                head,
                (example,),
                str(path),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"images": {0: batch}},
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {exc}") from exc


def _check_graph(path: Path, config: ModelConfig, embedding_dim: int) -> dict[str, int]:
    """``onnx.checker`` (full), named I/O with the expected shapes; returns the op-type histogram."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ExportError(f"{path}: weights were written as external data; expected one self-contained file")
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in model.graph.output] != [OUTPUT_NAME]:
        raise ExportError(
            f"{path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
            f"{[i.name for i in inputs]} -> {[o.name for o in model.graph.output]}"
        )
    in_dims = _dims(inputs[0])
    out_dims = _dims(model.graph.output[0])
    if not isinstance(in_dims[0], str) or in_dims[1:] != [3, config.height, config.width]:
        raise ExportError(
            f"{path}: input shape {in_dims}, expected [batch, 3, {config.height}, {config.width}]"
        )
    if len(out_dims) != 2 or not isinstance(out_dims[0], str) or out_dims[1] != embedding_dim:
        raise ExportError(f"{path}: output shape {out_dims}, expected [batch, {embedding_dim}]")
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    expected_norms = len(config.mam_stages) if config.mam else 0
    if ops.get("InstanceNormalization", 0) != expected_norms:
        raise ExportError(
            f"{path}: expected {expected_norms} InstanceNormalization nodes (one per MAM), found "
            f"{ops.get('InstanceNormalization', 0)}; the FP16 conversion relies on them"
        )
    return dict(sorted(ops.items()))


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]
