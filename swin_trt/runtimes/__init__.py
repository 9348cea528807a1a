"""Inference backends for exported graphs, one module each, chosen by name.

A backend module provides:

- ``build(onnx_path, engine_path, **options) -> dict``: build an engine and write its JSON sidecar,
  which includes :func:`source_record` (the link back to the graph that the parity gate follows);
- ``Engine(path)``: ``engine(images: np.ndarray) -> logits`` (numpy), ``engine.run(images:
  torch.Tensor) -> logits`` (torch, on ``engine.device``, where the engine computes: the parity
  gate feeds it batches already there, so a GPU engine's I/O never passes through the host),
  ``.batch_range`` (smallest, largest batch or None) and the sidecar as ``.details``;
- ``intermediate_outputs(onnx_path, names, details) -> runner``: the engine's source graph run as
  the engine runs it (``details`` is its sidecar) with the named tensors exposed as outputs,
  ``runner(images) -> {name: float32 array}``; ``swin-trt bench --localize`` compares these layer
  by layer with the PyTorch reference.

Engines are opened by the ``backend`` their sidecar records, so adding a runtime is one module
here and one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from swin_trt.errors import SwinTrtError
from swin_trt.io import read_sidecar
from swin_trt.onnx.hashing import file_sha256

BACKENDS: dict[str, str] = {
    "onnxruntime": "swin_trt.runtimes.onnxruntime",
    "openvino": "swin_trt.runtimes.openvino",
    "tensorrt": "swin_trt.runtimes.tensorrt",
}


def backend_module(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise SwinTrtError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def source_record(onnx_path: str | Path) -> dict[str, Any]:
    """What every engine sidecar says about its source graph: where it is (absolute, so the
    engine can be benched from any folder), its SHA-256 (a graph re-exported in place breaks the
    chain), and what the graph's own sidecar says it is."""
    onnx_path = Path(onnx_path)
    graph = read_sidecar(onnx_path) or {}
    return {
        "source_onnx": str(onnx_path.resolve()),
        "source_onnx_sha256": file_sha256(onnx_path),
        "int8_mode": graph.get("int8_mode"),
        "model": graph.get("model"),
        "precision": graph.get("precision"),
    }


def open_engine(engine_path: str | Path) -> Any:
    """The runtime for a built engine, by its sidecar's backend."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise SwinTrtError(f"engine not found: {engine_path} (make one with `swin-trt build`)")
    details = read_sidecar(engine_path) or {}
    backend = details.get("backend") or ("tensorrt" if engine_path.suffix in (".plan", ".engine") else "onnxruntime")
    return backend_module(backend).Engine(engine_path)
