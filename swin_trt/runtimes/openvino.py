"""OpenVINO backend: compile a Q/DQ graph for the CPU, save the compiled blob, run it.

On the AVX-512 VNNI EPYC this project measures on, OpenVINO's INT8 run of the same Q/DQ graph is
the fastest CPU engine (``docs/cpu.md``, ``benchmarks/results/cpu_throughput/``); on an AVX2 CPU
without VNNI issue 10 reports it slower than its own FP32. So it is a backend to choose, not the
default. The non-quantized layers run in FP32 (``INFERENCE_PRECISION_HINT`` pinned: on CPUs with
bf16 or AMX OpenVINO's default would run them in bf16, a different numeric model from the FP32
fake-quant reference the parity gate compares with).

OpenVINO is an optional dependency (``pip install swin-trt[openvino]``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from swin_trt.cpu import read_cpu
from swin_trt.errors import SwinTrtError
from swin_trt.io import atomic_path, read_sidecar, write_sidecar
from swin_trt.lazy import lazy_import
from swin_trt.runtimes import source_record
from swin_trt.versions import package_versions

openvino = lazy_import("openvino")
torch = lazy_import("torch")
onnx = lazy_import("onnx")
onnx_graph = lazy_import("swin_trt.onnx.graph")

MISSING = "OpenVINO is not installed: pip install swin-trt[openvino] (or use --backend onnxruntime)"
# OpenVINO 2026.4 compiles FP8 (float8e4m3fn) QuantizeLinear but rounds 0.27 % of values of a random test tensor to the
# neighbouring FP8 number (ONNX: round to nearest even; docs/fp8.md), so its engine is not the graph the gate checks.
FP8_REFUSED = ("{onnx} has FP8 Q/DQ, which OpenVINO {version} does not round as ONNX QuantizeLinear defines (docs/fp8.md): "
               "use --backend onnxruntime (CPU) or tensorrt (GPU, compute capability 8.9+)")
DEVICE = "CPU"
PRECISION = "f32"


def require_openvino():
    try:
        return openvino.Core()
    except ImportError:
        raise SwinTrtError(MISSING) from None


def compile_config(threads: int | None = None) -> dict[str, Any]:
    """FP32 outside Q/DQ, latency-oriented (one request at a time, as bench and eval run it)."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISION, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def build(onnx_path: str | Path, engine_path: str | Path) -> dict[str, Any]:
    """Compile ``onnx_path`` for this CPU and save the compiled model to ``engine_path`` with a
    sidecar (source graph and its SHA-256, CPU, OpenVINO version)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SwinTrtError(f"ONNX file not found: {onnx_path} (make one with `swin-trt export`)")
    core = require_openvino()
    if "fp8" in onnx_graph.qdq_formats(onnx.load(str(onnx_path), load_external_data=False)):
        raise SwinTrtError(FP8_REFUSED.format(onnx=onnx_path, version=openvino.__version__))
    try:
        compiled = core.compile_model(str(onnx_path), DEVICE, compile_config())
    except RuntimeError as error:
        raise SwinTrtError(f"{onnx_path}: OpenVINO cannot compile it ({str(error).splitlines()[0]})") from None
    blob = compiled.export_model()  # a BytesIO in OpenVINO 2024+, bytes before
    with atomic_path(engine_path) as tmp:
        Path(tmp).write_bytes(blob.getvalue() if hasattr(blob, "getvalue") else blob)
    details = {
        "engine": str(engine_path),
        "backend": "openvino",
        "device": DEVICE,
        "inference_precision": PRECISION,
        "openvino_version": openvino.__version__,
        "cpu": read_cpu().as_json(),
        **source_record(onnx_path),
        "versions": {**package_versions(), "openvino": openvino.__version__},
    }
    return write_sidecar(engine_path, details)


class Engine:
    """Runs a compiled OpenVINO model on the CPU, any batch size."""

    batch_range = (1, None)

    def __init__(self, engine_path: str | Path, threads: int | None = None):
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise SwinTrtError(f"engine not found: {engine_path} (make one with `swin-trt build --backend openvino`)")
        self.details = read_sidecar(engine_path) or {}
        core = require_openvino()
        built_with = self.details.get("openvino_version")
        if built_with and built_with != openvino.__version__:
            raise SwinTrtError(f"{engine_path} was compiled by OpenVINO {built_with}, this is {openvino.__version__}: rebuild it with `swin-trt build --backend openvino`")
        self.compiled = core.import_model(engine_path.read_bytes(), DEVICE, compile_config(threads))
        self.request = self.compiled.create_infer_request()
        self.device = torch.device("cpu")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})[self.compiled.output(0)].copy()

    def run(self, images):
        """Logits as a CPU torch tensor for a torch batch on any device."""
        return torch.from_numpy(self(images.cpu().numpy()))


def intermediate_outputs(onnx_path: str | Path, names: list[str], details: dict[str, Any]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The source graph compiled as the engine was, with the tensors ``names`` added as outputs.
    Like onnxruntime, OpenVINO cannot fuse a Q/DQ pair away from a tensor it must return, so this
    measures the graph's own arithmetic, not the compiled kernels' rounding."""
    core = require_openvino()
    model = core.read_model(str(onnx_path))
    known = {name for op in model.get_ops() for output in op.outputs() for name in output.get_names()}
    missing = [name for name in names if name not in known]
    if missing:
        raise SwinTrtError(f"{onnx_path}: no tensor {missing[0]!r} to expose (re-export the graph with this version)")
    model.add_outputs(names)
    compiled = core.compile_model(model, DEVICE, compile_config())
    request = compiled.create_infer_request()
    ports = {name: next(port for port in compiled.outputs if name in port.get_names()) for name in names}

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        results = request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})
        return {name: np.asarray(results[port], dtype=np.float32) for name, port in ports.items()}

    return run
