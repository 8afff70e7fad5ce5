"""Every TensorRT call of the project: building a plan from ONNX, and running one.

Written against the TensorRT 10 / 11 tensor API (``num_io_tensors``, ``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); the binding-index API of 8.x is
not used anywhere. Supported: TensorRT 10.x and 11.x (:data:`SUPPORTED_MAJOR_VERSIONS`).

Precision: networks are **strongly typed** (TensorRT 11 only builds those; on 10.x the
``STRONGLY_TYPED`` creation flag is set), so no precision builder flags are used: the precision is the
ONNX graph's (:mod:`engines.precision` writes FP16 and INT8 Q/DQ graphs). After a build the plan is
deserialized and its I/O tensor types, the network's layer types and the engine inspector's per-layer
formats are read back and checked against the precision asked for.

Device memory and streams use cuda-python (``cuda.bindings.runtime``; NVIDIA's maintained bindings,
which TensorRT's own samples use). pycuda is not used: it compiles against a local CUDA toolkit and
driver at install time, which CI and the lent GPU machines do not have.

``tensorrt`` and ``cuda-python`` are imported inside the functions that need them; importing this
module costs nothing on a machine without them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from common.files import atomic_write_bytes, atomic_write_text, sha256_file
from engines.sidecar import BatchProfile, EngineSidecar, SidecarError, load_sidecar, save_sidecar

__all__ = [
    "SUPPORTED_MAJOR_VERSIONS",
    "BuildResult",
    "TensorRTBuildError",
    "TensorRTRunner",
    "TensorRTUnavailable",
    "build_engine",
    "import_cudart",
    "import_tensorrt",
    "inspector_precisions",
    "normalize_type_name",
]

SUPPORTED_MAJOR_VERSIONS = (10, 11)

_LOG = logging.getLogger(__name__)


class TensorRTUnavailable(ImportError):
    """TensorRT or cuda-python is not installed, is an unsupported version, or sees no GPU."""


class TensorRTBuildError(RuntimeError):
    """Parsing, building or verifying a plan failed; the message points at the build log."""


# ------------------------------------------------------------------------------------------ imports


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, checking the major version (10 or 11).

    Raises:
        TensorRTUnavailable: not installed (install with ``pip install -e .[tensorrt]`` from NVIDIA's
            index on a machine with an NVIDIA driver), or an unsupported version.
    """
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer
        raise TensorRTUnavailable(
            f"TensorRT is not importable ({exc}); install it on a GPU machine with "
            "`pip install --extra-index-url https://pypi.nvidia.com tensorrt` (10.x or 11.x)"
        ) from exc
    major = _major(trt.__version__)
    if major not in SUPPORTED_MAJOR_VERSIONS:
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} is not supported; this code targets the tensor API of "
            f"TensorRT {' and '.join(map(str, SUPPORTED_MAJOR_VERSIONS))}.x"
        )
    return trt


def import_cudart() -> ModuleType:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise TensorRTUnavailable(
                "cuda-python is not installed (`pip install cuda-python`); it provides the device buffers "
                "and streams of the TensorRT runtime"
            ) from exc
    return cudart


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return -1


