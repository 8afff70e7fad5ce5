"""A stand-in for ``tensorrt`` and cuda-python (``cuda.bindings``), to exercise engines.tensorrt on CPU.

TensorRT cannot be installed in CI, so its real tests skip; this fake implements the calls
engines.tensorrt makes (the TensorRT 10/11 tensor API and cuda-python's runtime) with what matters
to that code's logic, and with the failure modes a real machine has:

* enum values are the real TensorRT 10.x ones (``NvInfer.h`` / ``NvOnnxParser.h``):
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED == 1``, ``OnnxParserFlag.NATIVE_INSTANCENORM == 0``,
  ``BuilderFlag.TF32 == 6``, ``LayerType.NORMALIZATION == 45``, ``PLUGIN_V2 == 21``, ``DataType.HALF
  == 1``...; so ``1 << STRONGLY_TYPED`` is 2, as on a real 10.x;
* the parser turns ONNX ``InstanceNormalization`` into a native NORMALIZATION layer only while
  ``NATIVE_INSTANCENORM`` is set (on by default, as in 10.x), otherwise into the
  ``InstanceNormalization_TRT`` plugin (PLUGIN_V2), or (``instancenorm="decomposed"``) into
  primitive layers;
* streams are ``cudaStream_t`` objects, not ints: ``int(stream)`` warns (DeprecationWarning, as
  cuda-bindings 13 does), ``cuda.bindings.utils.get_cuda_native_handle`` gives the handle
  (``legacy=True``: cuda-bindings < 12.9, no ``utils`` module, ``int()`` silent);
* the current device is per thread (CUDA's rule); a stream may only be used while its device is
  current, otherwise ``execute_async_v3`` fails;
* no driver (``driver_version=0``), too old a driver, no device, a device index out of range;
* ``fail=`` names calls that fail the way the real ones do: ``parse`` (parser errors),
  ``timing_cache`` (``create_timing_cache`` returns None even for an empty blob), ``set_timing_cache``
  (returns False), ``timing_cache_mismatch`` (False for a cache with entries: another GPU's), ``profile`` (``add_optimization_profile`` returns -1), ``build`` (no plan),
  ``context`` (``create_execution_context`` returns None: device memory short), ``input_shape``
  (``set_input_shape`` returns False), ``timing_cache_serialize`` (``get_timing_cache`` None).
  A timing-cache blob without the fake's magic is "corrupt": ``create_timing_cache`` returns None.

"Device" memory is host memory; the engine computes ``embedding[i, k] = mean(image[i, k % 3]) *
(k + 1)`` so outputs can be checked exactly.
"""

from __future__ import annotations

import ctypes
import enum
import json
import threading
import types
import warnings
from collections.abc import Collection
from typing import Any

import numpy as np
import onnx

CACHE_MAGIC = b"FAKETRTCACHE1"


def fake_output(batch: np.ndarray, dim: int) -> np.ndarray:
    """What the fake engine computes for (n, 3, H, W) -> (n, dim)."""
    means = batch.reshape(batch.shape[0], 3, -1).mean(axis=2)
    k = np.arange(dim)
    return (means[:, k % 3] * (k + 1)).astype(np.float32)


class _Enum(enum.IntEnum):
    pass


