"""Does an engine come from the reference it is benched against?

The chain: the engine's bytes -> its sidecar (``sha256``: the sidecar describes this file and no
other) -> ``source_onnx``, ``source_onnx_sha256`` -> the ONNX file, whose SHA-256 must still be the
one the engine was built from (a graph re-exported in place breaks the chain) and the one its own
sidecar records -> that sidecar's ``source_sha256`` -> the SHA-256 of ``--reference``. A missing
sidecar or hash anywhere makes the engine foreign: a gate that compares an engine with a model it
was not made from can pass for the wrong reasons (another recipe's engine agrees on 99+ % of an
easy dataset's images). An engine file whose bytes are not the ones its sidecar records is refused
outright (:class:`EngineBytesError`, even with ``--allow-foreign-engine``): the sidecar's backend,
mode and source then describe some other file, so nothing it says can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swin_trt.errors import SwinTrtError
from swin_trt.io import read_sidecar, sidecar_path
from swin_trt.onnx.hashing import file_sha256


class ForeignEngineError(SwinTrtError):
    """The engine's provenance chain does not end at the reference."""


class EngineBytesError(SwinTrtError):
    """The engine file is not the file its sidecar describes."""


@dataclass(frozen=True)
class Provenance:
    broken_link: str | None  # None: verified
    onnx: Path | None  # the engine's source graph, when it was found with the SHA-256 the engine was built from
    onnx_details: dict[str, Any] | None = None  # that graph's sidecar, when it describes the graph (its recorded SHA-256 matches)

    @property
    def verified(self) -> bool:
        return self.broken_link is None

    @property
    def label(self) -> str:
        """``verified`` or ``foreign: <the broken link>`` (the report's and the JSON's wording)."""
        return "verified" if self.verified else f"foreign: {self.broken_link}"


def _short(digest: str | None) -> str:
    return (digest or "none")[:12]


def check_engine_bytes(engine: str | Path, details: dict[str, Any]) -> str | None:
    """Re-hash ``engine`` against its sidecar ``details``: raises :class:`EngineBytesError` on a
    mismatch; returns the broken link when the sidecar records no hash (written before 0.2)."""
    engine = Path(engine)
    recorded = details.get("sha256")
    if not recorded:
        return f"engine sidecar {sidecar_path(engine)} records no SHA-256 of the engine (written before swin-trt 0.2): rebuild the engine"
    actual = file_sha256(engine)
    if actual != recorded:
        raise EngineBytesError(f"{engine} is not the engine its sidecar {sidecar_path(engine).name} describes (SHA-256 {_short(actual)}, "
                               f"{engine.stat().st_size} bytes; the sidecar records {_short(recorded)}, {details.get('bytes')} bytes): "
                               "rebuild it with `swin-trt build`")
    return None


def trace(engine: str | Path, reference: str | Path, onnx: str | Path | None = None) -> Provenance:
    """Follow the chain from ``engine`` to ``reference``; ``onnx`` overrides the graph path the
    engine sidecar records (e.g. after moving the files), but must still have its SHA-256."""
    engine, reference = Path(engine), Path(reference)
    if not reference.is_file():
        raise SwinTrtError(f"--reference {reference} not found: pass the calibrated checkpoint the engine was exported from")
    details = read_sidecar(engine)
    if details is None:
        return Provenance(f"engine {engine} has no sidecar ({sidecar_path(engine).name}): it was not built by `swin-trt build`", None)
    unbound = check_engine_bytes(engine, details)
    if unbound:
        return Provenance(unbound, None)
    recorded, recorded_sha = details.get("source_onnx"), details.get("source_onnx_sha256")
    if not recorded or not recorded_sha:
        return Provenance(f"engine sidecar {sidecar_path(engine)} names no source ONNX and SHA-256: rebuild the engine", None)
    graph = Path(onnx) if onnx is not None else Path(recorded)
    if not graph.is_file():
        return Provenance(f"the engine's source ONNX {graph} is not there (moved or deleted): pass --onnx", None)
    graph_sha = file_sha256(graph)
    if graph_sha != recorded_sha:
        return Provenance(f"{graph} is not the graph the engine was built from (SHA-256 {_short(graph_sha)}, "
                          f"engine sidecar says {_short(recorded_sha)}): rebuild the engine", None)
    exported = read_sidecar(graph)
    if exported is None:
        return Provenance(f"the engine's source ONNX {graph} has no sidecar ({sidecar_path(graph).name}): it was not made by `swin-trt export`", graph)
    if exported.get("sha256") != graph_sha:
        return Provenance(f"the sidecar of {graph} records SHA-256 {_short(exported.get('sha256'))}, the graph is {_short(graph_sha)}: "
                          "it describes another graph (re-export)", graph)
    source_sha, reference_sha = exported.get("source_sha256"), file_sha256(reference)
    if source_sha != reference_sha:
        source = exported.get("source_checkpoint") or "an unrecorded checkpoint"
        return Provenance(f"{graph} was exported from {source} (SHA-256 {_short(source_sha)}), not from --reference {reference} "
                          f"(SHA-256 {_short(reference_sha)})", graph, exported)
    return Provenance(None, graph, exported)


def require(provenance: Provenance) -> None:
    """Refuse a foreign engine in one line (``--allow-foreign-engine`` skips this)."""
    if not provenance.verified:
        raise ForeignEngineError(f"foreign engine: {provenance.broken_link} (--allow-foreign-engine compares anyway)")
