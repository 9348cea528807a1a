"""TensorRT backend: build a strongly typed engine from a Q/DQ graph and run it on CUDA tensors.

Written against TensorRT's documented Python API for 10.x and 11.x, where they differ:

- precision comes from the graph (strong typing): no ``BuilderFlag.INT8/FP16`` (removed in 11).
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is set where it exists (required on 10.12+,
  kept but ignored on 11); ``EXPLICIT_BATCH`` only where it exists and matters (before 10);
- one optimisation profile for the dynamic batch, a timing cache that is read and extended,
  ``ProfilingVerbosity.DETAILED`` so that ``swin-trt inspect`` can show each layer's precision;
- inference through ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` on a
  ``torch.cuda.Stream`` of the execution context's own, never the legacy default stream (stream 0:
  TensorRT then adds device synchronisations of its own, and the timings would hold them): torch owns
  the device memory and the streams, so no pycuda (which does not build without CUDA development
  headers and would add a second CUDA context to manage).

Polygraphy's TensorRT loaders do the parsing, configuration and build (they handle version
differences and timing-cache locking); what they lack, written here: the engine file and sidecar
written atomically, the profile from the graph's batch axis, the version/GPU check when an engine
is loaded, the torch-tensor runner, and the debug engine of ``swin-trt bench --localize`` (the
source graph with chosen tensors marked as outputs through Polygraphy's ``ModifyNetworkOutputs``).
The pure parts (flags, profile shapes, compatibility, dtype mapping, output binding, which tensors
a debug engine marks) take their TensorRT objects as arguments, so the tests can pass stand-ins
where TensorRT is not installed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from swin_trt.errors import SwinTrtError
from swin_trt.io import atomic_path, read_sidecar, write_sidecar
from swin_trt.lazy import lazy_import
from swin_trt.runtimes import source_record
from swin_trt.versions import package_versions

tensorrt = lazy_import("tensorrt")
torch = lazy_import("torch")
onnx = lazy_import("onnx")
onnx_graph = lazy_import("swin_trt.onnx.graph")
polygraphy_trt = lazy_import("polygraphy.backend.trt")
polygraphy_exception = lazy_import("polygraphy.exception")

MISSING = "TensorRT is not installed: install swin-trt[tensorrt] or use the NGC container (see docker/README.md)"
MIN_MAJOR = 10
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9: L4, L40S) and Hopper (9.0: H100, H200) and newer
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


def check_fp8_capability(onnx_path: str | Path, gpu_name: str, capability: str) -> None:
    """Refuse, before a long build, an FP8 Q/DQ graph on a GPU without FP8 tensor cores
    (compute capability below 8.9). The format is read from the graph's zero-point types."""
    major, minor = (int(part) for part in capability.split(".")[:2])
    if (major, minor) >= FP8_MIN_CAPABILITY:
        return
    graph = onnx.load(str(onnx_path), load_external_data=False)
    if "fp8" in onnx_graph.qdq_formats(graph):
        raise SwinTrtError(f"{onnx_path} has FP8 Q/DQ, and {gpu_name} (compute capability {capability}) has no FP8 tensor cores: FP8 engines need "
                           f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}+ (L4, L40S, H100, H200); calibrate with --format int8 for this GPU")


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


def _builder_config(trt: Any, input_name: str, shapes: tuple, timing_cache: str | Path | None, builder_optimization_level: int | None,
                    workspace_mib: int | None) -> Any:
    """Polygraphy's builder config: one profile over the batch axis, the timing cache read when
    given, DETAILED profiling (the inspector's per-layer precisions), no precision flags."""
    low, best, high = shapes
    return polygraphy_trt.CreateConfig(
        profiles=[polygraphy_trt.Profile().add(input_name, min=low, opt=best, max=high)],
        load_timing_cache=str(timing_cache) if timing_cache else None,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace_mib << 20} if workspace_mib else None,
        builder_optimization_level=builder_optimization_level,
    )