# TensorRT 10.x values (NvInfer.h, NvInferRuntimeBase.h, NvOnnxParser.h); only members this code or
# the fake uses, each with its real number.
DATA_TYPES = {
    "FLOAT": 0,
    "HALF": 1,
    "INT8": 2,
    "INT32": 3,
    "BOOL": 4,
    "UINT8": 5,
    "FP8": 6,
    "BF16": 7,
    "INT64": 8,
}
LAYER_TYPES = {
    "CONVOLUTION": 0,
    "CAST": 1,
    "ACTIVATION": 2,
    "POOLING": 3,
    "SCALE": 5,
    "ELEMENTWISE": 9,
    "PLUGIN": 10,
    "UNARY": 11,
    "SHUFFLE": 13,
    "REDUCE": 14,
    "MATRIX_MULTIPLY": 17,
    "CONSTANT": 19,
    "IDENTITY": 20,
    "PLUGIN_V2": 21,
    "SLICE": 22,
    "SHAPE": 23,
    "RESIZE": 25,
    "QUANTIZE": 32,
    "DEQUANTIZE": 33,
    "NORMALIZATION": 45,
    "PLUGIN_V3": 46,
}
NETWORK_FLAGS = {
    "EXPLICIT_BATCH": 0,
    "STRONGLY_TYPED": 1,
    "PREFER_JIT_PYTHON_PLUGINS": 2,
    "PREFER_AOT_PYTHON_PLUGINS": 3,
}
PARSER_FLAGS = {"NATIVE_INSTANCENORM": 0, "ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA": 1}
BUILDER_FLAGS = {
    "FP16": 0,
    "INT8": 1,
    "DEBUG": 2,
    "GPU_FALLBACK": 3,
    "REFIT": 4,
    "DISABLE_TIMING_CACHE": 5,
    "TF32": 6,
    "SPARSE_WEIGHTS": 7,
}
# cudaError_t values of the CUDA runtime (driver_types.h).
CUDA_ERRORS = {
    "cudaSuccess": 0,
    "cudaErrorInvalidValue": 1,
    "cudaErrorMemoryAllocation": 2,
    "cudaErrorInsufficientDriver": 35,
    "cudaErrorNoDevice": 100,
    "cudaErrorInvalidDevice": 101,
    "cudaErrorInvalidResourceHandle": 400,
}


