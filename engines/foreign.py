"""Sidecars for ONNX ReID models trained elsewhere (OSNet, fast-reid exports, ...).

An MPANet artifact gets its sidecar from ``mpanet-export``; a foreign ONNX model has none, so the
runtime cannot know its input size, normalisation or output. :func:`describe_onnx` reads what the
graph itself says (input/output names, static sizes, batch dimension, precision from the weights and
Q/DQ nodes), combines it with what only the user knows (input size, mean/std, channel order), runs
the model once on a constant batch to learn the embedding size and whether it is L2-normalised
already, and returns the :class:`~engines.sidecar.EngineSidecar` whose ``engine_id`` the linker
uses. :func:`write_foreign_sidecar` also writes it beside the model and checks it end to end
through :func:`engines.runtime.load_embedder`. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.files import sha256_file
from engines.sidecar import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchProfile,
    EngineSidecar,
    Preprocessing,
    SidecarError,
    save_sidecar,
)

__all__ = ["GraphFacts", "describe_onnx", "inspect_onnx", "write_foreign_sidecar"]


@dataclass(frozen=True)
class GraphFacts:
    """What an ONNX graph declares about its interface.

    Attributes:
        inputs, outputs: ``{name: shape}``; a shape entry is an int (static) or ``None`` (dynamic).
        input_types: ``{name: ONNX elem type name}`` (e.g. ``FLOAT``).
        precision: ``int8`` (QuantizeLinear/DequantizeLinear nodes), ``fp16`` (most weights FLOAT16)
            or ``fp32``.
    """

    inputs: dict[str, tuple[int | None, ...]]
    outputs: dict[str, tuple[int | None, ...]]
    input_types: dict[str, str]
    precision: str


def inspect_onnx(path: str | os.PathLike[str]) -> GraphFacts:
    """Read the interface of an ONNX model (``onnx.checker`` must accept it)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise SidecarError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises assorted types for broken files
        raise SidecarError(f"{path} is not a valid ONNX model: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}

    def shape(value: Any) -> tuple[int | None, ...]:
        dims = value.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)

    inputs = {v.name: shape(v) for v in model.graph.input if v.name not in initializers}
    types = {
        v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
        for v in model.graph.input
        if v.name not in initializers
    }
    outputs = {v.name: shape(v) for v in model.graph.output}
    ops = {node.op_type for node in model.graph.node}
    weights = [t.data_type for t in model.graph.initializer if len(t.dims) > 1]
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        precision = "int8"
    elif weights and sum(w == onnx.TensorProto.FLOAT16 for w in weights) > len(weights) / 2:
        precision = "fp16"
    else:
        precision = "fp32"
    return GraphFacts(inputs, outputs, types, precision)


def _choose(kind: str, names: Sequence[str], wanted: str | None, path: Path) -> str:
    if wanted is not None:
        if wanted not in names:
            raise SidecarError(f"{path}: no {kind} named {wanted!r}; the graph's {kind}s are {list(names)}")
        return wanted
    if len(names) != 1:
        flag = "--input-name" if kind == "input" else "--output-name"
        raise SidecarError(f"{path}: the graph has {len(names)} {kind}s {list(names)}; pick one with {flag}")
    return names[0]