def _build_bytes(trt: Any, network: Any, config: Any, onnx_path: Path, timing_cache: str | Path | None = None) -> bytes:
    try:
        return bytes(polygraphy_trt.EngineBytesFromNetwork(network, config, save_timing_cache=str(timing_cache) if timing_cache else None)())
    except polygraphy_exception.PolygraphyException as error:
        raise SwinTrtError(f"{onnx_path}: TensorRT {trt.__version__} could not build an engine ({str(error).strip().splitlines()[-1]})") from None


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

    The sidecar carries what the parity gate's provenance chain needs (:func:`source_record`: the
    graph's absolute path, its SHA-256, and what its own sidecar says it is), what decides whether
    the engine can be loaded elsewhere (TensorRT version, GPU, compute capability), and the build
    flags (which ``--localize`` reuses for its debug engine)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SwinTrtError(f"ONNX file not found: {onnx_path} (make one with `swin-trt export --target tensorrt`)")
    trt = require_tensorrt()
    gpu_name, capability = require_cuda()
    check_fp8_capability(onnx_path, gpu_name, capability)
    input_name, dims = graph_input(onnx_path)
    shapes = profile_shapes(dims, min_batch, opt_batch, max_batch)
    flags = network_flags(trt)
    network = polygraphy_trt.NetworkFromOnnxPath(str(onnx_path), strongly_typed=flags["strongly_typed"])
    config = _builder_config(trt, input_name, shapes, timing_cache, builder_optimization_level, workspace_mib)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(_build_bytes(trt, network, config, onnx_path, timing_cache))
    details = {
        "engine": str(engine_path),
        "backend": "tensorrt",
        **source_record(onnx_path),
        "tensorrt_version": trt.__version__,
        "gpu": {"name": gpu_name, "compute_capability": capability},
        "build": {
            **flags,
            "input": input_name,
            "min_shape": list(shapes[0]), "opt_shape": list(shapes[1]), "max_shape": list(shapes[2]),
            "timing_cache": str(timing_cache) if timing_cache else None,
            "builder_optimization_level": builder_optimization_level,
            "workspace_mib": workspace_mib,
            "profiling_verbosity": "DETAILED",
        },
        "versions": package_versions(),
    }
    return write_sidecar(engine_path, details)


def execute(context: Any, input_name: str, images: Any, outputs: dict[str, Any], stream: int) -> dict[str, Any]:
    """Enqueue one inference on ``stream``: bind ``images`` and a fresh tensor per output (on the
    images' device, shaped as the context resolves it for this batch) by address, no copies.

    The returned tensors are valid once ``stream`` has run this far (``.cpu()`` or a later kernel
    on the same stream waits for it); torch's caching allocator reuses their memory only for work
    queued after this on the stream, so nothing is freed under the running engine."""
    if not context.set_input_shape(input_name, tuple(images.shape)):
        raise SwinTrtError(f"input shape {tuple(images.shape)} does not fit the engine's optimisation profile")
    results = {name: torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=images.device) for name, dtype in outputs.items()}
    context.set_tensor_address(input_name, images.data_ptr())
    for name, tensor in results.items():
        context.set_tensor_address(name, tensor.data_ptr())
    if not context.execute_async_v3(stream):
        raise SwinTrtError("TensorRT could not enqueue the inference (execute_async_v3 returned False; its log says why)")
    return results


