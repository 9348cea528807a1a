"""Pipelines that chain the library's pieces; the CLI subcommands and the demo call these."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from swin_trt.api import check_architecture, load_model, open_model, resolve_config
from swin_trt.data.datasets import build_dataset, fingerprint
from swin_trt.data.device_transforms import Normalize, uint8_eval_transform
from swin_trt.data.loader import build_loader
from swin_trt.data.transforms import eval_transform, train_transform
from swin_trt.distributed import DistContext, barrier
from swin_trt.errors import SwinTrtError
from swin_trt.io import write_json
from swin_trt.lazy import lazy_import
from swin_trt.loops.evaluate import EvalResult, evaluate
from swin_trt.loops.train import fit
from swin_trt.models.checkpoint import load_state_dict, read_checkpoint, save_checkpoint
from swin_trt.models.config import ModelConfig
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config
from swin_trt.parity.compare import ParityReport, compare, exact_float32
from swin_trt.parity.conformance import mismatches
from swin_trt.parity.gate import DEFAULT_MAX_REL_ERROR, Bounds, Verdict, default_bounds, judge
from swin_trt.parity.localize import Localization, localize
from swin_trt.parity.provenance import Provenance, require, trace
from swin_trt.provenance import package_versions
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.model import quantize_model, set_precision, set_scale_dtype
from swin_trt.quantization.recipes import get_recipe
from swin_trt.runtimes import open_engine, read_sidecar
from swin_trt.runtimes.timing import SweepPoint, check_batches, sweep
from swin_trt.seeding import seed_all
from swin_trt.settings import CalibrationRequest, FallbackRequest, TrainRecipe

onnx_export = lazy_import("swin_trt.onnx.export")  # onnx and the exporter load only when exporting
onnx_graph = lazy_import("swin_trt.onnx.graph")
onnx_tensorrt = lazy_import("swin_trt.onnx.tensorrt")
sensitivity_workflow = lazy_import("swin_trt.sensitivity_workflow")


@dataclass(frozen=True)
class TrainOutcome:
    config: ModelConfig
    checkpoint: Path
    losses: list[float]
    result: EvalResult


def train_reference(
    model: str | None,
    cfg: str | Path | None,
    init_checkpoint: str | Path | None,
    data_path: str | Path,
    use_zip: bool,
    output_dir: str | Path,
    recipe: TrainRecipe,
    context: DistContext,
    workers: int = 2,
) -> TrainOutcome:
    """Train in FP32, evaluate on val, and save ``<output_dir>/<name>.pth`` (rank 0, atomically).

    The checkpoint's metadata records the config, the recipe, the data fingerprint and the
    package versions, so it can be loaded without ``--model`` and traced to what made it.
    """

    state, meta = read_checkpoint(init_checkpoint) if init_checkpoint else ({}, {})
    config = resolve_config(model, cfg, meta)
    train_set = build_dataset(data_path, "train", train_transform(config.data), use_zip, config.num_classes)
    val_set = build_dataset(data_path, "val", eval_transform(config.data), use_zip, config.num_classes)

    seed_all(recipe.seed)
    network = build_model(config)
    if init_checkpoint:
        check_architecture(config, meta, str(init_checkpoint))
        load_state_dict(network, state, source=str(init_checkpoint))
    seed_all(recipe.seed + context.rank)  # augmentation and drop-path differ per rank
    train_loader = build_loader(train_set, recipe.batch_size, context, train=True, workers=workers, seed=recipe.seed)
    losses = fit(network, train_loader, recipe, context)
    val_loader = build_loader(val_set, max(recipe.batch_size, 128), context, workers=0)
    result = evaluate(network, val_loader, context, description="val")

    checkpoint = Path(output_dir) / f"{config.name}.pth"
    if context.is_main:
        save_checkpoint(
            checkpoint,
            network,
            {
                "config": config.to_dict(),
                "recipe": recipe.as_dict(),
                "data_fingerprint": fingerprint(train_set),
                "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
                "val_top1": result.top1,
                "losses": losses,
                "versions": package_versions(),
            },
        )
    barrier(context)
    return TrainOutcome(config, checkpoint, losses, result)


def reuse_or_train(
    model: str,
    data_path: str | Path,
    output_dir: str | Path,
    recipe: TrainRecipe,
    context: DistContext,
    retrain: bool = False,
) -> tuple[TrainOutcome, bool]:
    """Train ``model`` unless ``<output_dir>/<model>.pth`` was made with the same config, recipe
    and data (then evaluate it again). Returns (outcome, reused)."""

    config = get_config(model)
    checkpoint = Path(output_dir) / f"{config.name}.pth"
    if checkpoint.is_file() and not retrain:
        _, meta = read_checkpoint(checkpoint)
        # compared as configs, not dicts: a checkpoint saved before a config field existed holds that field's default
        same = ("losses" in meta and "config" in meta and ModelConfig.from_dict(meta["config"]) == config and meta.get("recipe") == recipe.as_dict()
                and meta.get("data_fingerprint") == fingerprint(build_dataset(data_path, "train", None)))
        if same:
            result = evaluate_split(load_model(checkpoint=checkpoint), data_path, False, 128, context, workers=0)
            return TrainOutcome(config, checkpoint, list(meta["losses"]), result), True
    return train_reference(model, None, None, data_path, False, output_dir, recipe, context), False


@dataclass(frozen=True)
class CalibrationOutcome:
    model: torch.nn.Module
    checkpoint: Path
    images: int
    meta: dict
    fallback: Any = None  # swin_trt.quantization.fallback.Fallback with --auto-fallback


def calibrate_checkpoint(
    model: str | None,
    cfg: str | Path | None,
    checkpoint: str | Path,
    data_path: str | Path,
    use_zip: bool,
    request: CalibrationRequest,
    output_dir: str | Path,
    context: DistContext,
    workers: int = 2,
    fallback: FallbackRequest | None = None,
) -> CalibrationOutcome:
    """PTQ: quantize the FP model at the requested precision, collect statistics on exactly
    ``num_calib_batch`` batches of the train split, set amax, and save
    ``<output_dir>/<name>_calib.pth`` (rank 0, atomically; the precision is stored with the recipe).

    The largest value each activation quantizer saw is stored too (``observed_amax``), so a report
    can show where the calibrator clipped. With ``fallback``, the quantizer groups to keep in
    higher precision are chosen on held-out train images (every rank computes the same choice)
    and stored as ``quantization.disabled``."""

    recipe = get_recipe(request.int8_mode)
    loaded = open_model(model, cfg, checkpoint)
    if loaded.quantized:
        raise SwinTrtError(f"{checkpoint} is already calibrated: pass the FP checkpoint to --resume")
    network = loaded.model
    config = network.swin_trt_config
    transform = train_transform(config.data) if request.calib_transform == "train" else eval_transform(config.data)
    dataset = build_dataset(data_path, "train", transform, use_zip, config.num_classes)
    needed = request.num_calib_batch * request.calib_batchsz * context.world_size
    if needed > len(dataset):
        raise SwinTrtError(f"--num-calib-batch {request.num_calib_batch} x --calib-batchsz {request.calib_batchsz} needs {needed} images, the train split has {len(dataset)}")
    quantize_model(network, recipe, per_channel_weights=request.per_channel_weights)
    set_precision(network, request.weight_bits, request.activation_bits)  # before amax: entropy and mse depend on it
    network.to(context.device)
    seed_all(request.seed + context.rank)  # augmentation
    loader = build_loader(dataset, request.calib_batchsz, context, workers=workers, seed=request.seed, shuffle_once=True)
    histograms, images = collect_statistics(network, loader, request.num_calib_batch, context, request.histogram)
    load_calib_amax(network, histograms, request.calibrator, request.percentile)
    chosen = None
    if fallback is not None:
        held_out = build_dataset(data_path, "train", eval_transform(config.data), use_zip, config.num_classes)
        chosen = sensitivity_workflow.auto_fallback(network, held_out, needed, request.seed, fallback, workers, context.device)

    meta = {
        "config": config.to_dict(),
        "quantization": {
            **{k: v for k, v in request.__dict__.items() if k != "percentile" or request.calibrator == "percentile"},
            "int8_mode": recipe.name,
            "world_size": context.world_size,
            "images": images,
            "data_fingerprint": fingerprint(dataset),
            "source_checkpoint": str(checkpoint),
            "observed_amax": {name: float(histogram.max) for name, histogram in histograms.items()},
        },
        "versions": package_versions(),
    }
    if chosen is not None:
        meta["quantization"]["disabled"] = chosen.disabled
        meta["quantization"]["fallback"] = {
            **fallback.__dict__, "groups": [group.name for group in chosen.groups], "held_out_images": min(fallback.images, len(held_out) - needed),
            "fp32_top1": chosen.fp32_top1, "quant_top1": chosen.quant_top1, "top1": chosen.top1, "drop": chosen.drop, "evaluations": chosen.evaluations,
        }
    path = Path(output_dir) / f"{config.name}_calib.pth"
    if context.is_main:
        save_checkpoint(path, network, meta)
    barrier(context)
    return CalibrationOutcome(network.eval(), path, images, meta, chosen)


def evaluate_split(
    model: torch.nn.Module,
    data_path: str | Path,
    use_zip: bool,
    batch_size: int,
    context: DistContext,
    workers: int = 2,
    split: str = "val",
    max_batches: int | None = None,
) -> EvalResult:
    """Evaluate ``model`` (FP or fake-quant) on a split with its config's eval transform."""

    config = model.swin_trt_config
    dataset = build_dataset(data_path, split, eval_transform(config.data), use_zip, config.num_classes)
    loader = build_loader(dataset, batch_size, context, workers=workers)
    return evaluate(model.to(context.device), loader, context, max_batches, description=config.name)


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path | None,
    model: str | None = None,
    cfg: str | Path | None = None,
    int8_mode: str | None = None,
    weights: str | None = None,
    no_quant: bool = False,
    precision: str | None = None,
    target: str = "onnxruntime",
) -> dict:
    """Export a calibrated checkpoint (or its FP weights, or an FP checkpoint) to ONNX, with a
    JSON sidecar beside it; returns the sidecar. ``precision`` is that of the non-quantized
    parts (fp16 halves them; inputs and logits stay float32), and an fp16 graph's scales are
    float16, so the model rounds its scales the same way before export. ``target="tensorrt"``
    gives the graph TensorRT should get (``swin_trt.onnx.tensorrt``): fp16 and INT8 weights by
    default, and only for recipes without GEMM-output quantizers. Without ``output`` the graph goes
    to ``export/<model>_<int8-modeN or fp32>[_wXaY][_w8][_fp16][_trt].onnx`` (``_wXaY`` when a
    precision is below 8 bits)."""

    loaded = open_model(model, cfg, checkpoint, int8_mode)
    quantized = loaded.quantized and not no_quant
    weights = weights or ("int8" if target == "tensorrt" and quantized else "fp32")
    precision = precision or ("fp16" if target == "tensorrt" else "fp32")
    if weights == "int8" and not quantized:
        raise SwinTrtError("--weights int8 needs quantized weights: export a calibrated checkpoint without --no-quant")
    network = loaded.model if quantized else loaded.fp_model()
    if target == "tensorrt" and quantized and network.quant_recipe.gemm_outputs:
        raise SwinTrtError(
            f"--target tensorrt needs --int8-mode trt: int8-mode {network.quant_recipe.name} quantizes GEMM outputs ahead of the bias, "
            "which TensorRT cannot fuse (calibrate with --int8-mode trt, or export this recipe without --target tensorrt)"
        )
    if quantized:
        set_scale_dtype(network, torch.float16 if precision == "fp16" else None)
    if output is None:
        tag = f"int8-mode{network.quant_recipe.name}" if quantized else "fp32"
        if quantized and (network.weight_bits, network.activation_bits) != (8, 8):
            tag += f"_w{network.weight_bits}a{network.activation_bits}"
        suffix = ("_w8" if weights == "int8" else "") + ("_fp16" if precision == "fp16" else "") + ("_trt" if target == "tensorrt" else "")
        output = Path("export") / f"{network.swin_trt_config.name}_{tag}{suffix}.onnx"
    proto = onnx_export.export_onnx(network, fusions=precision == "fp32")  # FP16: see docs/onnx.md (fusion passes)
    if weights == "int8":
        onnx_graph.store_int8_weights(proto)
    if precision == "fp16":
        proto = onnx_graph.to_float16(proto)
    if target == "tensorrt":
        proto = onnx_tensorrt.prepare_for_tensorrt(proto)
    path = onnx_export.save_onnx(proto, output)
    details = {**onnx_export.sidecar(path, network, checkpoint, weights), "precision": precision, "target": target,
               "scale_dtype": "float16" if quantized and precision == "fp16" else "float32",
               "disabled": list(network.disabled_quantizers) if quantized else []}
    write_json(Path(output).with_suffix(".json"), details)
    return details


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
