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
driver at install time, which CI and the lent GPU machines do not have. Before anything touches a
GPU, :func:`open_device` checks the driver (``cudaDriverGetVersion``) against the CUDA major that
cuda-python and the TensorRT wheel were built for, and turns "no driver / no device / driver too old"
into :class:`TensorRTUnavailable` (what a caller can skip on), not a CUDA ``RuntimeError``.

``tensorrt`` and ``cuda-python`` are imported inside the functions that need them; importing this
module costs nothing on a machine without them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from common.files import atomic_write_bytes, atomic_write_text, sha256_file
from engines.sidecar import BatchProfile, EngineSidecar, SidecarError, load_sidecar, save_sidecar

__all__ = [
    "MIN_DRIVER_FOR_CUDA",
    "SUPPORTED_MAJOR_VERSIONS",
    "BuildResult",
    "TensorRTBuildError",
    "TensorRTRunner",
    "TensorRTRuntimeError",
    "TensorRTUnavailable",
    "build_engine",
    "cuda_environment",
    "import_cudart",
    "import_tensorrt",
    "inspector_precisions",
    "native_handle",
    "normalize_type_name",
    "open_device",
]

SUPPORTED_MAJOR_VERSIONS = (10, 11)

# Oldest Linux driver branch whose ``cudaDriverGetVersion`` reaches each CUDA major (NVIDIA's CUDA
# release notes, table "CUDA Toolkit and Corresponding Driver Versions"; minor-version compatibility
# lets any driver of the major's first release run the later minors).
MIN_DRIVER_FOR_CUDA = {12: "525.60.13", 13: "580.65.06"}

_LOG = logging.getLogger(__name__)


class TensorRTUnavailable(ImportError):
    """TensorRT or cuda-python is not installed, is an unsupported version, or sees no usable GPU."""


class TensorRTBuildError(RuntimeError):
    """Parsing, building or verifying a plan failed; the message points at the build log."""


class TensorRTRuntimeError(RuntimeError):
    """A CUDA or TensorRT call failed on a machine that has a usable GPU (out of memory, a rejected shape)."""


