"""Inference backends for exported graphs, one module each, chosen by name.

A backend module provides ``build(onnx_path, engine_path, **options) -> sidecar dict`` and an
``Engine`` class (``Engine(path)``, ``engine(images: np.ndarray) -> logits``, ``.details``).
Engines are opened by the ``backend`` their sidecar records, so adding a runtime is one module
here and one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from swin_trt.errors import SwinTrtError

BACKENDS: dict[str, str] = {
    "onnxruntime": "swin_trt.runtimes.onnxruntime",
    "tensorrt": "swin_trt.runtimes.tensorrt",
}


def backend_module(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise SwinTrtError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The JSON sidecar beside an exported graph or a built engine, or None when there is none."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as error:
        raise SwinTrtError(f"{sidecar}: not valid JSON ({error.msg} at line {error.lineno}): rebuild the engine") from None


def open_engine(engine_path: str | Path) -> Any:
    """The runtime for a built engine, by its sidecar's backend."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise SwinTrtError(f"engine not found: {engine_path} (make one with `swin-trt build`)")
    details = read_sidecar(engine_path) or {}
    backend = details.get("backend") or ("tensorrt" if engine_path.suffix in (".plan", ".engine") else "onnxruntime")
    return backend_module(backend).Engine(engine_path)
