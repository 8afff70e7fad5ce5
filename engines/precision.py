"""Reduced-precision ONNX graphs: FP16 (mixed) and INT8 (explicit Q/DQ), each verified against FP32.

TensorRT 11 builds strongly typed networks only (10.x does so with the STRONGLY_TYPED flag, which
:mod:`engines.tensorrt` sets), so the precision of a plan is decided here, in the ONNX graph:

* **FP16**: onnxruntime's ``float16.convert_float_to_float16`` rewrites weights and activations to
  float16, except the ops on its block list. The mechanism that keeps the modality alleviation
  module's instance norms in FP32 is that block list: ``InstanceNormalization`` is added to it, so
  the converter leaves those nodes (and their scale/bias) in float32 and inserts ``Cast`` nodes
  around them (fp16 -> fp32 before, fp32 -> fp16 after). Why: IN divides by the per-image,
  per-channel standard deviation over a 24x8 map; in FP16 the variance of large post-ReLU
  activations loses precision, a known FP16 error source. Inputs and outputs stay float32
  (``keep_io_types``) so the runtime feeds the same tensors to every precision.
* **INT8**: onnxruntime's static quantizer writes QuantizeLinear/DequantizeLinear pairs (QDQ format)
  with scales measured on calibration crops of both modalities (:mod:`engines.calibration`):
  int8 weights per output channel, int8 activations per tensor, both *symmetric* (zero point 0,
  which TensorRT requires), biases left in float (TensorRT fuses them; it cannot read int32 DQ).
  Only the backbone convolutions are quantized, where nearly all the compute is. Kept in floating
  point on purpose: the MAM gate convolutions (1x1 on pooled vectors, negligible compute; their
  sigmoid gate chooses between X and IN(X), so a quantized gate shifts whole channels), the MAM
  instance norms, the PAM pattern convolution and its pooling MatMul (they form the 7 x C
  embedding parts), and the BN neck.

Each conversion runs the new graph in onnxruntime on CPU next to the FP32 graph and fails loudly
when the L2-normalised embeddings drift below a stated cosine similarity.
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

from common.files import sha256_file
from engines.calibration import CalibrationSet
from engines.runtime.base import l2_normalize
from engines.sidecar import EngineSidecar, SidecarError, load_sidecar, save_sidecar

__all__ = [
    "FP16_COSINE_MIN",
    "FP32_OPS_IN_FP16",
    "INT8_COSINE_MIN",
    "INT8_EXCLUDE_WEIGHTS",
    "INT8_TARGETS",
    "PrecisionError",
    "PrecisionResult",
    "compare_onnx",
    "convert_fp16",
    "onnx_precision_summary",
    "quantize_int8",
    "verify_onnx_precision",
]

# Ops that stay float32 inside the FP16 graph.
FP32_OPS_IN_FP16 = ("InstanceNormalization",)
# Convolutions whose weight initializer name contains one of these stay in float in the INT8 graph
# (names come from the exporter, which keeps module paths: model.backbone.mam3.reduce.weight, ...).
INT8_EXCLUDE_WEIGHTS = (".mam3.", ".mam4.", "pattern.")
# Who runs the INT8 graph: TensorRT (symmetric int8 activations) or onnxruntime on a CPU (uint8).
INT8_TARGETS = ("tensorrt", "cpu")
# Worst per-image cosine vs FP32 each conversion must keep on its check images (onnxruntime, CPU).
# Measured: FP16 0.99999 (test model and models trained on synthetic data); INT8 0.9997 on the
# random-init test model, 0.982-0.990 worst on synthetic-trained ResNet-18s (percentile calibration;
# minmax gave 0.975 on the weaker one). INT8 drift is larger on learned weights, hence the looser
# bound; its accuracy cost is measured with mpanet-eval (docs/engines.md).
FP16_COSINE_MIN = 0.999
INT8_COSINE_MIN = 0.97

_LOG = logging.getLogger(__name__)


class PrecisionError(RuntimeError):
    """A conversion failed its checks (graph types, drift against FP32)."""


@dataclass(frozen=True)
class PrecisionResult:
    """What a conversion produced and how close it stays to FP32.

    Attributes:
        artifact, sidecar: the new ONNX file and its sidecar.
        cosine_min, cosine_mean: per-row cosine similarity of L2-normalised embeddings vs the FP32
            graph, over ``check_images`` images (both run in onnxruntime on CPU).
        summary: :func:`onnx_precision_summary` of the new graph.
    """

    artifact: Path
    sidecar: EngineSidecar
    cosine_min: float
    cosine_mean: float
    check_images: int
    summary: dict[str, Any]
    seconds: float


# ---------------------------------------------------------------------------------------------- FP16


def convert_fp16(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    keep_fp32_ops: Sequence[str] = FP32_OPS_IN_FP16,
    check_images: np.ndarray | None = None,
    cosine_min: float = FP16_COSINE_MIN,
) -> PrecisionResult:
    """FP32 ONNX -> FP16 ONNX with ``keep_fp32_ops`` (the MAM instance norms) kept in float32.

    Args:
        source: an FP32 ``.onnx`` with its sidecar (from :func:`engines.export.export_onnx`).
        output: default ``<source stem>.fp16.onnx`` beside it.
        keep_fp32_ops: op types left in float32 (added to onnxruntime's default block list).
        check_images: (N, 3, H, W) float32 to compare on; default 8 seeded random images.
        cosine_min: required worst cosine vs FP32.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    started = time.perf_counter()
    source, sidecar = _fp32_source(source)
    output = Path(output) if output is not None else source.with_name(f"{source.stem}.fp16.onnx")
    model = onnx.load(str(source))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    # The converter appends its input Cast nodes at the end of the node list; ONNX (and TensorRT's
    # parser) want nodes in topological order. It also leaves the exporter's value_info entries of
    # converted initializers stale (float32 for float16 tensors), which onnx's type inference
    # rejects: value_info is optional, so it is dropped and re-inferred.
    _sort_topologically(converted.graph)
    del converted.graph.value_info[:]
    converted = onnx.shape_inference.infer_shapes(converted, strict_mode=True)
    with _staged(output) as tmp:
        onnx.save(converted, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        summary = verify_onnx_precision(tmp, "fp16", keep_fp32_ops=keep_fp32_ops)
        images = _check_images(sidecar, check_images)
        cos_min, cos_mean = _compare_or_fail(source, tmp, images, cosine_min, "fp16")
        new_sidecar = _derived_sidecar(
            sidecar,
            source,
            tmp,
            output,
            "fp16",
            {
                "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
                "keep_io_types": True,
                "fp32_ops": list(keep_fp32_ops),
                "op_block_list": block,
                "check": {"images": int(images.shape[0]), "cosine_min": cos_min, "cosine_mean": cos_mean},
            },
        )
    save_sidecar(new_sidecar, output)
    return PrecisionResult(
        output, new_sidecar, cos_min, cos_mean, int(images.shape[0]), summary, time.perf_counter() - started
    )


# ---------------------------------------------------------------------------------------------- INT8


def quantize_int8(
    source: str | os.PathLike[str],
    calibration: CalibrationSet,
    output: str | os.PathLike[str] | None = None,
    *,
    method: str = "percentile",
    batch_size: int = 16,
    exclude_weights: Sequence[str] = INT8_EXCLUDE_WEIGHTS,
    check_images: np.ndarray | None = None,
    cosine_min: float = INT8_COSINE_MIN,
    target: str = "tensorrt",
) -> PrecisionResult:
    """FP32 ONNX -> INT8 Q/DQ ONNX calibrated on ``calibration`` (onnxruntime's static quantizer).

    Args:
        source: an FP32 ``.onnx`` with its sidecar.
        calibration: preprocessed crops of both modalities (:func:`engines.calibration.build_calibration_set`).
        output: default ``<source stem>.int8.onnx`` (target ``tensorrt``) or ``<source stem>.int8-cpu.onnx``
            (target ``cpu``) beside it.
        target: ``tensorrt``: int8 activations, symmetric (zero point 0), as TensorRT's explicit
            quantization requires. ``cpu``: uint8 activations with a zero point (asymmetric) and
            int8 weights, the combination onnxruntime's x86 kernels run fastest (u8 x s8 dot
            products, AVX-512 VNNI / AVX2); it also spends all 256 levels on post-ReLU (non-negative)
            activations. A ``cpu`` graph is refused by ``mpanet-build-engine``.
        method: activation range estimator: ``percentile`` (default: the 99.999th percentile of
            |x|, clips rare outliers), ``minmax`` (max |x| seen) or ``entropy`` (KL divergence,
            TensorRT's legacy calibrator). On a synthetic-trained model percentile kept the
            embeddings closest to FP32 (mean cosine 0.9925 vs 0.989 for minmax; entropy gave the
            same ranges as minmax).
        batch_size: calibration batch size.
        exclude_weights: convolutions whose weight name contains one of these stay in float.
        check_images: (N, 3, H, W) float32 to compare on; default: the calibration images.
        cosine_min: required worst cosine vs FP32 on ``check_images``.
    """
    methods = ("minmax", "percentile", "entropy")
    if method not in methods:
        raise PrecisionError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    if target not in INT8_TARGETS:
        raise PrecisionError(f"INT8 target must be one of {INT8_TARGETS}, got {target!r}")
    started = time.perf_counter()
    source, sidecar = _fp32_source(source)
    h, w = sidecar.preprocessing.height, sidecar.preprocessing.width
    if calibration.images.shape[1:] != (3, h, w):
        raise PrecisionError(
            f"calibration images are {calibration.images.shape[1:]}, the engine takes (3, {h}, {w})"
        )
    suffix = ".int8.onnx" if target == "tensorrt" else ".int8-cpu.onnx"
    output = Path(output) if output is not None else source.with_name(f"{source.stem}{suffix}")
    excluded = _excluded_convs(onnx.load(str(source)), exclude_weights)
    with tempfile.TemporaryDirectory(prefix="mpanet-int8-") as work, _staged(output) as tmp:
        reader = _calibration_reader(calibration, sidecar.input_name, batch_size)
        _run_static_quantizer(source, tmp, Path(work), reader, excluded, method=method, target=target)
        onnx.checker.check_model(str(tmp), full_check=True)
        summary = verify_onnx_precision(tmp, "int8", int8_target=target)
        images = calibration.images if check_images is None else check_images
        cos_min, cos_mean = _compare_or_fail(source, tmp, images, cosine_min, "int8")
        conversion = _int8_conversion_record(calibration, method, batch_size, target, excluded)
        conversion["check"] = {"images": int(images.shape[0]), "cosine_min": cos_min, "cosine_mean": cos_mean}
        new_sidecar = _derived_sidecar(sidecar, source, tmp, output, "int8", conversion)
    save_sidecar(new_sidecar, output)
    return PrecisionResult(
        output, new_sidecar, cos_min, cos_mean, int(images.shape[0]), summary, time.perf_counter() - started
    )


def _calibration_reader(calibration: CalibrationSet, input_name: str, batch_size: int) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over ``calibration`` in batches of ``batch_size``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = calibration.batches(batch_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            self._batches = calibration.batches(batch_size)

    return _Reader()


def _run_static_quantizer(
    source: Path, output: Path, work: Path, reader: Any, excluded: list[str], *, method: str, target: str
) -> None:
    """onnxruntime's ``quantize_static`` (QDQ, per-channel Conv weights) from ``source`` to ``output``.

    ``target`` ``tensorrt``: symmetric int8 activations (zero point 0); ``cpu``: asymmetric uint8.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    tensorrt = target == "tensorrt"
    extra: dict[str, Any] = {
        "ActivationSymmetric": tensorrt,  # TensorRT: int8 Q/DQ with zero point 0
        "WeightSymmetric": True,
        "QuantizeBias": False,  # float biases; TensorRT fuses them into the int8 convolution
    }
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    prepared = work / "prepared.onnx"
    # Shape inference so every activation has a known type/shape for the quantizer; the graph
    # optimisation step is skipped to keep the node names the exclusions refer to.
    quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(output),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=methods[method],
        extra_options=extra,
    )


def _int8_conversion_record(
    calibration: CalibrationSet, method: str, batch_size: int, target: str, excluded: list[str]
) -> dict[str, Any]:
    """The sidecar's ``conversion`` entry of an INT8 graph (the parity ``check`` is added by the caller)."""
    tensorrt = target == "tensorrt"
    return {
        "quantizer": "onnxruntime.quantization.quantize_static (QDQ)",
        "calibration": {**calibration.describe(), "method": method, "batch_size": batch_size},
        "target": target,
        "activations": "int8 per-tensor symmetric" if tensorrt else "uint8 per-tensor asymmetric",
        "weights": "int8 per-output-channel symmetric",
        "quantized_ops": ["Conv"],
        "float_nodes": excluded,
    }


# ------------------------------------------------------------------------------------ graph checks


def onnx_precision_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Types in an ONNX graph: what precision it really holds.

    Returns:
        ``initializers``: count per element type name of the float/int8 initializers;
        ``quantize_nodes`` / ``dequantize_nodes``: Q/DQ counts; ``quantized_activation_types``:
        element types of QuantizeLinear outputs (from their zero points);
        ``quantized_activations_symmetric``: every QuantizeLinear zero point is 0;
        ``instance_norm_input_types``: element type of every InstanceNormalization data input;
        ``io_types``: element types of graph inputs and outputs.
    """
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _value_types(inferred)
    initializers: dict[str, int] = {}
    for init in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(init.data_type)
        initializers[name] = initializers.get(name, 0) + 1
    init_by_name = {i.name: i for i in model.graph.initializer}
    quantize = [
        n
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in init_by_name
    ]
    quant_types = sorted(
        {onnx.TensorProto.DataType.Name(init_by_name[n.input[2]].data_type) for n in quantize}
    )
    symmetric = all(not np.any(onnx.numpy_helper.to_array(init_by_name[n.input[2]])) for n in quantize)
    norm_inputs = [
        onnx.TensorProto.DataType.Name(types.get(n.input[0], 0))
        for n in model.graph.node
        if n.op_type == "InstanceNormalization"
    ]
    return {
        "initializers": dict(sorted(initializers.items())),
        "quantize_nodes": sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear"),
        "dequantize_nodes": sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear"),
        "quantized_activation_types": quant_types,
        "quantized_activations_symmetric": symmetric,
        "instance_norm_input_types": norm_inputs,
        "io_types": {
            v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
            for v in [*model.graph.input, *model.graph.output]
            if v.name not in init_by_name
        },
    }


def verify_onnx_precision(
    path: str | os.PathLike[str],
    precision: str,
    keep_fp32_ops: Sequence[str] = FP32_OPS_IN_FP16,
    int8_target: str | None = None,
) -> dict[str, Any]:
    """Assert that an ONNX graph holds ``precision`` (``fp32`` | ``fp16`` | ``int8``); returns the summary.

    * fp32: no float16 initializers and no Q/DQ nodes.
    * fp16: float16 weights, every InstanceNormalization input float32 (when ``InstanceNormalization``
      is in ``keep_fp32_ops``), float32 graph I/O.
    * int8: QuantizeLinear nodes, float32 I/O; with ``int8_target="tensorrt"`` every one produces
      INT8 with zero point 0 (what TensorRT's explicit quantization takes), with ``"cpu"`` UINT8.

    Raises:
        PrecisionError: the graph does not hold what was asked.
    """
    summary = onnx_precision_summary(path)
    inits = summary["initializers"]
    io_bad = {k: v for k, v in summary["io_types"].items() if v != "FLOAT"}
    name = Path(path).name
    if io_bad:
        raise PrecisionError(f"{name}: graph inputs/outputs must stay float32, got {io_bad}")
    if precision == "fp32":
        if inits.get("FLOAT16") or summary["quantize_nodes"]:
            raise PrecisionError(f"{name}: expected an FP32 graph, found {summary}")
    elif precision == "fp16":
        if not inits.get("FLOAT16"):
            raise PrecisionError(f"{name}: expected float16 weights in an FP16 graph, found {inits}")
        if "InstanceNormalization" in keep_fp32_ops and any(
            t != "FLOAT" for t in summary["instance_norm_input_types"]
        ):
            raise PrecisionError(
                f"{name}: InstanceNormalization inputs must be float32, got {summary['instance_norm_input_types']}"
            )
    elif precision == "int8":
        types = summary["quantized_activation_types"]
        if not summary["quantize_nodes"] or not set(types) <= {"INT8", "UINT8"}:
            raise PrecisionError(
                f"{name}: expected int8 QuantizeLinear nodes, found {summary['quantize_nodes']} with types {types}"
            )
        if int8_target == "tensorrt" and (
            types != ["INT8"] or not summary["quantized_activations_symmetric"]
        ):
            raise PrecisionError(
                f"{name}: TensorRT needs symmetric int8 Q/DQ (zero point 0), this graph quantizes activations "
                f"to {types} (symmetric: {summary['quantized_activations_symmetric']}); it is an onnxruntime CPU "
                "graph: make a TensorRT one with `mpanet-export ... --int8`"
            )
        if int8_target == "cpu" and types != ["UINT8"]:
            raise PrecisionError(f"{name}: expected uint8 activations for the CPU INT8 graph, got {types}")
    else:
        raise PrecisionError(f"unknown precision {precision!r}; expected fp32, fp16 or int8")
    return summary


def compare_onnx(
    reference: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    images: np.ndarray,
    batch_size: int = 16,
) -> np.ndarray:
    """Per-row cosine similarity of L2-normalised embeddings of two ONNX graphs on ``images`` (CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [
        ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        for p in (reference, candidate)
    ]
    cosines = []
    for start in range(0, images.shape[0], batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        a, b = (
            l2_normalize(s.run(None, {s.get_inputs()[0].name: batch})[0].astype(np.float32)) for s in sessions
        )
        cosines.append(np.sum(a * b, axis=1))
    return np.concatenate(cosines)


# ------------------------------------------------------------------------------------------ helpers


def _fp32_source(source: str | os.PathLike[str]) -> tuple[Path, EngineSidecar]:
    source = Path(source)
    sidecar = load_sidecar(source)
    if sidecar.format != "onnx" or sidecar.precision != "fp32":
        raise SidecarError(
            f"{source}: conversions start from an FP32 ONNX export, but its sidecar says "
            f"format={sidecar.format!r} precision={sidecar.precision!r}"
        )
    return source, sidecar


@contextlib.contextmanager
def _staged(output: Path):
    """A temporary path beside ``output``, moved onto it when the block succeeds."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp.onnx", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _check_images(sidecar: EngineSidecar, images: np.ndarray | None, count: int = 8) -> np.ndarray:
    if images is not None:
        return np.ascontiguousarray(images, dtype=np.float32)
    h, w = sidecar.preprocessing.height, sidecar.preprocessing.width
    return np.random.default_rng(0).standard_normal((count, 3, h, w), dtype=np.float32)


def _compare_or_fail(
    reference: Path, candidate: Path, images: np.ndarray, cosine_min: float, what: str
) -> tuple[float, float]:
    cosines = compare_onnx(reference, candidate, images)
    worst, mean = float(np.min(cosines)), float(np.mean(cosines))
    _LOG.info("%s vs fp32 on %d images: cosine min %.6f mean %.6f", what, len(cosines), worst, mean)
    if not np.isfinite(worst) or worst < cosine_min:
        raise PrecisionError(
            f"{what} graph drifts from FP32: worst cosine {worst:.6f} < {cosine_min} (mean {mean:.6f}) "
            f"over {len(cosines)} images"
        )
    return worst, mean


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable)."""
    available = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        waiting = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            missing = sorted({n for node in waiting for n in node.input if n not in available})
            raise PrecisionError(f"graph has a cycle or undefined inputs: {missing[:5]}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def _excluded_convs(model: onnx.ModelProto, patterns: Sequence[str]) -> list[str]:
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and any(p in node.input[1] for p in patterns):
            if not node.name:
                raise PrecisionError("the ONNX graph has unnamed Conv nodes; cannot exclude them from INT8")
            names.append(node.name)
    return names


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {}
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def _derived_sidecar(
    sidecar: EngineSidecar,
    source: Path,
    staged: Path,
    output: Path,
    precision: str,
    conversion: dict[str, Any],
) -> EngineSidecar:
    _carry_compression(sidecar, source, output)
    return dataclasses.replace(
        sidecar,
        artifact=output.name,
        artifact_sha256=sha256_file(staged),
        precision=precision,
        engine_id="",
        source={
            **{k: v for k, v in sidecar.source.items() if k not in ("parity", "graph_ops")},
            "created_by": f"engines.precision ({precision})",
            "derived_from": {
                "artifact": source.name,
                "sha256": sidecar.artifact_sha256,
                "engine_id": sidecar.engine_id,
                "parity": sidecar.source.get("parity"),
            },
            "conversion": conversion,
        },
    )


def _carry_compression(sidecar: EngineSidecar, source: Path, output: Path) -> None:
    """Copy a PCA projection file next to the new artifact when it lands in another folder."""
    compression = sidecar.compression
    if compression is None or compression.pca_file is None:
        return
    src = source.parent / compression.pca_file
    dst = output.parent / compression.pca_file
    if src.resolve() != dst.resolve():
        from common.files import atomic_write_bytes

        atomic_write_bytes(dst, src.read_bytes())