def _cuda_check(result: Any, what: str, cudart: ModuleType) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on an error code."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        _, message = cudart.cudaGetErrorString(err)
        text = message.decode() if isinstance(message, bytes) else str(message)
        raise RuntimeError(f"CUDA error in {what}: {err} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _device_info(cudart: ModuleType, device: int) -> dict[str, Any]:
    props = _cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties", cudart)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


# ---------------------------------------------------------------------------------------- type names


def normalize_type_name(text: str) -> str | None:
    """Map a TensorRT data type / format description to ``fp32``/``fp16``/``bf16``/``int8``/``fp8``/...

    Handles ``trt.DataType`` names (``HALF``, ``FLOAT``, ``INT8``) and the engine inspector's strings
    of TensorRT 10 (``"Row major linear FP16 format"``, ``"Half"``, ``"Float"``,
    ``"Thirty-two wide channel vectorized row major Int8 format."``) and 11 (a separate ``DataType``
    field). Returns ``None`` for text that names no type (``"N/A due to dynamic shapes"``).
    """
    lowered = str(text).lower().replace("datatype.", "")
    for token, name in (
        ("int8", "int8"),
        ("fp8", "fp8"),
        ("bf16", "bf16"),
        ("bfloat16", "bf16"),
        ("fp16", "fp16"),
        ("half", "fp16"),
        ("int32", "int32"),
        ("int64", "int64"),
        ("fp32", "fp32"),
        ("float", "fp32"),
        ("bool", "bool"),
    ):
        if token in lowered:
            return name
    return None


def inspector_precisions(info: str | dict[str, Any]) -> dict[str, int]:
    """Count layer I/O data types in an engine inspector JSON (TensorRT 10 or 11 schema).

    Args:
        info: ``inspector.get_engine_information(LayerInformationFormat.JSON)`` text, or its dict.

    Returns:
        ``{type: number of layer inputs/outputs of that type}``; empty when the inspector reported no
        types (engine built without ``ProfilingVerbosity.DETAILED``).
    """
    data = json.loads(info) if isinstance(info, str) else info
    counts: dict[str, int] = {}
    for layer in data.get("Layers", []):
        if not isinstance(layer, dict):
            continue
        for tensor in [*layer.get("Inputs", []), *layer.get("Outputs", [])]:
            if not isinstance(tensor, dict):
                continue
            text = tensor.get("DataType") or tensor.get("Format/Datatype") or tensor.get("Format") or ""
            kind = normalize_type_name(text)
            if kind is not None:
                counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class BuildResult:
    """A built plan and how it was checked.

    Attributes:
        plan, sidecar: the ``.plan`` file and its sidecar (precision, batch profile, engine_id).
        build_log, timing_cache, layer_info: files written beside the plan.
        io_types: engine I/O tensor types read back from the deserialized plan.
        network_types: layer-output type counts of the parsed (strongly typed) network.
        layer_precisions: :func:`inspector_precisions` of the built engine.
    """

    plan: Path
    sidecar: EngineSidecar
    build_log: Path
    timing_cache: Path | None
    layer_info: Path
    io_types: dict[str, str]
    network_types: dict[str, int]
    layer_precisions: dict[str, int]
    seconds: float


def build_engine(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str] | None = None,
    *,
    precision: str | None = None,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    workspace_mib: int = 4096,
    timing_cache: str | os.PathLike[str] | None = None,
    builder_optimization_level: int | None = None,
    allow_tf32: bool = False,
    device: int = 0,
    verbose_log: bool = False,
) -> BuildResult:
    """ONNX (with sidecar) -> serialized TensorRT plan with a dynamic-batch optimization profile.

    Args:
        onnx_path: an ``.onnx`` artifact from ``mpanet-export`` (FP32, FP16 or INT8 Q/DQ).
        plan_path: default ``<onnx stem>.plan`` beside it. Its sidecar, build log
            (``.build.log``) and inspector dump (``.layers.json``) are written beside the plan.
        precision: the precision expected (``fp32``/``fp16``/``int8``); must equal the ONNX's,
            since a strongly typed network takes its precision from the graph. ``None``: the ONNX's.
        min_batch, opt_batch, max_batch: the optimization profile of the batch axis.
        workspace_mib: builder workspace memory pool limit.
        timing_cache: file to load tactic timings from and save them to (shared across builds on
            the same GPU and TensorRT version; created when absent).
        builder_optimization_level: 0..5 (TensorRT default 3).
        allow_tf32: let FP32 convolutions use TF32 tensor cores (off: FP32 plans stay FP32).
        device: CUDA device index.
        verbose_log: log VERBOSE messages too (the log file always gets INFO and above).

    Raises:
        TensorRTUnavailable: no TensorRT / cuda-python / GPU.
        TensorRTBuildError: parsing or building failed, or the built engine does not hold the
            precision asked for.
    """
    onnx_path = Path(onnx_path)
    sidecar = load_sidecar(onnx_path)
    if sidecar.format != "onnx":
        raise SidecarError(f"{onnx_path}: sidecar says format {sidecar.format!r}, expected an ONNX artifact")
    if precision is not None and precision != sidecar.precision:
        hint = {
            "fp16": "make one with `mpanet-export ... --fp16` (engines.precision.convert_fp16)",
            "int8": "make one with `mpanet-export ... --int8 --calibration ...` (engines.precision.quantize_int8)",
            "fp32": "use the plain export",
        }.get(precision, "")
        raise TensorRTBuildError(
            f"{onnx_path.name} is a {sidecar.precision} graph but {precision} was asked for: TensorRT builds "
            f"strongly typed networks, so the precision comes from the ONNX; {hint}"
        )
    precision = sidecar.precision
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}"
        )
    from engines.precision import verify_onnx_precision

    # An INT8 graph must be the symmetric int8 Q/DQ kind TensorRT takes (not the CPU/onnxruntime one).
    onnx_summary = verify_onnx_precision(onnx_path, precision, int8_target="tensorrt")
    plan_path = Path(plan_path) if plan_path is not None else onnx_path.with_suffix(".plan")
    log_path = plan_path.with_name(plan_path.name + ".build.log")
    layers_path = plan_path.with_name(plan_path.name + ".layers.json")
    cache_path = Path(timing_cache) if timing_cache is not None else None

    trt = import_tensorrt()
    cudart = import_cudart()
    _cuda_check(cudart.cudaSetDevice(device), "cudaSetDevice", cudart)
    gpu = _device_info(cudart, device)
    started = time.perf_counter()
    logger = _file_logger(trt, log_path, verbose_log)
    logger.note(
        f"mpanet-build-engine: TensorRT {trt.__version__} on {gpu['name']} (sm {gpu['compute_capability']})"
    )
    logger.note(f"onnx {onnx_path} ({precision}), profile batch {min_batch}/{opt_batch}/{max_batch}")
    try:
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise TensorRTBuildError(f"TensorRT could not parse {onnx_path}: {errors} (log: {log_path})")
        h, w = sidecar.preprocessing.height, sidecar.preprocessing.width
        _check_network(trt, network, sidecar, h, w)
        network_types = _network_types(trt, network)
        _check_network_precision(trt, network, precision, network_types)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
        # DETAILED keeps per-layer formats/types in the plan, which the precision check reads back.
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if builder_optimization_level is not None:
            config.builder_optimization_level = int(builder_optimization_level)
        if not allow_tf32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        profile = builder.create_optimization_profile()
        profile.set_shape(
            sidecar.input_name, (min_batch, 3, h, w), (opt_batch, 3, h, w), (max_batch, 3, h, w)
        )
        config.add_optimization_profile(profile)
        cache = None
        if cache_path is not None:
            previous = cache_path.read_bytes() if cache_path.is_file() else b""
            cache = config.create_timing_cache(previous)
            if not config.set_timing_cache(cache, ignore_mismatch=False):
                logger.note(f"timing cache {cache_path} does not match this GPU/TensorRT; starting a new one")
                cache = config.create_timing_cache(b"")
                config.set_timing_cache(cache, ignore_mismatch=False)

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise TensorRTBuildError(
                f"TensorRT returned no plan for {onnx_path}; see the build log {log_path}"
            )
        plan_bytes = bytes(memoryview(serialized))
        atomic_write_bytes(plan_path, plan_bytes)
        if cache_path is not None:
            atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

        # Read the engine back: I/O names, types and profile, and the per-layer formats.
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan_bytes)
        if engine is None:
            raise TensorRTBuildError(
                f"the plan just built for {onnx_path} does not deserialize (log: {log_path})"
            )
        io_types = _check_engine_io(trt, engine, sidecar, (min_batch, opt_batch, max_batch))
        context = engine.create_execution_context()
        context.set_input_shape(sidecar.input_name, (opt_batch, 3, h, w))
        inspector = engine.create_engine_inspector()
        _attach_context(inspector, context)
        layer_info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        atomic_write_text(layers_path, layer_info if layer_info.endswith("\n") else layer_info + "\n")
        layer_precisions = inspector_precisions(layer_info)
        _check_engine_precision(precision, layer_precisions, layers_path)
        seconds = time.perf_counter() - started
        logger.note(
            f"built {plan_path} in {seconds:.1f} s; I/O {io_types}; network types {network_types}; "
            f"layer formats {layer_precisions}"
        )
    finally:
        logger.close()

    _copy_compression(sidecar, onnx_path, plan_path)
    plan_sidecar = dataclasses.replace(
        sidecar,
        format="tensorrt",
        artifact=plan_path.name,
        artifact_sha256=sha256_file(plan_path),
        batch=BatchProfile(min=min_batch, opt=opt_batch, max=max_batch),
        engine_id="",
        source={
            **{k: v for k, v in sidecar.source.items() if k not in ("graph_ops", "parity", "conversion")},
            "created_by": "mpanet-build-engine",
            "onnx": {
                "artifact": onnx_path.name,
                "sha256": sidecar.artifact_sha256,
                "engine_id": sidecar.engine_id,
                "summary": onnx_summary,
            },
            "tensorrt_version": trt.__version__,
            "gpu": gpu,
            "strongly_typed": True,
            "tf32": bool(allow_tf32),
            "workspace_mib": int(workspace_mib),
            "builder_optimization_level": builder_optimization_level,
            "io_types": io_types,
            "network_types": network_types,
            "layer_precisions": layer_precisions,
            "build_log": log_path.name,
            "layer_info": layers_path.name,
            "timing_cache": str(cache_path) if cache_path else None,
            "build_seconds": round(seconds, 1),
        },
    )
    save_sidecar(plan_sidecar, plan_path)
    return BuildResult(
        plan=plan_path,
        sidecar=plan_sidecar,
        build_log=log_path,
        timing_cache=cache_path,
        layer_info=layers_path,
        io_types=io_types,
        network_types=network_types,
        layer_precisions=layer_precisions,
        seconds=seconds,
    )


