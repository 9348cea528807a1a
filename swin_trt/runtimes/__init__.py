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
from swin_trt.io import read_sidecar, sidecar_path
from swin_trt.lazy import lazy_import
from swin_trt.onnx.hashing import file_sha256

onnx = lazy_import("onnx")

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


def has_qdq(onnx_path: str | Path) -> bool:
    """Whether the graph quantizes anything: its sidecar's ``q_nodes`` where it has one, else its nodes
    (read without external data: the weights are not needed to see the QuantizeLinear nodes)."""
    graph = read_sidecar(onnx_path) or {}
    if "q_nodes" in graph:
        return graph["q_nodes"] > 0
    return any(node.op_type == "QuantizeLinear" for node in onnx.load(str(onnx_path), load_external_data=False).graph.node)


ARTIFACT_SUFFIXES = (".onnx", ".plan", ".engine", ".trt", ".blob")


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def sidecar_owner(path: str | Path) -> Path | None:
    """The artifact whose sidecar ``path`` is (``model.onnx.json`` of ``model.onnx``, or the
    name used before 0.2, ``model.json`` beside ``model.onnx``), when that artifact exists."""
    path = Path(path)
    if not path.name.endswith(".json"):
        return None
    owner = path.with_name(path.name[: -len(".json")])
    if owner.is_file():
        return owner
    return next((path.with_name(path.stem + suffix) for suffix in ARTIFACT_SUFFIXES if path.with_name(path.stem + suffix).is_file()), None)


def is_artifact(path: str | Path) -> bool:
    """An existing graph or engine: a file with a sidecar of its own, or an artifact suffix."""
    path = Path(path)
    return path.is_file() and (path.suffix in ARTIFACT_SUFFIXES or sidecar_path(path).is_file())


def check_engine_output(output: str | Path, source: str | Path) -> None:
    """Refuse an engine path whose writing would overwrite another artifact or its sidecar:
    the source graph itself, an exported graph, a ``.json`` name (a sidecar's), or a path whose
    sidecar (``<output>.json``) is some other file or the old-style sidecar of another artifact."""
    output, source = Path(output), Path(source)
    sidecar = sidecar_path(output)
    problem = None
    if _same(output, source):
        problem = "it is the --onnx graph itself"
    elif output.name.endswith(".json"):
        problem = f"an engine named .json would be taken for a sidecar{f' (it is the sidecar of {sidecar_owner(output)})' if sidecar_owner(output) else ''}"
    elif output.is_file() and "source_sha256" in (read_sidecar(output) or {}):
        problem = "it is an exported graph"
    elif sidecar.exists() and not output.is_file():
        problem = f"its sidecar path {sidecar} is already another file"
    elif sidecar_owner(sidecar) not in (None, output) and not _same(sidecar_owner(sidecar), output):
        problem = f"its sidecar {sidecar.name} would be read as the old-style sidecar of {sidecar_owner(sidecar)}"
    if problem:
        raise SwinTrtError(f"--output {output}: {problem}; choose another engine path")


def check_result_path(result: str | Path | None, artifacts: tuple[str | Path | None, ...]) -> None:
    """Refuse a ``--json`` path that is one of ``artifacts``, the sidecar of one, or any other
    existing artifact or sidecar: writing a command's JSON there would replace what the parity
    gate reads."""
    if result is None:
        return
    result = Path(result)
    named = [Path(a) for a in artifacts if a is not None]
    problem = None
    for artifact in named:
        if _same(result, artifact):
            problem = f"it is {artifact} itself"
        elif _same(result, sidecar_path(artifact)):
            problem = f"it is the sidecar of {artifact}"
        if problem:
            break
    else:
        if is_artifact(result):
            problem = "it is an exported graph or a built engine"
        elif sidecar_owner(result) is not None:
            problem = f"it is the sidecar of {sidecar_owner(result)}"
    if problem:
        raise SwinTrtError(f"--json {result}: {problem}; choose another path for the results")


def open_engine(engine_path: str | Path) -> Any:
    """The runtime for a built engine, by its sidecar's backend."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise SwinTrtError(f"engine not found: {engine_path} (make one with `swin-trt build`)")
    details = read_sidecar(engine_path) or {}
    backend = details.get("backend") or ("tensorrt" if engine_path.suffix in (".plan", ".engine") else "onnxruntime")
    return backend_module(backend).Engine(engine_path)
