"""Stage ``bench``: the deployed engine against its reference. The parity gate's orchestration:
provenance, the references and the engine over val, graph conformance, the verdict, and
optionally per-layer localisation and a latency sweep. The pieces live in :mod:`swin_trt.parity`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from swin_trt.api import open_model
from swin_trt.cpu import read_cpu
from swin_trt.data.datasets import build_dataset
from swin_trt.data.device_transforms import Normalize, uint8_eval_transform
from swin_trt.data.loader import build_loader
from swin_trt.distributed import DistContext
from swin_trt.errors import SwinTrtError
from swin_trt.float32 import exact_float32
from swin_trt.io import sidecar_path
from swin_trt.lazy import lazy_import
from swin_trt.parity.compare import ParityReport, compare
from swin_trt.parity.conformance import graph_differences
from swin_trt.parity.gate import DEFAULT_MAX_REL_ERROR, FAMILY_PRECISION, Bounds, Verdict, bound_family, default_bounds, judge
from swin_trt.parity.localize import Localization, localize
from swin_trt.parity.provenance import Provenance, require, trace
from swin_trt.pipelines.export import ExportSettings, exported_onnx
from swin_trt.quantization.model import set_scale_dtype
from swin_trt.runtimes import open_engine
from swin_trt.runtimes.timing import SweepPoint, check_batches, sweep
from swin_trt.versions import package_versions

onnx_graph = lazy_import("swin_trt.onnx.graph")


@dataclass(frozen=True)
class BenchOutcome:
    report: ParityReport
    engine: Any
    provenance: Provenance
    verdict: Verdict
    localization: Localization | None
    bounds: Bounds | None  # None: --no-gate
    precision: str  # the bound family of the engine's graph (its own tensor types), which chose the default bounds; "unknown" without a graph
    device: torch.device  # where the references ran
    graph_mismatches: list[str] | None  # where the engine's graph differs from a fresh export of the reference (None: no graph to compare)
    sweep: list[SweepPoint] | None = None
    baseline_sweep: list[SweepPoint] | None = None  # the FP16 (or FP32) engine of the same model


def engine_machine(engine: Any) -> dict[str, Any]:
    """Where the engine ran, for its speed figures: the CPU always, the GPU's name for a CUDA engine
    (a report never puts figures of two kinds of machine in one series)."""
    device = engine.device
    return {"cpu": read_cpu().as_json(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def bench_device(name: str, engine: Any) -> torch.device:
    """Where the references run: ``auto`` is where the engine computes (the GPU for TensorRT, so
    its inputs and logits stay there), otherwise as given."""
    if name == "auto":
        return engine.device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SwinTrtError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SwinTrtError(f"--device {name}: no CUDA GPU is visible to torch (use --device cpu or auto)")
    return device


def _checked_engine(engine_path: str | Path, reference: str | Path, onnx_path: str | Path | None, allow_foreign: bool) -> tuple[Provenance, Any]:
    provenance = trace(engine_path, reference, onnx_path)
    if not allow_foreign:
        require(provenance)
    return provenance, open_engine(engine_path)


def graph_family(graph: Any, graph_path: Path, claims: dict[str, str | None]) -> str:
    """The bound family from the graph's own tensor types; a sidecar claiming another precision
    (``claims``: {which sidecar: its ``precision``}) is refused."""
    family = bound_family(*onnx_graph.tensor_types(graph))
    computes_in = FAMILY_PRECISION[family]  # an FP8 family's graph computes in float32 outside its Q/DQ
    for where, claim in claims.items():
        if claim is not None and claim != computes_in:
            raise SwinTrtError(f"{where} says precision {claim!r}, but the graph {graph_path} computes in {computes_in} (its own tensor types): "
                               "a sidecar contradicting its graph is refused; rebuild the engine from an untouched export")
    return family


def check_graph(graph: Any, details: dict[str, Any], reference: str | Path) -> list[str]:
    """The complete graph check: ``graph`` (the engine's source graph) against a fresh in-memory
    export of ``reference`` with the settings its sidecar ``details`` records; one line per
    difference (:func:`swin_trt.parity.conformance.graph_differences`)."""
    settings = ExportSettings.from_sidecar(details)
    try:
        fresh, _ = exported_onnx(reference, settings)
    except SwinTrtError as error:
        return [f"--reference cannot be exported with the graph's settings ({error})"]
    found = graph_differences(graph, fresh)
    recorded, current = details.get("versions") or {}, package_versions()
    changed = [f"{name} {recorded[name]} (now {current.get(name)})" for name in ("torch", "onnx") if name in recorded and recorded[name] != current.get(name)]
    if found and changed:
        found.append(f"note: the graph was exported with {', '.join(changed)}: a different exporter writes a different graph; "
                     "bench with the versions the graph was exported with")
    return found


def bench_engine(
    reference: str | Path,
    engine_path: str | Path,
    data_path: str | Path,
    use_zip: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    max_batches: int | None = None,
    gate: bool = True,
    bound_overrides: dict[str, float | None] | None = None,
    onnx_path: str | Path | None = None,
    allow_foreign: bool = False,
    localize_images: int = 0,
    device: str = "auto",
    sweep_batches: tuple[int, ...] | None = None,
    baseline_engine: str | Path | None = None,
) -> BenchOutcome:
    """The parity gate: check that the engine's bytes are the ones its sidecar describes and that
    it comes from ``reference`` (refused otherwise unless ``allow_foreign``), choose the bound
    family from the source graph's own tensor types, compare that graph with a fresh export of
    ``reference``, run FP32, the fake-quant reference and the engine over val on ``device``, and
    judge the report against the family's default bounds with ``bound_overrides`` applied
    (``gate=False``: report only); with ``localize_images``, compare the engine's source graph
    layer by layer on that many val images. ``sweep_batches`` also times the engine (and
    ``baseline_engine``, e.g. the FP16 engine of the same model) at those batch sizes."""

    if onnx_path is not None:
        onnx_graph.read_model(onnx_path, "--onnx")  # a corrupt --onnx is named as such, not as a hash mismatch
    provenance, engine = _checked_engine(engine_path, reference, onnx_path, allow_foreign)
    graph_path = provenance.onnx
    if localize_images and graph_path is None:
        raise SwinTrtError(f"--localize needs the engine's source graph and the chain does not reach it ({provenance.broken_link}): pass --onnx")
    baseline = _checked_engine(baseline_engine, reference, None, allow_foreign)[1] if baseline_engine is not None else None
    loaded = open_model(checkpoint=reference)
    if not loaded.quantized:
        raise SwinTrtError(f"{reference} is not a calibrated checkpoint: the reference must be the fake-quant model the engine came from")
    graph = onnx_graph.read_model(graph_path, "the engine's source graph") if graph_path is not None else None
    precision = "unknown"
    if graph is not None:
        claims = {f"the engine sidecar {sidecar_path(engine_path)}": engine.details.get("precision")}
        if provenance.onnx_details is not None:
            claims[f"the graph's sidecar {sidecar_path(graph_path)}"] = provenance.onnx_details.get("precision")
        precision = graph_family(graph, graph_path, claims)
    if precision == "fp16":
        set_scale_dtype(loaded.model, torch.float16)  # the engine's graph holds float16 scales: so does its reference
    bounds = replace(default_bounds("fp32" if precision == "unknown" else precision), **(bound_overrides or {})) if gate else None
    where = bench_device(device, engine)
    config = loaded.model.swin_trt_config
    image_shape = (config.in_chans, config.img_size, config.img_size)
    if sweep_batches:  # refuse a batch outside an engine's profile before the long part
        for checked, label in ((engine, str(engine_path)), (baseline, str(baseline_engine))):
            if checked is not None:
                check_batches(sweep_batches, checked.batch_range, label)
    dataset = build_dataset(data_path, "val", uint8_eval_transform(config.data), use_zip, config.num_classes)
    loader = build_loader(dataset, batch_size, DistContext(device=where), workers=workers)
    normalize = Normalize(config.data).to(where)
    graph_mismatches = check_graph(graph, provenance.onnx_details, reference) if graph is not None and provenance.onnx_details is not None else None
    report = compare(loaded.fp_model(), loaded.model, engine, loader, max_batches, where, normalize)
    localization = None
    if localize_images:
        images = normalize(torch.stack([dataset[i][0] for i in range(min(localize_images, len(dataset)))]))
        with exact_float32():
            localization = localize(loaded.model, engine, graph_path, images, bounds.max_rel_error if bounds and bounds.max_rel_error is not None else DEFAULT_MAX_REL_ERROR,
                                    (provenance.onnx_details or {}).get("hoisted_transposes") or {})
    sweeps = [sweep(timed, image_shape, sweep_batches, label=str(path)) if timed is not None and sweep_batches else None
              for timed, path in ((engine, engine_path), (baseline, baseline_engine))]
    return BenchOutcome(report, engine, provenance, judge(report, bounds, graph_mismatches), localization, bounds, precision, where, graph_mismatches, *sweeps)