def _file_logger(trt: ModuleType, path: Path, verbose: bool) -> Any:
    """A ``trt.ILogger`` that writes every message to ``path`` and warnings/errors to ``logging``."""

    class BuildLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._lowest = trt.ILogger.Severity.VERBOSE if verbose else trt.ILogger.Severity.INFO

        def log(self, severity: Any, msg: str) -> None:
            # Severity values grow from INTERNAL_ERROR (0) to VERBOSE (4).
            if int(severity) > int(self._lowest):
                return
            name = getattr(severity, "name", str(severity))
            if not self._handle.closed:
                self._handle.write(f"[{time.strftime('%H:%M:%S')}] [{name}] {msg}\n")
                self._handle.flush()
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                _LOG.warning("TensorRT %s: %s", name, msg)

        def note(self, msg: str) -> None:
            self.log(trt.ILogger.Severity.INFO, msg)

        def close(self) -> None:
            if not self._handle.closed:
                self._handle.close()

    return BuildLogger()


def _network_flags(trt: ModuleType) -> int:
    # TensorRT 11: every network is strongly typed and the flag is deprecated (ignored); 10.x: opt in.
    if _major(trt.__version__) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _check_network(trt: ModuleType, network: Any, sidecar: EngineSidecar, h: int, w: int) -> None:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    if [t.name for t in inputs] != [sidecar.input_name]:
        raise TensorRTBuildError(
            f"network inputs {[t.name for t in inputs]}, sidecar says {sidecar.input_name!r}"
        )
    if sidecar.output_name not in [t.name for t in outputs]:
        raise TensorRTBuildError(
            f"network outputs {[t.name for t in outputs]} lack the sidecar's {sidecar.output_name!r}"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[0] != -1 or tuple(shape[1:]) != (3, h, w):
        raise TensorRTBuildError(f"network input shape {shape}, expected (-1, 3, {h}, {w}) (dynamic batch)")
    if inputs[0].dtype != trt.DataType.FLOAT:
        raise TensorRTBuildError(f"network input type {inputs[0].dtype}, expected FLOAT")


def _network_types(trt: ModuleType, network: Any) -> dict[str, int]:
    """Count of layer output types in the parsed network (strongly typed: these are the real types)."""
    counts: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            kind = normalize_type_name(
                getattr(layer.get_output(j).dtype, "name", str(layer.get_output(j).dtype))
            )
            if kind is not None:
                counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _check_network_precision(trt: ModuleType, network: Any, precision: str, types: dict[str, int]) -> None:
    """The parsed network carries the asked precision; in FP16 the MAM normalisations stay FP32."""
    if precision == "fp16":
        if not types.get("fp16"):
            raise TensorRTBuildError(f"FP16 ONNX parsed into a network without FP16 tensors: {types}")
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.NORMALIZATION and layer.get_output(0).dtype == trt.DataType.HALF:
                raise TensorRTBuildError(
                    f"layer {layer.name!r} (instance normalisation) runs in FP16; the FP16 ONNX must keep it in FP32"
                )
    elif precision == "int8":
        if not types.get("int8"):
            raise TensorRTBuildError(f"INT8 Q/DQ ONNX parsed into a network without INT8 tensors: {types}")
    elif precision == "fp32" and (types.get("fp16") or types.get("int8")):
        raise TensorRTBuildError(f"FP32 ONNX parsed into a network with reduced-precision tensors: {types}")


def _check_engine_io(
    trt: ModuleType, engine: Any, sidecar: EngineSidecar, profile: tuple[int, int, int]
) -> dict[str, str]:
    """Read the engine's I/O tensors back: names, modes, float32 types, the batch profile."""
    io: dict[str, str] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        dtype = engine.get_tensor_dtype(name)
        io[name] = getattr(dtype, "name", str(dtype))
        if dtype != trt.DataType.FLOAT:
            raise TensorRTBuildError(
                f"engine tensor {name!r} is {dtype}; the runtime feeds and reads float32"
            )
        if name == sidecar.input_name and mode != trt.TensorIOMode.INPUT:
            raise TensorRTBuildError(f"engine tensor {name!r} should be an input")
    if sidecar.input_name not in io or sidecar.output_name not in io:
        raise TensorRTBuildError(
            f"engine I/O {sorted(io)} lacks {sidecar.input_name!r} or {sidecar.output_name!r}"
        )
    shapes = engine.get_tensor_profile_shape(sidecar.input_name, 0)
    batches = tuple(int(s[0]) for s in shapes)
    if batches != tuple(profile):
        raise TensorRTBuildError(f"engine profile batches {batches}, asked for {profile}")
    return io


def _attach_context(inspector: Any, context: Any) -> None:
    # TensorRT 10.x names the property ``context`` in older releases, ``execution_context`` in newer
    # ones and in 11.x; shapes must be set on it or the inspector reports "N/A due to dynamic shapes".
    for attribute in ("execution_context", "context"):
        try:
            setattr(inspector, attribute, context)
            return
        except AttributeError:
            continue


def _check_engine_precision(precision: str, layer_types: dict[str, int], layers_path: Path) -> None:
    if not layer_types:
        raise TensorRTBuildError(
            f"the engine inspector reported no layer types ({layers_path}); cannot confirm the plan is {precision}"
        )
    wanted = {"fp16": "fp16", "int8": "int8"}.get(precision)
    if wanted is not None and not layer_types.get(wanted):
        raise TensorRTBuildError(
            f"the built engine has no {wanted} layers ({layer_types}; see {layers_path}); it is not the {precision} "
            "plan that was asked for"
        )
    if precision == "fp32" and (layer_types.get("fp16") or layer_types.get("int8")):
        raise TensorRTBuildError(
            f"the FP32 plan runs reduced-precision layers: {layer_types} ({layers_path})"
        )


def _copy_compression(sidecar: EngineSidecar, source: Path, plan: Path) -> None:
    compression = sidecar.compression
    if compression is None or compression.pca_file is None:
        return
    src, dst = source.parent / compression.pca_file, plan.parent / compression.pca_file
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)


