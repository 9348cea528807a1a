"""Stage ``bench``: the deployed engine against its reference. The parity gate's orchestration:
provenance, the references and the engine over val, graph conformance, the verdict, and
optionally per-layer localisation and a latency sweep. The pieces live in :mod:`swin_trt.parity`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from swin_trt.api import open_model
from swin_trt.data.datasets import build_dataset
from swin_trt.data.device_transforms import Normalize, uint8_eval_transform
from swin_trt.data.loader import build_loader
from swin_trt.distributed import DistContext
from swin_trt.errors import SwinTrtError
from swin_trt.float32 import exact_float32
from swin_trt.io import read_sidecar
from swin_trt.parity.compare import ParityReport, compare
from swin_trt.parity.conformance import mismatches
from swin_trt.parity.gate import DEFAULT_MAX_REL_ERROR, Bounds, Verdict, default_bounds, judge
from swin_trt.parity.localize import Localization, localize
from swin_trt.parity.provenance import Provenance, require, trace
from swin_trt.quantization.model import set_scale_dtype
from swin_trt.runtimes import open_engine
from swin_trt.runtimes.timing import SweepPoint, check_batches, sweep


@dataclass(frozen=True)
class BenchOutcome:
    report: ParityReport
    engine: Any
    provenance: Provenance
    verdict: Verdict
    localization: Localization | None
    bounds: Bounds | None  # None: --no-gate
    precision: str  # of the engine's graph, which chose the default bounds
    device: torch.device  # where the references ran
    graph_mismatches: list[str] | None  # quantizers where the engine's graph is not the reference (None: no graph to compare)
    sweep: list[SweepPoint] | None = None
    baseline_sweep: list[SweepPoint] | None = None  # the FP16 (or FP32) engine of the same model


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
    """The parity gate: check that the engine comes from ``reference`` (refused otherwise unless
    ``allow_foreign``), run FP32, the fake-quant reference and the engine over val on ``device``,
    judge the report against the default bounds for the engine graph's precision with
    ``bound_overrides`` applied (``gate=False``: report only), and with ``localize_images`` compare
    the engine's source graph layer by layer on that many val images. ``sweep_batches`` also
    times the engine (and ``baseline_engine``, e.g. the FP16 engine of the same model) at those
    batch sizes."""

    provenance, engine = _checked_engine(engine_path, reference, onnx_path, allow_foreign)
    graph = Path(onnx_path) if onnx_path is not None else provenance.onnx
    if localize_images and graph is None:
        raise SwinTrtError(f"--localize needs the engine's source graph and the chain does not reach it ({provenance.broken_link}): pass --onnx")
    baseline = _checked_engine(baseline_engine, reference, None, allow_foreign)[1] if baseline_engine is not None else None
    loaded = open_model(checkpoint=reference)
    if not loaded.quantized:
        raise SwinTrtError(f"{reference} is not a calibrated checkpoint: the reference must be the fake-quant model the engine came from")
    source_path = graph if graph is not None else engine.details.get("source_onnx")
    source = (read_sidecar(source_path) if source_path else None) or {}
    if source.get("scale_dtype") == "float16":
        set_scale_dtype(loaded.model, torch.float16)  # the engine's graph holds float16 scales: so does its reference
    precision = engine.details.get("precision") or source.get("precision") or "fp32"
    bounds = replace(default_bounds(precision), **(bound_overrides or {})) if gate else None
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
    graph_mismatches = mismatches(loaded.model, graph) if graph is not None else None
    report = compare(loaded.fp_model(), loaded.model, engine, loader, max_batches, where, normalize)
    localization = None
    if localize_images:
        images = normalize(torch.stack([dataset[i][0] for i in range(min(localize_images, len(dataset)))]))
        with exact_float32():
            localization = localize(loaded.model, engine, graph, images, bounds.max_rel_error if bounds and bounds.max_rel_error is not None else DEFAULT_MAX_REL_ERROR)
    sweeps = [sweep(timed, image_shape, sweep_batches, label=str(path)) if timed is not None and sweep_batches else None
              for timed, path in ((engine, engine_path), (baseline, baseline_engine))]
    return BenchOutcome(report, engine, provenance, judge(report, bounds, graph_mismatches), localization, bounds, precision, where, graph_mismatches, *sweeps)
