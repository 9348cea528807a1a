"""What the report reads from a workdir: the ``--json`` files the commands write (recognised by
their file-name prefix, anywhere under the workdir), the calibrated checkpoints those name, and
the benchmark results.

=====================  =====================================  ===========================================
file name              written by                             keys used
=====================  =====================================  ===========================================
``train*.json``        ``swin-trt train --json``              top1 (the FP32 model)
``calibrate*.json``    ``swin-trt calibrate --json``          int8_mode, calibrator, weight_bits,
                                                              activation_bits, top1, checkpoint,
                                                              fallback_groups, fallback_drop
``qat*.json``          ``swin-trt qat --json``                top1, ptq_top1, fp_top1
``bench*.json``        ``swin-trt bench --json``              fp32_top1, fakequant_top1, engine_top1,
                                                              agreement, passed, rel_error_median,
                                                              rel_error_percentiles, the gate's
                                                              bounds, engine_backend, engine_mode,
                                                              sweep, machine
``sensitivity*.json``  ``swin-trt sensitivity --json``        everything (the bars)
benchmarks ``*.json``  ``benchmarks/*.py``                    images_per_s as {runtime: {batch: value}},
                                                              cpu (and gpu), fp32_peers
=====================  =====================================  ===========================================

The checkpoint a calibrate JSON names gives each activation quantizer's amax and the largest value
it saw (``quantization.observed_amax``, stored since the report needs it); a path relative to the
current folder that does not exist is also tried relative to the workdir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import

torch = lazy_import("torch")

KINDS = ("train", "calibrate", "qat", "bench", "sensitivity")
AMAX_KEY = ".amax"


@dataclass(frozen=True)
class Source:
    """One JSON file and what it holds; ``label`` is its path relative to the workdir (how the
    page names it, and what the tests match numbers against)."""

    path: Path
    label: str
    data: dict[str, Any]


@dataclass
class Sources:
    by_kind: dict[str, list[Source]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    benchmarks: list[Source] = field(default_factory=list)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SwinTrtError(f"{path}: cannot read it as JSON ({error}): remove or rewrite it") from None
    if not isinstance(data, dict):
        raise SwinTrtError(f"{path}: expected one JSON object, as every swin-trt --json writes")
    return data


def machine_label(data: dict[str, Any]) -> str:
    """The kind of machine a result file's speed figures hold for: a bench JSON's ``machine``, a
    benchmark's top-level ``cpu`` (and ``gpu``); files written before either say so."""
    machine = data.get("machine") or data
    if machine.get("gpu"):
        return f"GPU {machine['gpu']}"
    cpu = machine.get("cpu")
    if not isinstance(cpu, dict):
        return "machine not recorded"
    return f"{cpu.get('model', 'unknown CPU')} ({', '.join(cpu.get('flags') or []) or 'no AVX2'})"


def kind_of(path: Path) -> str | None:
    return next((kind for kind in KINDS if path.name.startswith(kind)), None)


def collect(workdir: Path, benchmarks: Path | None) -> Sources:
    sources = Sources()
    for path in sorted(workdir.rglob("*.json")):
        kind = kind_of(path)
        if kind is not None:
            sources.by_kind[kind].append(Source(path, path.relative_to(workdir).as_posix(), read_json(path)))
    if benchmarks is not None and benchmarks.is_dir():
        for path in sorted(benchmarks.rglob("*.json")):
            data = read_json(path)
            if isinstance(data.get("images_per_s"), dict):
                sources.benchmarks.append(Source(path, path.relative_to(benchmarks).as_posix(), data))
    return sources


def find_checkpoint(name: str, workdir: Path) -> Path | None:
    path = Path(name)
    for candidate in (path, workdir / path):
        if candidate.is_file():
            return candidate
    return None


def amax_against_observed(checkpoint: Path) -> list[dict[str, Any]]:
    """Every activation quantizer's amax and the largest |value| it saw during calibration, from a
    calibrated checkpoint (empty for one saved before ``observed_amax`` was recorded)."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    observed = payload.get("meta", {}).get("quantization", {}).get("observed_amax", {})
    state = payload.get("model", {})
    rows = []
    for name, seen in observed.items():
        amax = state.get(name + AMAX_KEY)
        if amax is not None and amax.numel() == 1 and seen > 0:
            rows.append({"quantizer": name, "amax": float(amax), "observed_max": float(seen)})
    return rows