# ------------------------------------------------------------------------------- imports and devices


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, checking the major version (10 or 11).

    Raises:
        TensorRTUnavailable: not installed (install with ``pip install -e .[tensorrt-cu12]`` or
            ``.[tensorrt-cu13]`` from NVIDIA's index on a machine with an NVIDIA driver; see
            docs/engines.md for which), or an unsupported version.
    """
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer
        raise TensorRTUnavailable(
            f"TensorRT is not importable ({exc}); install it on a GPU machine with "
            "`pip install -e .[tensorrt-cu12]` (driver >= 525) or `.[tensorrt-cu13]` (driver >= 580) "
            "and `--extra-index-url https://pypi.nvidia.com` (TensorRT 10.x or 11.x)"
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
                "cuda-python is not installed (`pip install -e .[tensorrt-cu12]` or `.[tensorrt-cu13]`); "
                "it provides the device buffers and streams of the TensorRT runtime"
            ) from exc
    return cudart


def cuda_python_version() -> str | None:
    """cuda-python's version (``cuda.bindings.__version__``, else the installed distribution's)."""
    bindings = sys.modules.get("cuda.bindings")
    version = getattr(bindings, "__version__", None)
    if version:
        return str(version)
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def tensorrt_cuda_major() -> int | None:
    """The CUDA major the installed TensorRT wheel was built for (``tensorrt-cu12`` / ``-cu13``), if known."""
    for major in (13, 12, 11):
        for dist in (f"tensorrt-cu{major}", f"tensorrt-cu{major}-libs", f"tensorrt_cu{major}_libs"):
            try:
                importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
            return major
    return None


def _major(version: str | None) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return -1


def _cuda_text(version: int) -> str:
    """``12040`` -> ``"12.4"`` (``cudaDriverGetVersion`` / ``cudaRuntimeGetVersion`` encoding)."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def _cuda_check(result: Any, what: str, cudart: ModuleType) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising :class:`TensorRTRuntimeError` on an error code."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        raise TensorRTRuntimeError(f"CUDA error in {what}: {err} ({_cuda_error_text(cudart, err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _cuda_error_text(cudart: ModuleType, err: Any) -> str:
    try:
        _, message = cudart.cudaGetErrorString(err)
    except Exception:  # the error string needs the runtime too; never hide the code behind it
        return "no description"
    return message.decode() if isinstance(message, bytes) else str(message)


def _driver_version(cudart: ModuleType) -> int:
    try:
        err, version = cudart.cudaDriverGetVersion()
    except Exception as exc:  # cuda-bindings raises when libcuda.so cannot be loaded at all
        raise TensorRTUnavailable(f"no NVIDIA driver: cudaDriverGetVersion failed ({exc})") from exc
    if err != cudart.cudaError_t.cudaSuccess:
        raise TensorRTUnavailable(f"no NVIDIA driver: cudaDriverGetVersion returned {err}")
    return int(version)


def open_device(cudart: ModuleType, device: int = 0, *, tensorrt_cuda: int | None = None) -> dict[str, Any]:
    """Check the driver and make ``device`` current in the calling thread.

    Checks, in order: a driver is loaded (``cudaDriverGetVersion`` != 0); it reaches the CUDA major
    cuda-python was built for (cuda-bindings 13 needs a CUDA 13 driver, R580+; 12 needs R525+) and
    the one of the TensorRT wheel (``tensorrt_cuda``, default :func:`tensorrt_cuda_major`); then
    ``cudaSetDevice``.

    Returns:
        ``{"name", "compute_capability", "driver_cuda", "cuda_python"}`` of the device.

    Raises:
        TensorRTUnavailable: no driver, a driver too old for the installed wheels, no GPU or no GPU
            ``device`` (the message says which and what to install).
        TensorRTRuntimeError: any other CUDA error.
    """
    driver = _driver_version(cudart)
    if driver == 0:
        raise TensorRTUnavailable(
            "no NVIDIA driver is loaded on this machine (cudaDriverGetVersion returned 0)"
        )
    bindings = cuda_python_version()
    needs = {"cuda-python " + str(bindings): _major(bindings)}
    trt_cuda = tensorrt_cuda_major() if tensorrt_cuda is None else tensorrt_cuda
    if trt_cuda is not None:
        needs[f"TensorRT (tensorrt-cu{trt_cuda})"] = trt_cuda
    for what, major in needs.items():
        if major > 0 and driver < 1000 * major:
            other = "[tensorrt-cu12]" if major >= 13 else "a newer driver"
            raise TensorRTUnavailable(
                f"{what} is built for CUDA {major} and needs driver >= {MIN_DRIVER_FOR_CUDA.get(major, '?')}; this "
                f"driver supports CUDA {_cuda_text(driver)}: install {other} (docs/engines.md, supported combinations)"
            )
    err = cudart.cudaSetDevice(int(device))
    err = err[0] if isinstance(err, tuple) else err
    codes = cudart.cudaError_t
    if err != codes.cudaSuccess:
        no_gpu = {codes.cudaErrorNoDevice, codes.cudaErrorInsufficientDriver, codes.cudaErrorInvalidDevice}
        text = f"cudaSetDevice({device}) failed: {err} ({_cuda_error_text(cudart, err)})"
        if err in no_gpu:
            raise TensorRTUnavailable(f"no usable GPU: {text}; driver CUDA {_cuda_text(driver)}")
        raise TensorRTRuntimeError(text)
    props = _cuda_check(cudart.cudaGetDeviceProperties(int(device)), "cudaGetDeviceProperties", cudart)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {
        "name": name.rstrip("\x00"),
        "compute_capability": f"{props.major}.{props.minor}",
        "driver_cuda": _cuda_text(driver),
        "cuda_python": bindings,
    }


def cuda_environment(device: int = 0) -> dict[str, Any]:
    """Versions a TensorRT build depends on, checked: TensorRT, its CUDA major, cuda-python, driver, GPU.

    Raises:
        TensorRTUnavailable: anything missing (the message says what), so callers can skip.
    """
    trt = import_tensorrt()
    cudart = import_cudart()
    gpu = open_device(cudart, device)
    runtime = _cuda_check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion", cudart)
    return {
        "tensorrt": trt.__version__,
        "tensorrt_cuda_major": tensorrt_cuda_major(),
        "cuda_runtime": _cuda_text(int(runtime)),
        **gpu,
    }


def native_handle(obj: Any) -> int:
    """The address behind a cuda-python object (a ``cudaStream_t``) as the ``int`` TensorRT takes.

    cuda-bindings >= 12.9 has ``cuda.bindings.utils.get_cuda_native_handle``; ``int(obj)``, the
    older way, is deprecated there. Plain ints (device pointers from ``cudaMalloc``) pass through.
    """
    if isinstance(obj, int):
        return obj
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-python < 12.9: int() is the documented conversion
        return int(obj)
    return int(get_cuda_native_handle(obj))


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
        build_log, timing_cache, layer_info: files written beside the plan (``timing_cache`` None
            when none was asked for or TensorRT returned none to save).
        io_types: engine I/O tensor types read back from the deserialized plan.
        network_types: layer-output type counts of the parsed (strongly typed) network.
        layer_precisions: :func:`inspector_precisions` of the built engine.
        log_errors: ERROR / INTERNAL_ERROR messages TensorRT logged during a build that succeeded.
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
    log_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class _BuildRequest:
    """What one build was asked for, validated before TensorRT is touched."""

    onnx_path: Path
    plan_path: Path
    log_path: Path
    layers_path: Path
    cache_path: Path | None
    sidecar: EngineSidecar
    precision: str
    onnx_summary: dict[str, Any]
    instance_norm_nodes: tuple[str, ...]
    profile: tuple[int, int, int]

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.sidecar.preprocessing.height, self.sidecar.preprocessing.width


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

    The steps, each its own function: validate the request (:func:`_build_request`), parse into a
    strongly typed network and check its types (:func:`_parse_network`), configure the builder
    (:func:`_configure`), build and write the plan and timing cache (:func:`_build_plan`), and read
    the plan back (:func:`_read_back`).

    Args:
        onnx_path: an ``.onnx`` artifact from ``mpanet-export`` (FP32, FP16 or INT8 Q/DQ).
        plan_path: default ``<onnx stem>.plan`` beside it. Its sidecar, build log
            (``.build.log``) and inspector dump (``.layers.json``) are written beside the plan.
        precision: the precision expected (``fp32``/``fp16``/``int8``); must equal the ONNX's,
            since a strongly typed network takes its precision from the graph. ``None``: the ONNX's.
        min_batch, opt_batch, max_batch: the optimization profile of the batch axis.
        workspace_mib: builder workspace memory pool limit.
        timing_cache: file to load tactic timings from and save them to (shared across builds on
            the same GPU and TensorRT version; created when absent, replaced when corrupt or from
            another GPU/TensorRT).
        builder_optimization_level: 0..5 (TensorRT default 3).
        allow_tf32: let FP32 convolutions use TF32 tensor cores (off: FP32 plans stay FP32).
        device: CUDA device index.
        verbose_log: log VERBOSE messages too (the log file always gets INFO and above).

    Raises:
        TensorRTUnavailable: no TensorRT / cuda-python / driver / GPU.
        TensorRTBuildError: parsing or building failed, or the built engine does not hold the
            precision asked for.
    """
    request = _build_request(onnx_path, plan_path, precision, (min_batch, opt_batch, max_batch), timing_cache)
    trt = import_tensorrt()
    gpu = open_device(import_cudart(), device)
    started = time.perf_counter()
    logger = _file_logger(trt, request.log_path, verbose_log)
    logger.note(
        f"mpanet-build-engine: TensorRT {trt.__version__} on {gpu['name']} (sm {gpu['compute_capability']}, driver "
        f"CUDA {gpu['driver_cuda']}, cuda-python {gpu['cuda_python']}); onnx {request.onnx_path} "
        f"({request.precision}), profile batch {'/'.join(map(str, request.profile))}"
    )
    try:
        builder = trt.Builder(logger)
        # The parser owns the weights the network points at: it must outlive the build.
        network, parser, network_types = _parse_network(trt, builder, logger, request)
        config = _configure(
            trt, builder, logger, request, workspace_mib, builder_optimization_level, allow_tf32
        )
        plan_bytes, cache_written = _build_plan(builder, network, config, logger, request)
        del parser
        io_types, layer_precisions = _read_back(trt, logger, plan_bytes, request)
        seconds = time.perf_counter() - started
        logger.note(
            f"built {request.plan_path} in {seconds:.1f} s; I/O {io_types}; network types {network_types}; "
            f"layer formats {layer_precisions}"
        )
    finally:
        logger.close()
    if logger.errors:
        _LOG.warning(
            "TensorRT logged %d error(s) in a build that succeeded: %s", len(logger.errors), request.log_path
        )
    _copy_compression(request.sidecar, request.onnx_path, request.plan_path)
    build = {
        "tf32": bool(allow_tf32),
        "workspace_mib": int(workspace_mib),
        "builder_optimization_level": builder_optimization_level,
        "io_types": io_types,
        "network_types": network_types,
        "layer_precisions": layer_precisions,
        "log_errors": len(logger.errors),
        "timing_cache": str(request.cache_path) if cache_written else None,
        "build_seconds": round(seconds, 1),
    }
    plan_sidecar = _plan_sidecar(request, trt, gpu, build)
    save_sidecar(plan_sidecar, request.plan_path)
    return BuildResult(
        plan=request.plan_path,
        sidecar=plan_sidecar,
        build_log=request.log_path,
        timing_cache=request.cache_path if cache_written else None,
        layer_info=request.layers_path,
        io_types=io_types,
        network_types=network_types,
        layer_precisions=layer_precisions,
        seconds=seconds,
        log_errors=tuple(logger.errors),
    )


def _build_request(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str] | None,
    precision: str | None,
    profile: tuple[int, int, int],
    timing_cache: str | os.PathLike[str] | None,
) -> _BuildRequest:
    """Check the ONNX, its sidecar, the precision and the profile; name the files the build writes."""
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
    min_batch, opt_batch, max_batch = profile
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}"
        )
    import onnx

    from engines.precision import verify_onnx_precision

    # An INT8 graph must be the symmetric int8 Q/DQ kind TensorRT takes (not the CPU/onnxruntime one).
    summary = verify_onnx_precision(onnx_path, sidecar.precision, int8_target="tensorrt")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    norms = tuple(n.name for n in graph.node if n.op_type == "InstanceNormalization")
    plan_path = Path(plan_path) if plan_path is not None else onnx_path.with_suffix(".plan")
    return _BuildRequest(
        onnx_path=onnx_path,
        plan_path=plan_path,
        log_path=plan_path.with_name(plan_path.name + ".build.log"),
        layers_path=plan_path.with_name(plan_path.name + ".layers.json"),
        cache_path=Path(timing_cache) if timing_cache is not None else None,
        sidecar=sidecar,
        precision=sidecar.precision,
        onnx_summary=summary,
        instance_norm_nodes=norms,
        profile=(int(min_batch), int(opt_batch), int(max_batch)),
    )


def _parse_network(
    trt: ModuleType, builder: Any, logger: Any, request: _BuildRequest
) -> tuple[Any, Any, dict[str, int]]:
    """Parse the ONNX into a strongly typed network and check its I/O and types.

    ``NATIVE_INSTANCENORM`` is set (the default in 10.x, but not in every release): without it the
    parser may import InstanceNormalization as the ``InstanceNormalization_TRT`` plugin, which the
    FP16 check of the normalisation types could not see.

    Returns:
        ``(network, parser, network_types)``; the caller keeps ``parser`` alive until the build ends.
    """
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    flags = getattr(trt, "OnnxParserFlag", None)
    if flags is not None and hasattr(flags, "NATIVE_INSTANCENORM"):
        parser.set_flag(flags.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(request.onnx_path)):
        errors = [_parser_error_text(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTBuildError(
            f"TensorRT could not parse {request.onnx_path}: {'; '.join(errors) or 'no error reported'} "
            f"(log: {request.log_path})"
        )
    h, w = request.input_shape
    _check_network(trt, network, request.sidecar, h, w)
    network_types = _network_types(trt, network)
    if request.precision == "fp16":
        _check_instance_norms(trt, network, request)
    _check_network_precision(trt, network, request.precision, network_types)
    return network, parser, network_types


def _parser_error_text(error: Any) -> str:
    """One ``IParserError`` as text: node index, name and operator where the binding has them."""
    parts = []
    for what in ("node", "node_name", "node_operator"):
        getter = getattr(error, what, None)
        if callable(getter):
            try:
                parts.append(f"{what}={getter()}")
            except Exception:  # older bindings: not every accessor works for every error
                continue
    desc = error.desc() if callable(getattr(error, "desc", None)) else str(error)
    return f"{desc} ({', '.join(parts)})" if parts else str(desc)


def _configure(
    trt: ModuleType,
    builder: Any,
    logger: Any,
    request: _BuildRequest,
    workspace_mib: int,
    optimization_level: int | None,
    allow_tf32: bool,
) -> Any:
    """Builder config: workspace, DETAILED profiling, TF32, the batch profile, the timing cache."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    # DETAILED keeps per-layer formats/types in the plan, which the precision check reads back.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if optimization_level is not None:
        config.builder_optimization_level = int(optimization_level)
    if not allow_tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    h, w = request.input_shape
    lo, opt, hi = request.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(request.sidecar.input_name, (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
    if config.add_optimization_profile(profile) < 0:
        raise TensorRTBuildError(
            f"TensorRT rejected the optimization profile {request.sidecar.input_name} batch {lo}/{opt}/{hi} "
            f"x 3x{h}x{w} (log: {request.log_path})"
        )
    if request.cache_path is not None:
        _attach_timing_cache(config, request.cache_path, logger)
    return config


def _attach_timing_cache(config: Any, path: Path, logger: Any) -> None:
    """Load ``path`` into the config; a corrupt or mismatched cache is replaced by an empty one."""
    previous = path.read_bytes() if path.is_file() else b""
    if previous:
        cache = _create_timing_cache(config, previous)
        if cache is None:
            logger.warn(
                f"timing cache {path} is unreadable (corrupt or from another TensorRT); starting a new one"
            )
        elif not config.set_timing_cache(cache, ignore_mismatch=False):
            logger.warn(f"timing cache {path} does not match this GPU/TensorRT; starting a new one")
        else:
            return
    cache = _create_timing_cache(config, b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise TensorRTBuildError(
            f"TensorRT could not create an empty timing cache for {path}; build without --timing-cache"
        )


def _create_timing_cache(config: Any, blob: bytes) -> Any:
    try:
        return config.create_timing_cache(blob)
    except Exception as exc:  # some releases raise on a malformed blob instead of returning None
        _LOG.warning("create_timing_cache failed: %s", exc)
        return None


def _build_plan(
    builder: Any, network: Any, config: Any, logger: Any, request: _BuildRequest
) -> tuple[bytes, bool]:
    """Build, write the plan (atomically) and the updated timing cache.

    Returns:
        ``(plan bytes, whether the timing cache file was written)``.
    """
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = "; ".join(logger.errors[-3:])
        raise TensorRTBuildError(
            f"TensorRT returned no plan for {request.onnx_path}"
            f"{': ' + errors if errors else ''}; see the build log {request.log_path}"
        )
    plan_bytes = bytes(memoryview(serialized))
    atomic_write_bytes(request.plan_path, plan_bytes)
    if request.cache_path is None:
        return plan_bytes, False
    cache = config.get_timing_cache()
    if cache is None:
        logger.warn(f"TensorRT returned no timing cache to save to {request.cache_path}")
        return plan_bytes, False
    atomic_write_bytes(request.cache_path, bytes(memoryview(cache.serialize())))
    return plan_bytes, True


def _read_back(
    trt: ModuleType, logger: Any, plan_bytes: bytes, request: _BuildRequest
) -> tuple[dict[str, str], dict[str, int]]:
    """Deserialize the plan: check its I/O and profile, dump the inspector JSON, check layer precisions."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise TensorRTBuildError(
            f"the plan just built for {request.onnx_path} does not deserialize (log: {request.log_path})"
        )
    io_types = _check_engine_io(trt, engine, request.sidecar, request.profile)
    context = engine.create_execution_context()
    if context is None:
        raise TensorRTBuildError(
            f"TensorRT could not create an execution context for the plan just built ({request.plan_path}): "
            "device memory is short (another process?) or see the build log"
        )
    h, w = request.input_shape
    shape = (request.profile[1], 3, h, w)
    if not context.set_input_shape(request.sidecar.input_name, shape):
        raise TensorRTBuildError(f"the built plan rejects input shape {shape} inside its own profile")
    inspector = engine.create_engine_inspector()
    _attach_context(inspector, context)
    layer_info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    atomic_write_text(request.layers_path, layer_info if layer_info.endswith("\n") else layer_info + "\n")
    layer_precisions = inspector_precisions(layer_info)
    _check_engine_precision(request.precision, layer_precisions, request.layers_path)
    return io_types, layer_precisions


def _plan_sidecar(
    request: _BuildRequest, trt: ModuleType, gpu: dict[str, Any], build: dict[str, Any]
) -> EngineSidecar:
    """The plan's sidecar: the ONNX's, with format, artifact, profile and how it was built."""
    sidecar = request.sidecar
    lo, opt, hi = request.profile
    return dataclasses.replace(
        sidecar,
        format="tensorrt",
        artifact=request.plan_path.name,
        artifact_sha256=sha256_file(request.plan_path),
        batch=BatchProfile(min=lo, opt=opt, max=hi),
        engine_id="",
        source={
            **{k: v for k, v in sidecar.source.items() if k not in ("graph_ops", "parity", "conversion")},
            "created_by": "mpanet-build-engine",
            "onnx": {
                "artifact": request.onnx_path.name,
                "sha256": sidecar.artifact_sha256,
                "engine_id": sidecar.engine_id,
                "summary": request.onnx_summary,
            },
            "tensorrt_version": trt.__version__,
            "tensorrt_cuda_major": tensorrt_cuda_major(),
            "gpu": gpu,
            "strongly_typed": True,
            **build,
            "build_log": request.log_path.name,
            "layer_info": request.layers_path.name,
        },
    )


def _file_logger(trt: ModuleType, path: Path, verbose: bool) -> Any:
    """A ``trt.ILogger`` that writes every message to ``path`` and warnings/errors to ``logging``.

    ``errors`` collects ERROR / INTERNAL_ERROR messages, so a failed build can say why and a
    successful one can report that TensorRT complained.
    """

    class BuildLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._lowest = trt.ILogger.Severity.VERBOSE if verbose else trt.ILogger.Severity.INFO
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            # Severity values grow from INTERNAL_ERROR (0) to VERBOSE (4).
            if int(severity) > int(self._lowest):
                return
            name = getattr(severity, "name", str(severity))
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            if not self._handle.closed:
                self._handle.write(f"[{time.strftime('%H:%M:%S')}] [{name}] {msg}\n")
                self._handle.flush()
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                _LOG.warning("TensorRT %s: %s", name, msg)

        def note(self, msg: str) -> None:
            self.log(trt.ILogger.Severity.INFO, msg)

        def warn(self, msg: str) -> None:
            self.log(trt.ILogger.Severity.WARNING, msg)

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


_PLUGIN_LAYER_TYPES = ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3")


def _check_instance_norms(trt: ModuleType, network: Any, request: _BuildRequest) -> None:
    """FP16 builds: every ONNX InstanceNormalization became a native NORMALIZATION layer, none a plugin.

    A plugin layer hides its compute type from the network, so the FP16 check "the MAM
    normalisations stay FP32" would pass without checking anything; the count makes sure each one
    was seen (a parser that decomposes the op into primitive layers is refused too). FP32 and INT8
    Q/DQ builds do not need it: their normalisations are float either way.
    """
    if not request.instance_norm_nodes:
        return
    plugin_types = [getattr(trt.LayerType, t) for t in _PLUGIN_LAYER_TYPES if hasattr(trt.LayerType, t)]
    nodes = set(request.instance_norm_nodes)
    native = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.NORMALIZATION:
            native += 1
        elif layer.type in plugin_types and (
            layer.name in nodes
            or any(layer.name.startswith(n) for n in nodes)
            or "instancenorm" in layer.name.lower()
        ):
            raise TensorRTBuildError(
                f"InstanceNormalization {layer.name!r} was imported as a plugin layer ({layer.type}); its "
                "precision cannot be checked. The parser needs OnnxParserFlag.NATIVE_INSTANCENORM (set by "
                "this code): is a plugin library overriding the op?"
            )
    if native < len(nodes):
        raise TensorRTBuildError(
            f"the ONNX has {len(nodes)} InstanceNormalization nodes but the parsed network only {native} native "
            "normalisation layers; cannot confirm the instance norms keep their precision"
        )


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
    ``set_tensor_address``; each call makes the runner's device current in the calling thread
    (CUDA's current device is per thread: without it a ``run`` from another thread would use device
    0), sets the input shape, copies in, ``execute_async_v3``, copies out and synchronises the
    stream. Not thread-safe (one execution context): one caller at a time, from any thread.

    Args:
        plan_path: the ``.plan`` file.
        sidecar: its sidecar (input/output names and sizes are checked against the engine).
        device: CUDA device index.

    Raises:
        TensorRTUnavailable: no TensorRT / cuda-python / driver / GPU.
        SidecarError: the plan does not deserialize here or does not match its sidecar.
        TensorRTRuntimeError: no execution context (device memory short) or a CUDA allocation failed.
    """

    def __init__(self, plan_path: str | os.PathLike[str], sidecar: EngineSidecar, device: int = 0) -> None:
        self._trt = trt = import_tensorrt()
        cudart = import_cudart()
        self.plan_path = Path(plan_path)
        self.sidecar = sidecar
        self.device = int(device)
        self._allocations: list[tuple[str, int]] = []
        self._stream = None
        self._context = None
        open_device(cudart, self.device)
        self._cudart = cudart  # set once the device is usable: close() frees only what was made
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
        self._check_engine(h, w)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise TensorRTRuntimeError(
                f"TensorRT could not create an execution context for {self.plan_path} on device {self.device}: "
                "device memory is short (another process, or a larger profile than this GPU holds)"
            )
        self._stream = _cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)
        self._stream_handle = native_handle(self._stream)
        in_count, out_count = self.max_batch * 3 * h * w, self.max_batch * sidecar.output_dim
        self._host_in, self._host_in_ptr = self._pinned(in_count)
        self._host_out, self._host_out_ptr = self._pinned(out_count)
        self._dev_in = self._device_buffer(in_count * 4)
        self._dev_out = self._device_buffer(out_count * 4)
        for name, address in ((self._input, self._dev_in), (self._output, self._dev_out)):
            if not self._context.set_tensor_address(name, address):
                raise TensorRTRuntimeError(f"set_tensor_address({name!r}) was rejected by TensorRT")

    def _check_engine(self, h: int, w: int) -> None:
        """Engine I/O names, float32 types, profile and output size against the sidecar."""
        engine, trt = self._engine, self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if self._input not in names or self._output not in names:
            raise SidecarError(f"{self.plan_path}: engine I/O {names} does not match the sidecar's names")
        for name in (self._input, self._output):
            if engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise SidecarError(f"{self.plan_path}: tensor {name!r} is not float32")
        shapes = engine.get_tensor_profile_shape(self._input, 0)
        self.min_batch, self.max_batch = int(shapes[0][0]), int(shapes[2][0])
        if tuple(shapes[2][1:]) != (3, h, w):
            raise SidecarError(
                f"{self.plan_path}: engine input {tuple(shapes[2])} does not match the sidecar's 3x{h}x{w}"
            )
        out_shape = tuple(engine.get_tensor_shape(self._output))
        if len(out_shape) != 2 or out_shape[1] != self.sidecar.output_dim:
            raise SidecarError(
                f"{self.plan_path}: engine output {out_shape}, sidecar says (N, {self.sidecar.output_dim})"
            )

    def _pinned(self, count: int) -> tuple[np.ndarray, int]:
        import ctypes

        ptr = int(_cuda_check(self._cudart.cudaMallocHost(count * 4), "cudaMallocHost", self._cudart))
        self._allocations.append(("host", ptr))
        array = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (count,))
        return array, ptr

    def _device_buffer(self, nbytes: int) -> int:
        ptr = int(_cuda_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc", self._cudart))
        self._allocations.append(("device", ptr))
        return ptr

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(n, 3, H, W) float32 with ``n <= max_batch`` -> (n, output_dim) float32."""
        cudart = self._cudart
        n = int(batch.shape[0])
        if n > self.max_batch:
            raise ValueError(f"batch {n} exceeds the plan's profile maximum {self.max_batch}")
        # The current device is per thread; this call may come from a thread that never set it.
        _cuda_check(cudart.cudaSetDevice(self.device), "cudaSetDevice", cudart)
        run_n = max(n, self.min_batch)  # a profile starting above 1 gets zero padding
        flat = self._host_in[: run_n * int(np.prod(batch.shape[1:]))]
        flat[: batch.size] = batch.reshape(-1)
        if run_n > n:
            flat[batch.size :] = 0.0
        shape = (run_n, *batch.shape[1:])
        if not self._context.set_input_shape(self._input, shape):
            raise TensorRTRuntimeError(f"set_input_shape({self._input!r}, {shape}) was rejected by the plan")
        out_count = run_n * self.sidecar.output_dim
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_check(
            cudart.cudaMemcpyAsync(self._dev_in, self._host_in_ptr, flat.size * 4, kind_h2d, self._stream),
            "cudaMemcpyAsync (input)",
            cudart,
        )
        if not self._context.execute_async_v3(self._stream_handle):
            raise TensorRTRuntimeError(
                f"execute_async_v3 failed on device {self.device} (see TensorRT's log)"
            )
        _cuda_check(
            cudart.cudaMemcpyAsync(self._host_out_ptr, self._dev_out, out_count * 4, kind_d2h, self._stream),
            "cudaMemcpyAsync (output)",
            cudart,
        )
        _cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize", cudart)
        return self._host_out[: n * self.sidecar.output_dim].reshape(n, self.sidecar.output_dim).copy()

    def close(self) -> None:
        """Free device/host buffers and the stream (on the runner's device). Idempotent."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        self._context = None
        if self._allocations or self._stream is not None:
            cudart.cudaSetDevice(self.device)
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