# ------------------------------------------------------------------------------------------ running


class TensorRTRunner:
    """Runs a plan on one GPU: pinned host buffers, device buffers and a stream from cuda-python.

    Buffers are allocated once for the profile's largest batch and bound with
    ``set_tensor_address``; each call sets the input shape, copies in, ``execute_async_v3``, copies
    out and synchronises the stream. Not thread-safe (one execution context); use one runner per thread.

    Args:
        plan_path: the ``.plan`` file.
        sidecar: its sidecar (input/output names and sizes are checked against the engine).
        device: CUDA device index.
    """

    def __init__(self, plan_path: str | os.PathLike[str], sidecar: EngineSidecar, device: int = 0) -> None:
        self._trt = trt = import_tensorrt()
        self._cudart = cudart = import_cudart()
        self.plan_path = Path(plan_path)
        self.sidecar = sidecar
        self._allocations: list[tuple[str, int]] = []
        self._stream = None
        _cuda_check(cudart.cudaSetDevice(device), "cudaSetDevice", cudart)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise SidecarError(
                f"{self.plan_path} does not deserialize with TensorRT {trt.__version__} on this GPU (plans are "
                f"tied to the TensorRT version and GPU they were built with: {sidecar.source.get('tensorrt_version')}, "
                f"{sidecar.source.get('gpu')}); rebuild it with mpanet-build-engine"
            )
        h, w = sidecar.preprocessing.height, sidecar.preprocessing.width
        self._input, self._output = sidecar.input_name, sidecar.output_name
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if self._input not in names or self._output not in names:
            raise SidecarError(f"{self.plan_path}: engine I/O {names} does not match the sidecar's names")
        for name in (self._input, self._output):
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise SidecarError(f"{self.plan_path}: tensor {name!r} is not float32")
        shapes = self._engine.get_tensor_profile_shape(self._input, 0)
        self.min_batch, self.max_batch = int(shapes[0][0]), int(shapes[2][0])
        if tuple(shapes[2][1:]) != (3, h, w):
            raise SidecarError(
                f"{self.plan_path}: engine input {tuple(shapes[2])} does not match the sidecar's 3x{h}x{w}"
            )
        out_shape = tuple(self._engine.get_tensor_shape(self._output))
        if len(out_shape) != 2 or out_shape[1] != sidecar.output_dim:
            raise SidecarError(
                f"{self.plan_path}: engine output {out_shape}, sidecar says (N, {sidecar.output_dim})"
            )
        self._context = self._engine.create_execution_context()
        self._stream = _cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)
        in_count, out_count = self.max_batch * 3 * h * w, self.max_batch * sidecar.output_dim
        self._host_in, self._host_in_ptr = self._pinned(in_count)
        self._host_out, self._host_out_ptr = self._pinned(out_count)
        self._dev_in = self._device(in_count * 4)
        self._dev_out = self._device(out_count * 4)
        if not self._context.set_tensor_address(self._input, self._dev_in):
            raise RuntimeError(f"set_tensor_address({self._input!r}) failed")
        if not self._context.set_tensor_address(self._output, self._dev_out):
            raise RuntimeError(f"set_tensor_address({self._output!r}) failed")

    def _pinned(self, count: int) -> tuple[np.ndarray, int]:
        import ctypes

        ptr = _cuda_check(self._cudart.cudaMallocHost(count * 4), "cudaMallocHost", self._cudart)
        self._allocations.append(("host", int(ptr)))
        array = np.ctypeslib.as_array(ctypes.cast(int(ptr), ctypes.POINTER(ctypes.c_float)), (count,))
        return array, int(ptr)

    def _device(self, nbytes: int) -> int:
        ptr = int(_cuda_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc", self._cudart))
        self._allocations.append(("device", ptr))
        return ptr

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) float32 with ``n <= max_batch`` -> (n, output_dim) float32."""
        cudart = self._cudart
        n = int(batch.shape[0])
        if n > self.max_batch:
            raise ValueError(f"batch {n} exceeds the plan's profile maximum {self.max_batch}")
        run_n = max(n, self.min_batch)  # a profile starting above 1 gets zero padding
        flat = self._host_in[: run_n * int(np.prod(batch.shape[1:]))]
        flat[: batch.size] = batch.reshape(-1)
        if run_n > n:
            flat[batch.size :] = 0.0
        if not self._context.set_input_shape(self._input, (run_n, *batch.shape[1:])):
            raise RuntimeError(f"set_input_shape({self._input!r}, {(run_n, *batch.shape[1:])}) was rejected")
        in_bytes = flat.size * 4
        out_count = run_n * self.sidecar.output_dim
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_check(
            cudart.cudaMemcpyAsync(self._dev_in, self._host_in_ptr, in_bytes, kind_h2d, self._stream),
            "cudaMemcpyAsync (input)",
            cudart,
        )
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("execute_async_v3 failed (see TensorRT's log)")
        _cuda_check(
            cudart.cudaMemcpyAsync(self._host_out_ptr, self._dev_out, out_count * 4, kind_d2h, self._stream),
            "cudaMemcpyAsync (output)",
            cudart,
        )
        _cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize", cudart)
        return self._host_out[: n * self.sidecar.output_dim].reshape(n, self.sidecar.output_dim).copy()

    def close(self) -> None:
        """Free device/host buffers and the stream. Idempotent."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        self._context = None
        for kind, ptr in self._allocations:
            free = cudart.cudaFreeHost if kind == "host" else cudart.cudaFree
            free(ptr)
        self._allocations = []
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._engine = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass
