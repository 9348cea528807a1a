"""onnxruntime backend: build (optimise and save) and run a Q/DQ graph.

Two modes, because on x86 CPUs onnxruntime's fully fused integer kernels trade parity for
speed: ``fast`` (ORT_ENABLE_ALL: Q/DQ pairs fused into integer MatMuls) and ``exact``
(ORT_ENABLE_BASIC: Q/DQ stay explicit, float math between them, matching fake-quant PyTorch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from swin_trt.errors import SwinTrtError
from swin_trt.io import atomic_path, write_json
from swin_trt.lazy import lazy_import
from swin_trt.onnx.hashing import file_sha256
from swin_trt.provenance import package_versions
from swin_trt.runtimes import read_sidecar

ort = lazy_import("onnxruntime")

MODES = ("exact", "fast")


def session_options(mode: str, threads: int | None = None):
    if mode not in MODES:
        raise SwinTrtError(f"unknown --ort-mode {mode!r}; choose {' or '.join(MODES)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if mode == "fast" else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    if threads:
        options.intra_op_num_threads = threads
    return options


def providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def build(onnx_path: str | Path, engine_path: str | Path, mode: str) -> dict[str, Any]:
    """Optimise ``onnx_path`` for this machine and save it to ``engine_path`` with a sidecar."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise SwinTrtError(f"ONNX file not found: {onnx_path} (make one with `swin-trt export`)")
    with atomic_path(engine_path) as tmp:
        options = session_options(mode)
        options.optimized_model_filepath = str(tmp)
        try:
            ort.InferenceSession(str(onnx_path), options, providers=providers())
        except Exception as error:  # onnxruntime raises its own Fail / InvalidGraph types
            raise SwinTrtError(f"{onnx_path}: onnxruntime cannot load it ({str(error).splitlines()[0]})") from None
    source = read_sidecar(onnx_path) or {}
    details = {
        "engine": str(engine_path),
        "backend": "onnxruntime",
        "ort_mode": mode,
        "providers": providers(),
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": file_sha256(onnx_path),
        "int8_mode": source.get("int8_mode"),
        "model": source.get("model"),
        "versions": package_versions(),
    }
    write_json(engine_path.with_suffix(".json"), details)
    return details


class Engine:
    """Runs a built engine (the sidecar says how it was optimised)."""

    def __init__(self, engine_path: str | Path, threads: int | None = None):
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise SwinTrtError(f"engine not found: {engine_path} (make one with `swin-trt build`)")
        self.details = read_sidecar(engine_path) or {"ort_mode": "exact"}
        options = session_options(self.details.get("ort_mode", "exact"), threads)
        self.session = ort.InferenceSession(str(engine_path), options, providers=providers())
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
