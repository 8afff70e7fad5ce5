"""A stand-in for the ``tensorrt`` and cuda-python modules, to exercise engines.tensorrt on CPU.

TensorRT cannot be installed in CI, so its real tests skip; this fake implements just the calls
engines.tensorrt makes (the TensorRT 10/11 tensor API and cuda-python's runtime), with the behaviour
that matters to its logic: a "parsed" network whose layer types come from the ONNX graph (as a
strongly typed network's do), a plan that round-trips through bytes, an execution context that
reads/writes the bound device addresses, and an inspector JSON in the TensorRT 10 or 11 schema.
"Device" memory is host memory here; the engine computes ``embedding[i, k] = mean(image[i, k % 3])
* (k + 1)`` so outputs can be checked exactly.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from typing import Any

import numpy as np
import onnx


def fake_output(batch: np.ndarray, dim: int) -> np.ndarray:
    """What the fake engine computes for (n, 3, H, W) -> (n, dim)."""
    means = batch.reshape(batch.shape[0], 3, -1).mean(axis=2)
    k = np.arange(dim)
    return (means[:, k % 3] * (k + 1)).astype(np.float32)


class _Enum(enum.IntEnum):
    pass


def make_tensorrt(version: str = "10.8.0", *, half_norm: bool = False, inspector_types: bool = True) -> Any:
    """A fake ``tensorrt`` module.

    Args:
        version: reported ``__version__`` (10.x: the STRONGLY_TYPED flag is expected; 11.x: not).
        half_norm: make the parsed network's instance normalisations FP16 (a broken FP16 graph).
        inspector_types: whether the inspector reports per-layer types (ProfilingVerbosity honoured).
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # what engines.tensorrt asked for, for assertions

    class DataType(_Enum):
        FLOAT = 0
        HALF = 1
        INT8 = 2
        INT32 = 3
        INT64 = 4

    class LayerType(_Enum):
        CONVOLUTION = 0
        NORMALIZATION = 1
        QUANTIZE = 2
        DEQUANTIZE = 3
        CAST = 4
        OTHER = 5

    class Severity(_Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

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
    trt.NetworkDefinitionCreationFlag = _Enum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 5})
    trt.MemoryPoolType = _Enum("MemoryPoolType", {"WORKSPACE": 0})
    trt.ProfilingVerbosity = _Enum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "NONE": 1, "DETAILED": 2})
    trt.BuilderFlag = _Enum("BuilderFlag", {"TF32": 7})
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

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network, self.logger, self.errors = network, logger, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            model = onnx.shape_inference.infer_shapes(onnx.load(path))
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
                "InstanceNormalization": LayerType.NORMALIZATION,
                "QuantizeLinear": LayerType.QUANTIZE,
                "DequantizeLinear": LayerType.DEQUANTIZE,
                "Cast": LayerType.CAST,
            }
            for node in model.graph.node:
                kind = kinds.get(node.op_type, LayerType.OTHER)
                dtype = onnx_types.get(types_.get(node.output[0], onnx.TensorProto.FLOAT), DataType.FLOAT)
                if kind == LayerType.NORMALIZATION and half_norm:
                    dtype = DataType.HALF
                self.network.layers.append(Layer(node.name, kind, [Tensor(node.output[0], (), dtype)]))
            trt.calls.append(("parse_from_file", path))
            return True

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"timing-cache:" + self.data[-8:] + b"|updated"

    class Profile:
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
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self._cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self._cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            trt.calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            self.logger.log(Severity.INFO, "fake build started")
            self.logger.log(Severity.VERBOSE, "fake tactic timing")
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
                if not (plan["detailed"] and inspector_types):
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
            ok = name == self.engine.plan["input"][0] and lo[0] <= shape[0] <= hi[0]
            self.shape = tuple(shape) if ok else None
            return ok

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert isinstance(stream_handle, int)
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

        def create_execution_context(self) -> Context:
            return Context(self)

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


def make_cudart() -> Any:
    """A fake cuda-python runtime: host memory stands in for device memory."""
    cudart = types.ModuleType("cudart")
    cudart.cudaError_t = _Enum("cudaError_t", {"cudaSuccess": 0, "cudaErrorMemoryAllocation": 2})
    cudart.cudaMemcpyKind = _Enum(
        "cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2}
    )
    ok = cudart.cudaError_t.cudaSuccess
    buffers: dict[int, Any] = {}
    cudart.live = buffers

    def alloc(nbytes: int) -> tuple[Any, int]:
        buffer = ctypes.create_string_buffer(int(nbytes))
        address = ctypes.addressof(buffer)
        buffers[address] = buffer
        return ok, address

    def free(address: int) -> tuple[Any]:
        buffers.pop(int(address))
        return (ok,)

    def memcpy(dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple[Any]:
        ctypes.memmove(int(dst), int(src), int(count))
        return (ok,)

    props = types.SimpleNamespace(name=b"Fake GPU\x00", major=9, minor=0)
    cudart.cudaSetDevice = lambda device: (ok,)
    cudart.cudaGetDeviceProperties = lambda device: (ok, props)
    cudart.cudaGetErrorString = lambda err: (ok, b"fake error")
    cudart.cudaStreamCreate = lambda: (ok, 1234)
    cudart.cudaStreamSynchronize = lambda stream: (ok,)
    cudart.cudaStreamDestroy = lambda stream: (ok,)
    cudart.cudaMalloc = alloc
    cudart.cudaMallocHost = alloc
    cudart.cudaFree = free
    cudart.cudaFreeHost = free
    cudart.cudaMemcpyAsync = memcpy
    return cudart
