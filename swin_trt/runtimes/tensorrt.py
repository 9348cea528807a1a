"""TensorRT backend: build a strongly typed engine from a Q/DQ graph and run it on CUDA tensors.

Written against TensorRT's documented Python API for 10.x and 11.x, where they differ:

- precision comes from the graph (strong typing): no ``BuilderFlag.INT8/FP16`` (removed in 11).
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is set where it exists (required on 10.12+,
  kept but ignored on 11); ``EXPLICIT_BATCH`` only where it exists and matters (before 10);
- one optimisation profile for the dynamic batch, a timing cache that is read and extended,
  ``ProfilingVerbosity.DETAILED`` so that ``swin-trt inspect`` can show each layer's precision;
- inference through ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` on the
  current torch CUDA stream: torch owns the device memory and the stream, so no pycuda (which does
  not build without CUDA development headers and would add a second CUDA context to manage).

Polygraphy's TensorRT loaders do the parsing, configuration and build (they handle version
differences and timing-cache locking); what they lack, written here: the engine file and sidecar
written atomically, the profile from the graph's batch axis, the version/GPU check when an engine
is loaded, and the torch-tensor runner. The pure parts (flags, profile shapes, compatibility,
dtype mapping) take the ``tensorrt`` module as an argument so the tests can pass a stand-in where
TensorRT is not installed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from swin_trt.errors import SwinTrtError
from swin_trt.io import atomic_path, write_json
from swin_trt.lazy import lazy_import
from swin_trt.onnx.hashing import file_sha256
from swin_trt.provenance import package_versions
from swin_trt.runtimes import read_sidecar

tensorrt = lazy_import("tensorrt")
torch = lazy_import("torch")
onnx = lazy_import("onnx")
polygraphy_trt = lazy_import("polygraphy.backend.trt")
polygraphy_exception = lazy_import("polygraphy.exception")

MISSING = "TensorRT is not installed: install swin-trt[tensorrt] or use the NGC container (see docker/README.md)"
MIN_MAJOR = 10
DEFAULT_BATCHES = (1, 32, 128)  # min, opt, max: the bench sweep runs 1, 8, 32, 128
TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
                "UINT8": "uint8"}


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or the one-line error that says how to get it (an optional
    dependency: its absence is the user's to fix, not a traceback)."""
    try:
        version = tensorrt.__version__
    except ImportError:
        raise SwinTrtError(MISSING) from None
    check_version(version)
    return tensorrt


def check_version(version: str) -> None:
    major = int(version.split(".")[0])
    if major < MIN_MAJOR:
        raise SwinTrtError(f"TensorRT {version} is too old: swin-trt builds strongly typed Q/DQ engines with TensorRT {MIN_MAJOR} or newer")


def require_cuda() -> tuple[str, str]:
    """(GPU name, compute capability "M.m") of the current CUDA device; a one-line error without one."""
    if not torch.cuda.is_available():
        raise SwinTrtError("no CUDA GPU is visible (torch.cuda.is_available() is False): TensorRT engines build and run on NVIDIA GPUs only")
    device = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def network_flags(trt: Any) -> dict[str, bool]:
    """Which network-creation flags this TensorRT has and needs, looked up rather than assumed:
    STRONGLY_TYPED is required on 10.12+ and ignored (but present) on 11; EXPLICIT_BATCH is
    implied since 10 and gone in 11."""
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    major = int(trt.__version__.split(".")[0])
    return {
        "strongly_typed": hasattr(flags, "STRONGLY_TYPED"),
        "explicit_batch": hasattr(flags, "EXPLICIT_BATCH") and major < 10,
    }