class Execution:
    """A deserialized plan with one execution context: its input, its outputs (name -> torch
    dtype, as many as the plan has: one for an engine, one per exposed tensor for a debug
    engine), the batch range of its profile, and its own CUDA stream (``stream``) on the current
    device.

    ``run`` enqueues on that stream and hands the outputs to the caller's current stream: the
    engine's stream first waits for the caller's (the images were produced there), the caller's
    then waits for the engine's, and the outputs are marked as used by the caller's stream (the
    caching allocator must not give their memory to the engine's next run while the caller still
    reads it). Called with the engine's own stream current (the timing loop, which produces its
    inputs there), nothing waits on anything."""

    def __init__(self, plan: bytes, label: str | Path):
        trt = require_tensorrt()
        gpu_name, capability = require_cuda()
        self.label = label
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise SwinTrtError(f"{label}: TensorRT {trt.__version__} cannot deserialize it on {gpu_name} (compute capability {capability}); "
                               "it was built by another TensorRT version or for another GPU: rebuild it with `swin-trt build --backend tensorrt`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise SwinTrtError(f"{label}: expected one input (the image batch), found {inputs}")
        self.input_name = inputs[0]
        self.input_dtype = torch_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.outputs = {n: torch_dtype(self.engine.get_tensor_dtype(n)) for n in names if n != self.input_name}
        low, best, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.batch_range = (low[0], high[0])
        self.opt_shape = tuple(best)
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.stream = torch.cuda.Stream(self.device)

    def run(self, images) -> dict[str, Any]:
        """Every output for a batch given as a torch tensor (moved to this device and the input's
        type if needed: from a CUDA float32 batch nothing is copied), usable on the caller's
        current stream."""
        check_batch(images.shape[0], *self.batch_range, self.label)
        consumer = torch.cuda.current_stream(self.device)
        handover = consumer != self.stream
        if handover:
            self.stream.wait_stream(consumer)
        with torch.cuda.stream(self.stream):
            images = images.to(device=self.device, dtype=self.input_dtype).contiguous()
            outputs = execute(self.context, self.input_name, images, self.outputs, self.stream.cuda_stream)
        if handover:
            consumer.wait_stream(self.stream)
            for tensor in outputs.values():
                tensor.record_stream(consumer)
        return outputs


class Engine:
    """A built engine (one input, one output), run on its execution context's own CUDA stream
    (``stream``; see :class:`Execution`).

    ``run`` takes and returns torch CUDA tensors (the CUDA evaluator's path: the parity gate feeds
    it batches already on the GPU); ``__call__`` takes a numpy batch and returns numpy logits, as
    every backend does.
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
        self.execution = Execution(engine_path.read_bytes(), engine_path)
        if len(self.execution.outputs) != 1:
            raise SwinTrtError(f"{engine_path}: expected one output (the logits), found {list(self.execution.outputs)}")
        self.output_name = next(iter(self.execution.outputs))
        self.opt_shape = self.execution.opt_shape
        self.batch_range = self.execution.batch_range
        self.device = self.execution.device
        self.stream = self.execution.stream

    def run(self, images):
        """Logits (a torch tensor on this engine's GPU, in the engine's output type) for a batch
        given as a torch tensor."""
        return self.execution.run(images)[self.output_name]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return self.run(batch).float().cpu().numpy()  # .cpu() waits for the stream

    def layer_information(self) -> dict[str, Any]:
        """The engine inspector's JSON for every layer, shapes resolved at the profile's opt batch."""
        trt = require_tensorrt()
        execution = self.execution
        execution.context.set_input_shape(execution.input_name, execution.opt_shape)
        inspector = execution.engine.create_engine_inspector()
        inspector.execution_context = execution.context
        return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def outputs_to_mark(names: list[str], graph_outputs: list[str]) -> list[str]:
    """The tensors a debug engine marks as outputs: the ``names`` to expose, then the graph's own
    outputs (kept, so the network still computes everything the engine does), each once.
    Polygraphy's ``ModifyNetworkOutputs`` unmarks every output it is not given."""
    return list(dict.fromkeys([*names, *graph_outputs]))


def host_arrays(outputs: dict[str, Any], names: list[str]) -> dict[str, np.ndarray]:
    """``{name: float32 numpy array}`` for ``names``, in that order, from a run's device tensors
    (FP16 tensors of an FP16 graph widen exactly)."""
    return {name: outputs[name].float().cpu().numpy() for name in names}


def intermediate_outputs(onnx_path: str | Path, names: list[str], details: dict[str, Any]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A runner of the engine's source graph with the tensors ``names`` exposed: a debug engine
    built as the engine was (strongly typed, its builder settings from ``details``, its batch
    profile from 1), with those tensors marked as network outputs.

    Marking a tensor as an output keeps it in memory in its own type, so TensorRT cannot fuse
    across it: an exposed DequantizeLinear is no longer folded into its GEMM, and the GEMM runs on
    dequantized FP16 values. Like onnxruntime's, this runner therefore checks the graph's own
    arithmetic (scales, placement, recipe), not the engine's fused INT8 kernels; the engine's
    logits are compared separately."""
    onnx_path = Path(onnx_path)
    trt = require_tensorrt()
    require_cuda()
    input_name, dims = graph_input(onnx_path)
    graph_outputs = [output.name for output in onnx.load(str(onnx_path), load_external_data=False).graph.output]
    recorded = details.get("build") or {}
    dynamic = dims[0] is None  # then from batch 1 (localize runs a few images at a time) to the engine's own maximum
    shapes = profile_shapes(dims, 1 if dynamic else None, None, (recorded.get("max_shape") or [None])[0] if dynamic else None)
    network = polygraphy_trt.ModifyNetworkOutputs(
        polygraphy_trt.NetworkFromOnnxPath(str(onnx_path), strongly_typed=network_flags(trt)["strongly_typed"]), outputs=outputs_to_mark(names, graph_outputs))
    config = _builder_config(trt, input_name, shapes, recorded.get("timing_cache"), recorded.get("builder_optimization_level"), recorded.get("workspace_mib"))
    execution = Execution(_build_bytes(trt, network, config, onnx_path), f"{onnx_path} (debug engine)")

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        return host_arrays(execution.run(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))), names)

    return run
