"""Does an engine come from the reference it is benched against?

The chain: engine sidecar (``source_onnx``, ``source_onnx_sha256``) -> the ONNX file, whose
SHA-256 must still be the one the engine was built from (a graph re-exported in place breaks the
chain) -> the ONNX sidecar (``source_sha256``) -> the SHA-256 of ``--reference``. A missing
sidecar anywhere makes the engine foreign: a gate that compares an engine with a model it was
not made from can pass for the wrong reasons (another recipe's engine agrees on 99+ % of an easy
dataset's images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swin_trt.errors import SwinTrtError
from swin_trt.io import read_sidecar
from swin_trt.onnx.hashing import file_sha256


class ForeignEngineError(SwinTrtError):
    """The engine's provenance chain does not end at the reference."""


@dataclass(frozen=True)
class Provenance:
    broken_link: str | None  # None: verified
    onnx: Path | None  # the engine's source graph, when it was found unchanged

    @property
    def verified(self) -> bool:
        return self.broken_link is None

    @property
    def label(self) -> str:
        """``verified`` or ``foreign: <the broken link>`` (the report's and the JSON's wording)."""
        return "verified" if self.verified else f"foreign: {self.broken_link}"


def _short(digest: str | None) -> str:
    return (digest or "none")[:12]


def trace(engine: str | Path, reference: str | Path, onnx: str | Path | None = None) -> Provenance:
    """Follow the chain from ``engine`` to ``reference``; ``onnx`` overrides the graph path the
    engine sidecar records (e.g. after moving the files), but must still have its SHA-256."""
    engine, reference = Path(engine), Path(reference)
    if not reference.is_file():
        raise SwinTrtError(f"--reference {reference} not found: pass the calibrated checkpoint the engine was exported from")
    details = read_sidecar(engine)
    if details is None:
        return Provenance(f"engine {engine} has no sidecar ({engine.with_suffix('.json').name}): it was not built by `swin-trt build`", None)
    recorded, recorded_sha = details.get("source_onnx"), details.get("source_onnx_sha256")
    if not recorded or not recorded_sha:
        return Provenance(f"engine sidecar {engine.with_suffix('.json')} names no source ONNX and SHA-256: rebuild the engine", None)
    graph = Path(onnx) if onnx is not None else Path(recorded)
    if not graph.is_file():
        return Provenance(f"the engine's source ONNX {graph} is not there (moved or deleted): pass --onnx", None)
    graph_sha = file_sha256(graph)
    if graph_sha != recorded_sha:
        return Provenance(f"{graph} is not the graph the engine was built from (SHA-256 {_short(graph_sha)}, "
                          f"engine sidecar says {_short(recorded_sha)}): rebuild the engine", None)
    exported = read_sidecar(graph)
    if exported is None:
        return Provenance(f"the engine's source ONNX {graph} has no sidecar ({graph.with_suffix('.json').name}): it was not made by `swin-trt export`", graph)
    source_sha, reference_sha = exported.get("source_sha256"), file_sha256(reference)
    if source_sha != reference_sha:
        source = exported.get("source_checkpoint") or "an unrecorded checkpoint"
        return Provenance(f"{graph} was exported from {source} (SHA-256 {_short(source_sha)}), not from --reference {reference} "
                          f"(SHA-256 {_short(reference_sha)})", graph)
    return Provenance(None, graph)


def require(provenance: Provenance) -> None:
    """Refuse a foreign engine in one line (``--allow-foreign-engine`` skips this)."""
    if not provenance.verified:
        raise ForeignEngineError(f"foreign engine: {provenance.broken_link} (--allow-foreign-engine compares anyway)")