def graph_input(onnx_path: str | Path) -> tuple[str, list[int | None]]:
    """Name and dims (None where symbolic) of the graph's only input."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise SwinTrtError(f"{onnx_path}: expected one input (the image batch), found {len(inputs)}: {', '.join(i.name for i in inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def profile_shapes(dims: list[int | None], min_batch: int | None = None, opt_batch: int | None = None,
                   max_batch: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes of the one optimisation profile. Only the batch (first) axis
    may be dynamic; a static batch admits only itself. Defaults: 1 / 32 / 128, opt clamped into
    [min, max]."""
    if not dims or any(d is None for d in dims[1:]):
        raise SwinTrtError(f"input shape {['?' if d is None else d for d in dims]}: only the batch axis may be dynamic (export with a fixed image size)")
    batch, rest = dims[0], tuple(dims[1:])
    if batch is not None:
        requested = {b for b in (min_batch, opt_batch, max_batch) if b is not None}
        if requested - {batch}:
            raise SwinTrtError(f"the graph's batch is fixed at {batch}: --min/--opt/--max-batch cannot change it (export with a dynamic batch)")
        return (batch, *rest), (batch, *rest), (batch, *rest)
    low = min_batch if min_batch is not None else DEFAULT_BATCHES[0]
    high = max_batch if max_batch is not None else max(DEFAULT_BATCHES[2], low)
    best = opt_batch if opt_batch is not None else min(max(DEFAULT_BATCHES[1], low), high)
    if not 1 <= low <= best <= high:
        raise SwinTrtError(f"batch profile must satisfy 1 <= --min-batch <= --opt-batch <= --max-batch, got {low} / {best} / {high}")
    return (low, *rest), (best, *rest), (high, *rest)


def check_compatible(details: dict[str, Any], trt_version: str, gpu_name: str, capability: str, engine_path: str | Path) -> str | None:
    """Refuse an engine built by another TensorRT version or for another compute capability (its
    plan would not deserialize, or TensorRT would say so less plainly); return a notice when only
    the GPU model differs (it runs, with tactics timed on the other GPU)."""
    built = details.get("tensorrt_version")
    gpu = details.get("gpu") or {}
    if built and built != trt_version:
        raise SwinTrtError(f"{engine_path} was built by TensorRT {built}, this is TensorRT {trt_version}: rebuild it with `swin-trt build --backend tensorrt`")
    if gpu.get("compute_capability") and gpu["compute_capability"] != capability:
        raise SwinTrtError(f"{engine_path} was built for {gpu.get('name')} (compute capability {gpu['compute_capability']}), this GPU is {gpu_name} "
                           f"(compute capability {capability}): rebuild it on this GPU with `swin-trt build --backend tensorrt`")
    if gpu.get("name") and gpu["name"] != gpu_name:
        return f"{engine_path} was built on {gpu['name']}; running on {gpu_name} (same compute capability): rebuild here for tactics timed on this GPU"
    return None


def torch_dtype(trt_dtype: Any) -> Any:
    """The torch dtype for a TensorRT ``DataType`` (``DataType.HALF`` -> torch.float16)."""
    name = str(trt_dtype).rsplit(".", 1)[-1]
    if name not in TORCH_DTYPES:
        raise SwinTrtError(f"engine tensor type {trt_dtype} has no torch equivalent")
    return getattr(torch, TORCH_DTYPES[name])


def check_batch(batch: int, low: int, high: int, engine_path: str | Path) -> None:
    if not low <= batch <= high:
        raise SwinTrtError(f"batch {batch} is outside {engine_path}'s profile ({low} to {high}): use --batch-size within it or rebuild with "
                           f"--min-batch/--max-batch")


