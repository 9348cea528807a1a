"""``swin-trt build --backend auto`` (the default): which CPU backend builds the engine, and why.

Candidates are the backends whose engines hold the default parity gate by construction, because
they compute what the graph says:

- onnxruntime, always: its ``--ort-mode auto`` computes the graph's integers exactly on every
  x86 CPU with AVX2 (``docs/cpu.md``);
- OpenVINO, where installed, for graphs without Q/DQ (FP32 or FP16 graphs: its non-quantized
  layers run in FP32, the precision hint pinned). Not for quantized graphs: its int8 kernels do
  not compute the graph's integers (r median 0.05-0.29 from fake-quant on the AVX-512 VNNI EPYC;
  int16 saturation on AVX2 without VNNI, where its right pairings fail the gate:
  ``docs/parity.md``), so whether its engine holds the gate depends on the model, which a build
  from a graph alone cannot check. ``--backend openvino`` builds it on request, and ``bench``
  gates it like any engine.

TensorRT is never chosen: it needs a GPU and a graph exported with ``--target tensorrt``.

With one candidate the choice is made without measuring. With two, each is built into a scratch
folder beside the output and timed at batch 1 on this machine (interleaved repeats, the median of
each: the machine's noise hits both alike); the faster engine is moved into place, its sidecar
recording ``backend_requested`` and ``backend_reason`` with both figures.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swin_trt.io import write_sidecar
from swin_trt.lazy import lazy_import
from swin_trt.runtimes import backend_module, has_qdq

np = lazy_import("numpy")
onnx_graph = lazy_import("swin_trt.onnx.graph")

REPEATS = 3
REPEAT_SECONDS = 0.3


@dataclass(frozen=True)
class Candidates:
    backends: tuple[str, ...]  # onnxruntime first
    excluded: str  # why OpenVINO is not among them ("" when it is)


def candidates(onnx_path: str | Path, openvino_installed: bool) -> Candidates:
    """The backends ``--backend auto`` chooses among for this graph (see the module docstring)."""
    if not openvino_installed:
        return Candidates(("onnxruntime",), "OpenVINO is not installed")
    if has_qdq(onnx_path):
        return Candidates(("onnxruntime",), "OpenVINO's int8 kernels do not compute the graph's integers, so its engine holds the gate "
                                            "only where measured per model (docs/parity.md); build it with --backend openvino to try")
    return Candidates(("onnxruntime", "openvino"), "")


def images_per_second(engines: dict[str, Any], shape: tuple[int, ...]) -> dict[str, float]:
    """Median images/s of each ``engine(batch)`` at batch 1, timed by duration in interleaved repeats."""
    batch = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    for engine in engines.values():  # warm-up: lazy kernel selection, allocations
        engine(batch)
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(REPEATS):
        for name, engine in engines.items():
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < REPEAT_SECONDS:
                engine(batch)
                calls += 1
            rates[name].append(calls / elapsed)
    return {name: statistics.median(values) for name, values in rates.items()}


def input_shape(onnx_path: str | Path) -> tuple[int, ...]:
    """The graph input's shape without its (dynamic) batch dimension."""
    dims = onnx_graph.read_model(onnx_path).graph.input[0].type.tensor_type.shape.dim[1:]
    return tuple(int(dim.dim_value) for dim in dims)


def build_fastest(onnx_path: Path, output_for: dict[str, Path], build: dict[str, Any], openvino_installed: bool) -> dict[str, Any]:
    """Build the engine ``--backend auto`` chooses; returns its sidecar record.

    ``output_for[backend]``: where that backend's engine goes; ``build[backend](onnx, engine)``
    builds one and returns its details."""
    found = candidates(onnx_path, openvino_installed)
    if len(found.backends) == 1:
        backend = found.backends[0]
        return _record(build[backend](onnx_path, output_for[backend]), output_for[backend], f"{backend}, the only candidate: {found.excluded}")
    folder = output_for[found.backends[0]].parent
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".auto-") as scratch:
        built = {backend: build[backend](onnx_path, Path(scratch) / f"{backend}-{output_for[backend].name}") for backend in found.backends}
        engines = {backend: backend_module(backend).Engine(details["engine"]) for backend, details in built.items()}
        rates = images_per_second(engines, input_shape(onnx_path))
        del engines  # sessions hold the scratch files open
        backend = max(rates, key=rates.get)
        figures = ", ".join(f"{name} {rate:.1f}" for name, rate in sorted(rates.items(), key=lambda item: -item[1]))
        reason = f"{backend}, the faster at batch 1 on this machine (images/s, median of {REPEATS} interleaved repeats at build time: {figures})"
        output = output_for[backend]
        os.replace(built[backend]["engine"], output)
        return _record(built[backend], output, reason)


def _record(details: dict[str, Any], output: Path, reason: str) -> dict[str, Any]:
    """The chosen engine's sidecar, rewritten where it now lies with why it was chosen."""
    record = {key: value for key, value in details.items() if key not in ("sha256", "bytes")}
    return write_sidecar(output, {**record, "engine": str(output), "backend_requested": "auto", "backend_reason": reason})