def describe_onnx(
    path: str | os.PathLike[str],
    height: int,
    width: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channel_order: str = "RGB",
    input_name: str | None = None,
    output_name: str | None = None,
    opt_batch: int = 8,
    source: dict[str, Any] | None = None,
) -> EngineSidecar:
    """The sidecar of a foreign ONNX ReID model, checked by running it once in onnxruntime.

    Args:
        path: the ``.onnx`` file (float32 NCHW input of 3 channels).
        height, width: the input size in pixels the model was trained for (e.g. 256 x 128).
        mean, std: per-channel normalisation after scaling pixels to [0, 1], in ``channel_order``.
        channel_order: ``RGB`` (torchvision / deep-person-reid / fast-reid default) or ``BGR``.
        input_name, output_name: needed when the graph has several inputs / outputs.
        opt_batch: the batch size to tune for (TensorRT profiles).
        source: extra provenance stored in the sidecar.

    Raises:
        SidecarError: the graph's input is not (N, 3, H, W) float32 with H x W compatible with
            ``height`` x ``width``, the output is not (N, D), the run fails or gives non-finite values.
    """
    import onnxruntime as ort

    path = Path(path)
    facts = inspect_onnx(path)
    input_name = _choose("input", list(facts.inputs), input_name, path)
    output_name = _choose("output", list(facts.outputs), output_name, path)
    in_shape = facts.inputs[input_name]
    if facts.input_types[input_name] != "FLOAT":
        raise SidecarError(
            f"{path}: input {input_name!r} is {facts.input_types[input_name]}; the runtime feeds float32"
        )
    if len(in_shape) != 4 or in_shape[1] not in (3, None):
        raise SidecarError(f"{path}: input {input_name!r} has shape {in_shape}; expected (N, 3, H, W)")
    for axis, (declared, given) in enumerate(zip(in_shape[2:], (height, width)), start=2):
        if declared is not None and declared != given:
            raise SidecarError(
                f"{path}: input {input_name!r} is {in_shape[2]}x{in_shape[3]} (H x W) but --input-size "
                f"says {height}x{width} (axis {axis})"
            )
    preprocessing = Preprocessing(
        height=height, width=width, channel_order=channel_order, mean=tuple(mean), std=tuple(std)
    )
    fixed_batch = in_shape[0]
    run_batch = fixed_batch or 2
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # A mid-grey crop after normalisation: a deterministic, valid input.
        grey = ((0.5 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).reshape(1, 3, 1, 1)
        batch = np.broadcast_to(grey, (run_batch, 3, height, width)).astype(np.float32)
        (result,) = session.run([output_name], {input_name: batch})
    except Exception as exc:
        raise SidecarError(
            f"{path}: running the model once at {run_batch}x3x{height}x{width} failed: {exc}"
        ) from exc
    result = np.asarray(result)
    if result.ndim != 2 or result.shape[0] != run_batch:
        raise SidecarError(
            f"{path}: output {output_name!r} has shape {result.shape} for a batch of {run_batch}; "
            "expected (N, D) embeddings (pick another --output-name?)"
        )
    if not np.isfinite(result).all():
        raise SidecarError(f"{path}: output {output_name!r} holds non-finite values for a valid input")
    norms = np.linalg.norm(result.astype(np.float64), axis=1)
    normalized = bool(np.all(np.abs(norms - 1.0) < 1e-3))
    return EngineSidecar(
        format="onnx",
        artifact=path.name,
        artifact_sha256=sha256_file(path),
        preprocessing=preprocessing,
        output_dim=int(result.shape[1]),
        precision=facts.precision,
        input_name=input_name,
        output_name=output_name,
        normalized=normalized,
        batch=BatchProfile(min=fixed_batch or 1, opt=fixed_batch or opt_batch, max=fixed_batch),
        source={"created_by": "mpanet-sidecar", "foreign_model": True, **(source or {})},
    )


def write_foreign_sidecar(
    path: str | os.PathLike[str], height: int, width: int, **kwargs: Any
) -> EngineSidecar:
    """:func:`describe_onnx`, write the sidecar beside ``path``, and embed one crop through
    :func:`engines.runtime.load_embedder` (the exact path a node takes) to check it."""
    from engines.runtime import load_embedder

    sidecar = describe_onnx(path, height, width, **kwargs)
    written = save_sidecar(sidecar, path)
    try:
        embedder = load_embedder(path)
        crop = np.full((2 * height, 2 * width, 3), 127, np.uint8)
        embedding = embedder.embed_crops([crop], input_order="BGR")
    except Exception as exc:
        written.unlink(missing_ok=True)
        raise SidecarError(f"{path}: the runtime refused the new sidecar ({exc}); nothing written") from exc
    if embedding.shape != (1, sidecar.embedding_dim) or not np.isfinite(embedding).all():
        written.unlink(missing_ok=True)
        raise SidecarError(f"{path}: the runtime's embedding has shape {embedding.shape}; nothing written")
    return sidecar