def build(
    onnx_path: str | Path,
    engine_path: str | Path,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    timing_cache: str | Path | None = None,
    builder_optimization_level: int | None = None,
    workspace_mib: int | None = None,
) -> dict[str, Any]:
    """Build a strongly typed engine from ``onnx_path`` and save it with a JSON sidecar.

    The sidecar carries what the parity gate's provenance chain needs (``source_onnx`` and its
    SHA-256) and what decides whether the engine can be loaded elsewhere (TensorRT version, GPU,
    compute capability), plus the build flags."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SwinTrtError(f"ONNX file not found: {onnx_path} (make one with `swin-trt export --target tensorrt`)")
    trt = require_tensorrt()
    gpu_name, capability = require_cuda()
    input_name, dims = graph_input(onnx_path)
    low, best, high = profile_shapes(dims, min_batch, opt_batch, max_batch)
    flags = network_flags(trt)
    network = polygraphy_trt.NetworkFromOnnxPath(str(onnx_path), strongly_typed=flags["strongly_typed"])
    config = polygraphy_trt.CreateConfig(
        profiles=[polygraphy_trt.Profile().add(input_name, min=low, opt=best, max=high)],
        load_timing_cache=str(timing_cache) if timing_cache else None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace_mib << 20} if workspace_mib else None,
        builder_optimization_level=builder_optimization_level,
    )
    with atomic_path(engine_path) as tmp:
        try:
            serialized = polygraphy_trt.EngineBytesFromNetwork(network, config, save_timing_cache=str(timing_cache) if timing_cache else None)()
        except polygraphy_exception.PolygraphyException as error:
            raise SwinTrtError(f"{onnx_path}: TensorRT {trt.__version__} could not build an engine ({str(error).strip().splitlines()[-1]})") from None
        tmp.write_bytes(bytes(serialized))
    source = read_sidecar(onnx_path) or {}
    details = {
        "engine": str(engine_path),
        "backend": "tensorrt",
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": file_sha256(onnx_path),
        "model": source.get("model"),
        "int8_mode": source.get("int8_mode"),
        "precision": source.get("precision"),
        "tensorrt_version": trt.__version__,
        "gpu": {"name": gpu_name, "compute_capability": capability},
        "build": {
            **flags,
            "input": input_name,
            "min_shape": list(low), "opt_shape": list(best), "max_shape": list(high),
            "timing_cache": str(timing_cache) if timing_cache else None,
            "builder_optimization_level": builder_optimization_level,
            "workspace_mib": workspace_mib,
            "profiling_verbosity": "DETAILED",
        },
        "versions": package_versions(),
    }
    write_json(engine_path.with_suffix(".json"), details)
    return details


class Engine:
    """A deserialized engine with one execution context, run on the current torch CUDA stream.

    ``run`` takes and returns torch CUDA tensors (the CUDA evaluator's path); ``__call__`` takes a
    numpy batch and returns numpy logits, as every backend does for the generic parity gate.
    """

    def __init__(self, engine_path: str | Path):
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise SwinTrtError(f"engine not found: {engine_path} (make one with `swin-trt build --backend tensorrt`)")
        trt = require_tensorrt()
        gpu_name, capability = require_cuda()
        self.path = engine_path
        self.details = read_sidecar(engine_path) or {"backend": "tensorrt"}
        notice = check_compatible(self.details, trt.__version__, gpu_name, capability, engine_path)
        if notice:
            warnings.warn(notice, stacklevel=2)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise SwinTrtError(f"{engine_path}: TensorRT {trt.__version__} cannot deserialize it on {gpu_name} (compute capability {capability}); "
                               "it was built by another TensorRT version or for another GPU: rebuild it with `swin-trt build --backend tensorrt`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise SwinTrtError(f"{engine_path}: expected one input and one output, found {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = torch_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = torch_dtype(self.engine.get_tensor_dtype(self.output_name))
        low, best, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.batch_range = (low[0], high[0])
        self.opt_shape = tuple(best)

    def run(self, images):
        """Logits for a batch given as a torch tensor (moved to the current CUDA device if needed).

        Inputs and outputs stay allocated by torch's caching allocator on the current stream, so
        a buffer freed here is reused only by work queued after this inference on that stream."""
        check_batch(images.shape[0], *self.batch_range, self.path)
        images = images.to(device=torch.device("cuda", torch.cuda.current_device()), dtype=self.input_dtype).contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(images.shape)):
            raise SwinTrtError(f"{self.path}: input shape {tuple(images.shape)} does not fit the engine's profile")
        logits = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype, device=images.device)
        self.context.set_tensor_address(self.input_name, images.data_ptr())
        self.context.set_tensor_address(self.output_name, logits.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(images.device).cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        return logits

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return self.run(batch).float().cpu().numpy()  # .cpu() waits for the stream

    def layer_information(self) -> dict[str, Any]:
        """The engine inspector's JSON for every layer, shapes resolved at the profile's opt batch."""
        trt = require_tensorrt()
        self.context.set_input_shape(self.input_name, self.opt_shape)
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