def make_tensorrt(
    version: str = "10.8.0",
    *,
    half_norm: bool = False,
    inspector_types: bool = True,
    instancenorm: str = "flag",
    native_instancenorm_default: bool = True,
    fail: Collection[str] = (),
    cudart: Any = None,
) -> Any:
    """A fake ``tensorrt`` module.

    Args:
        version: reported ``__version__`` (10.x: the STRONGLY_TYPED flag is expected; 11.x: not).
        half_norm: make the parsed network's instance normalisations FP16 (a broken FP16 graph).
        inspector_types: whether the inspector reports per-layer types (ProfilingVerbosity honoured).
        instancenorm: ``flag``: native NORMALIZATION layer while ``NATIVE_INSTANCENORM`` is set, the
            plugin otherwise; ``plugin``: always the plugin; ``decomposed``: reduce/elementwise layers.
        native_instancenorm_default: the parser's initial ``NATIVE_INSTANCENORM`` (on in 10.x).
        fail: calls that fail (see the module docstring).
        cudart: the fake cudart (:func:`make_cudart`) whose current device ``execute_async_v3`` checks.

    Long because it is one closure on purpose: the fake classes share ``fail``, the options and the
    call log, as the real module's objects share one library state.
    """
    unknown = set(fail) - {
        "parse",
        "timing_cache",
        "set_timing_cache",
        "timing_cache_mismatch",
        "profile",
        "build",
        "context",
        "input_shape",
        "timing_cache_serialize",
    }
    assert not unknown, f"unknown failure modes {unknown}"
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # what engines.tensorrt asked for, for assertions

    DataType = _Enum("DataType", DATA_TYPES)
    LayerType = _Enum("LayerType", LAYER_TYPES)
    Severity = _Enum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity

    class Logger(ILogger):
        WARNING = Severity.WARNING

        def __init__(self, severity: Any = Severity.WARNING) -> None:
            super().__init__()

        def log(self, severity: Any, msg: str) -> None:
            pass

    trt.DataType, trt.LayerType, trt.ILogger, trt.Logger = DataType, LayerType, ILogger, Logger
    trt.NetworkDefinitionCreationFlag = _Enum("NetworkDefinitionCreationFlag", NETWORK_FLAGS)
    trt.OnnxParserFlag = _Enum("OnnxParserFlag", PARSER_FLAGS)
    trt.BuilderFlag = _Enum("BuilderFlag", BUILDER_FLAGS)
    trt.MemoryPoolType = _Enum(
        "MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3}
    )
    trt.ProfilingVerbosity = _Enum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
    trt.TensorIOMode = _Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.LayerInformationFormat = _Enum("LayerInformationFormat", {"ONELINE": 0, "JSON": 1})

    onnx_types = {
        onnx.TensorProto.FLOAT: DataType.FLOAT,
        onnx.TensorProto.FLOAT16: DataType.HALF,
        onnx.TensorProto.INT8: DataType.INT8,
        onnx.TensorProto.INT64: DataType.INT64,
    }

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class Layer:
        def __init__(self, name: str, kind: Any, outputs: list[Tensor]) -> None:
            self.name, self.type, self._outputs = name, kind, outputs

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, index: int) -> Tensor:
            return self._outputs[index]

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.layers: list[Layer] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

        def get_layer(self, i: int) -> Layer:
            return self.layers[i]

    class ParserError:
        """``IParserError``: code(), desc(), node(), node_name(), node_operator()."""

        def __init__(self, desc: str, node: int, name: str, op: str) -> None:
            self._desc, self._node, self._name, self._op = desc, node, name, op

        def code(self) -> str:
            return "ErrorCode.UNSUPPORTED_NODE"

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

        def node_name(self) -> str:
            return self._name

        def node_operator(self) -> str:
            return self._op

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network, self.logger, self.errors = network, logger, []
            self.flags = (1 << PARSER_FLAGS["NATIVE_INSTANCENORM"]) if native_instancenorm_default else 0

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def set_flag(self, flag: Any) -> None:
            self.flags |= 1 << int(flag)

        def clear_flag(self, flag: Any) -> None:
            self.flags &= ~(1 << int(flag))

        def get_flag(self, flag: Any) -> bool:
            return bool(self.flags & (1 << int(flag)))

        def parse_from_file(self, path: str) -> bool:
            trt.calls.append(("parse_from_file", path, self.flags))
            model = onnx.shape_inference.infer_shapes(onnx.load(path))
            if "parse" in fail:
                node = model.graph.node[1]
                self.errors.append(ParserError("fake unsupported attribute", 1, node.name, node.op_type))
                return False
            types_ = {
                v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]
            }
            for init in model.graph.initializer:
                types_[init.name] = init.data_type
            dims = lambda v: tuple(d.dim_value if d.dim_value else -1 for d in v.type.tensor_type.shape.dim)  # noqa: E731
            for v in model.graph.input:
                self.network.inputs.append(Tensor(v.name, dims(v), onnx_types[v.type.tensor_type.elem_type]))
            for v in model.graph.output:
                self.network.outputs.append(Tensor(v.name, dims(v), onnx_types[v.type.tensor_type.elem_type]))
            kinds = {
                "Conv": LayerType.CONVOLUTION,
                "QuantizeLinear": LayerType.QUANTIZE,
                "DequantizeLinear": LayerType.DEQUANTIZE,
                "Cast": LayerType.CAST,
                "Relu": LayerType.ACTIVATION,
            }
            native = self.get_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM) and instancenorm == "flag"
            for node in model.graph.node:
                dtype = onnx_types.get(types_.get(node.output[0], onnx.TensorProto.FLOAT), DataType.FLOAT)
                if node.op_type == "InstanceNormalization":
                    if half_norm:
                        dtype = DataType.HALF
                    if instancenorm == "decomposed":
                        for suffix, kind in (("mean", LayerType.REDUCE), ("sub", LayerType.ELEMENTWISE)):
                            out = Tensor(f"{node.output[0]}_{suffix}", (), dtype)
                            self.network.layers.append(Layer(f"{node.name}_{suffix}", kind, [out]))
                        continue
                    kind = LayerType.NORMALIZATION if native else LayerType.PLUGIN_V2
                else:
                    kind = kinds.get(node.op_type, LayerType.ELEMENTWISE)
                self.network.layers.append(Layer(node.name, kind, [Tensor(node.output[0], (), dtype)]))
            return True

    class TimingCache:
        def __init__(self, entries: bytes) -> None:
            self.entries = entries

        def serialize(self) -> bytes:
            return CACHE_MAGIC + self.entries + b"|updated"

    class Profile:
        shape: tuple | None = None

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shape = (name, tuple(lo), tuple(opt), tuple(hi))

    class BuilderConfig:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []
            self.cleared: list[Any] = []
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.builder_optimization_level = 3
            self._cache = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.workspace = size

        def clear_flag(self, flag: Any) -> None:
            self.cleared.append(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            if "profile" in fail or profile.shape is None:
                return -1
            _, lo, opt, hi = profile.shape
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache | None:
            data = bytes(data)
            trt.calls.append(("create_timing_cache", data))
            if "timing_cache" in fail:
                return None
            if not data:
                return TimingCache(b"")
            if not data.startswith(CACHE_MAGIC):  # corrupt: TensorRT logs an error, returns nullptr
                return None
            return TimingCache(data[len(CACHE_MAGIC) :].split(b"|")[0])

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            trt.calls.append(("set_timing_cache", cache.entries))
            if "set_timing_cache" in fail or ("timing_cache_mismatch" in fail and cache.entries):
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return None if "timing_cache_serialize" in fail else self._cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            trt.calls.append(("create_network", flags))
            assert flags < (1 << len(NETWORK_FLAGS)), f"unknown creation flags {flags:#b}"
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
            self.logger.log(Severity.INFO, "fake build started")
            self.logger.log(Severity.VERBOSE, "fake tactic timing")
            if "build" in fail:
                self.logger.log(Severity.ERROR, "fake: could not find any implementation")
                return None
            if not config.profiles:
                self.logger.log(Severity.ERROR, "fake: network has dynamic inputs but no profile")
                return None
            name, lo, opt, hi = config.profiles[0].shape
            out = network.outputs[0]
            layers = [
                {"name": layer.name, "types": [t.dtype.name for t in layer._outputs]}
                for layer in network.layers
            ]
            plan = {
                "input": [name, list(network.inputs[0].shape)],
                "output": [out.name, list(out.shape)],
                "profile": [list(lo), list(opt), list(hi)],
                "layers": layers,
                "detailed": config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED,
            }
            trt.calls.append(("build", config.workspace, config.cleared, config.builder_optimization_level))
            return b"FAKEPLAN" + json.dumps(plan).encode()

    class Inspector:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.execution_context = None

        def get_engine_information(self, fmt: Any) -> str:
            plan = self.engine.plan
            rows = []
            for layer in plan["layers"]:
                kind = {"HALF": "Half", "FLOAT": "Float", "INT8": "Int8"}.get(layer["types"][0], "Int64")
                if not (plan["detailed"] and inspector_types and self.execution_context is not None):
                    rows.append({"Name": layer["name"]})
                elif version.startswith("10"):
                    fmt_text = (
                        f"Row major linear {kind.replace('Half', 'FP16').replace('Float', 'FP32')} format"
                    )
                    rows.append(
                        {"Name": layer["name"], "Outputs": [{"Name": "t", "Format/Datatype": fmt_text}]}
                    )
                else:
                    rows.append(
                        {
                            "Name": layer["name"],
                            "Outputs": [{"Name": "t", "DataType": kind, "Format": "kLINEAR"}],
                        }
                    )
            return json.dumps({"Layers": rows})

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.shape: tuple[int, ...] | None = None

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            lo, _, hi = self.engine.plan["profile"]
            ok = (
                "input_shape" not in fail
                and name == self.engine.plan["input"][0]
                and lo[0] <= shape[0] <= hi[0]
            )
            self.shape = tuple(shape) if ok else None
            return ok

        def set_tensor_address(self, name: str, address: int) -> bool:
            assert type(address) is int, f"set_tensor_address takes an int pointer, got {type(address)}"
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert type(stream_handle) is int, (
                f"execute_async_v3 takes an int handle, got {type(stream_handle)}"
            )
            if cudart is not None:
                device = cudart.stream_devices.get(stream_handle)
                if device is None or device != cudart.current_device():
                    trt.calls.append(("execute_failed", stream_handle, cudart.current_device()))
                    return False  # a stream of another device, or no stream at all
            if self.shape is None:
                return False
            n, c, h, w = self.shape
            dim = self.engine.plan["output"][1][1]
            src = np.ctypeslib.as_array(
                ctypes.cast(self.addresses[self.engine.plan["input"][0]], ctypes.POINTER(ctypes.c_float)),
                (n, c, h, w),
            )
            dst = np.ctypeslib.as_array(
                ctypes.cast(self.addresses[self.engine.plan["output"][0]], ctypes.POINTER(ctypes.c_float)),
                (n, dim),
            )
            dst[:] = fake_output(src, dim)
            trt.calls.append(("execute", n))
            return True

    class Engine:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan

        @property
        def num_io_tensors(self) -> int:
            return 2

        def get_tensor_name(self, i: int) -> str:
            return [self.plan["input"][0], self.plan["output"][0]][i]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if name == self.plan["input"][0] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType.FLOAT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(self.plan["input"][1] if name == self.plan["input"][0] else self.plan["output"][1])

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            return [tuple(s) for s in self.plan["profile"]]

        def create_execution_context(self) -> Context | None:
            return None if "context" in fail else Context(self)

        def create_engine_inspector(self) -> Inspector:
            return Inspector(self)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            data = bytes(data)
            if not data.startswith(b"FAKEPLAN"):
                return None
            return Engine(json.loads(data[len(b"FAKEPLAN") :]))

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def make_cudart(
    *,
    version: str = "13.0.2",
    driver_version: int = 13000,
    devices: int = 1,
    legacy: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """A fake cuda-python: its runtime module and the ``sys.modules`` entries that install it.

    Args:
        version: ``cuda.bindings.__version__`` (its major is the CUDA major it needs from the driver).
        driver_version: what ``cudaDriverGetVersion`` reports (``1000 * major + 10 * minor``; 0: no driver).
        devices: number of GPUs.
        legacy: cuda-bindings < 12.9: no ``cuda.bindings.utils``, ``int(stream)`` is the handle.

    Returns:
        ``(cudart, modules)``: ``modules`` maps ``cuda``, ``cuda.bindings``, ``cuda.bindings.runtime``
        and ``cuda.bindings.utils`` (None when ``legacy``: the import fails) to the fakes.
    """
    cudart = types.ModuleType("cuda.bindings.runtime")
    cudart.cudaError_t = _Enum("cudaError_t", CUDA_ERRORS)
    cudart.cudaMemcpyKind = _Enum(
        "cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2}
    )
    err = cudart.cudaError_t
    ok = err.cudaSuccess
    buffers: dict[int, Any] = {}
    cudart.live = buffers
    cudart.stream_devices = {}  # native handle -> device it was created on
    cudart.set_device_calls = []  # (thread id, device)
    local = threading.local()
    messages = {
        err.cudaErrorNoDevice: b"no CUDA-capable device is detected",
        err.cudaErrorInsufficientDriver: b"CUDA driver version is insufficient for CUDA runtime version",
        err.cudaErrorInvalidDevice: b"invalid device ordinal",
    }

    class cudaStream_t:  # noqa: N801 - cuda-python's name
        def __init__(self, handle: int) -> None:
            self._handle = handle

        def __int__(self) -> int:
            if not legacy:
                warnings.warn(
                    "int(cuda object) is deprecated; use cuda.bindings.utils.get_cuda_native_handle",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return self._handle

    def current_device() -> int:
        return getattr(local, "device", 0)

    def usable() -> Any:
        if driver_version == 0 or driver_version < 1000 * int(version.split(".")[0]):
            return err.cudaErrorInsufficientDriver
        if devices == 0:
            return err.cudaErrorNoDevice
        return ok

    def set_device(device: int) -> tuple[Any]:
        state = usable()
        if state != ok:
            return (state,)
        if not 0 <= int(device) < devices:
            return (err.cudaErrorInvalidDevice,)
        local.device = int(device)
        cudart.set_device_calls.append((threading.get_ident(), int(device)))
        return (ok,)

    def alloc(nbytes: int) -> tuple[Any, int]:
        if usable() != ok:
            return usable(), None
        buffer = ctypes.create_string_buffer(int(nbytes))
        address = ctypes.addressof(buffer)
        buffers[address] = buffer
        return ok, address

    def free(address: int) -> tuple[Any]:
        buffers.pop(int(address))
        return (ok,)

    def memcpy(dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[Any]:
        if not isinstance(stream, cudaStream_t):
            return (err.cudaErrorInvalidResourceHandle,)
        ctypes.memmove(int(dst), int(src), int(count))
        return (ok,)

    def stream_create() -> tuple[Any, Any]:
        if usable() != ok:
            return usable(), None
        handle = 0x7F000 + len(cudart.stream_devices) * 16
        cudart.stream_devices[handle] = current_device()
        return ok, cudaStream_t(handle)

    def stream_destroy(stream: Any) -> tuple[Any]:
        cudart.stream_devices.pop(stream._handle, None)
        return (ok,)

    def device_count() -> tuple[Any, int | None]:
        state = usable()
        return (ok, devices) if state == ok else (state, None)

    props = types.SimpleNamespace(name=b"Fake GPU\x00", major=9, minor=0)
    cudart.cudaStream_t = cudaStream_t
    cudart.current_device = current_device
    cudart.cudaSetDevice = set_device
    cudart.cudaDriverGetVersion = lambda: (ok, driver_version)
    cudart.cudaRuntimeGetVersion = lambda: (
        ok,
        1000 * int(version.split(".")[0]) + 10 * int(version.split(".")[1]),
    )
    cudart.cudaGetDeviceCount = device_count
    cudart.cudaGetDeviceProperties = lambda device: (ok, props)
    cudart.cudaGetErrorString = lambda e: (ok, messages.get(e, b"fake error"))
    cudart.cudaStreamCreate = stream_create
    cudart.cudaStreamSynchronize = lambda stream: (ok,)
    cudart.cudaStreamDestroy = stream_destroy
    cudart.cudaMalloc = alloc
    cudart.cudaMallocHost = alloc
    cudart.cudaFree = free
    cudart.cudaFreeHost = free
    cudart.cudaMemcpyAsync = memcpy

    def get_cuda_native_handle(obj: Any) -> int:
        if not isinstance(obj, cudaStream_t):
            raise TypeError(f"Unknown type: {type(obj)}")
        return obj._handle

    utils = types.ModuleType("cuda.bindings.utils")
    utils.get_cuda_native_handle = get_cuda_native_handle
    bindings = types.ModuleType("cuda.bindings")
    bindings.__version__ = version
    bindings.__path__ = []  # a package, so `from cuda.bindings import runtime` resolves
    bindings.runtime = cudart
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []
    cuda.bindings = bindings
    if not legacy:
        bindings.utils = utils
    modules = {
        "cuda": cuda,
        "cuda.bindings": bindings,
        "cuda.bindings.runtime": cudart,
        "cuda.bindings.utils": None if legacy else utils,
    }
    return cudart, modules
