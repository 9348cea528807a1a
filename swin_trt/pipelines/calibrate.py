"""Stage ``calibrate``: PTQ (statistics, amax) and, with ``--auto-fallback``, the quantizer groups
kept in higher precision, chosen on held-out train images."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from swin_trt.api import open_model
from swin_trt.data.datasets import build_dataset, fingerprint
from swin_trt.data.loader import build_loader
from swin_trt.data.transforms import eval_transform, train_transform
from swin_trt.distributed import DistContext, barrier
from swin_trt.errors import SwinTrtError
from swin_trt.models.checkpoint import save_checkpoint
from swin_trt.pipelines.sensitivity import held_out_indices, load_images
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.fallback import Fallback, choose_fallback
from swin_trt.quantization.model import keep_in_higher_precision, quantize_model, set_precision
from swin_trt.quantization.ptq.apply import ordered, refine_quantized, rewrite_fp
from swin_trt.quantization.recipes import get_recipe
from swin_trt.quantization.sensitivity import SensitivityProbe, quantizer_groups
from swin_trt.seeding import seed_all
from swin_trt.settings import CalibrationRequest, FallbackRequest
from swin_trt.versions import package_versions


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
    methods = ordered(request.ptq_methods)
    network.to(context.device)
    ptq_report: dict[str, Any] = {}
    if methods:  # on the calibration images themselves (the first `needed` of the seeded order), before the fallback's held-out ones
        seed_all(request.seed)
        calib_images, calib_labels = load_images(Subset(dataset, held_out_indices(len(dataset), 0, request.seed, needed)), request.calib_batchsz,
                                                 workers, context.device)
        ptq_report = rewrite_fp(network, calib_images, methods, request.weight_bits, request.activation_bits, request.per_channel_weights)
    reference = copy.deepcopy(network).eval() if methods else None
    quantize_model(network, recipe, per_channel_weights=request.per_channel_weights)
    set_precision(network, request.weight_bits, request.activation_bits)  # before amax: entropy and mse depend on it
    network.to(context.device)  # the new quantizers' buffers too
    seed_all(request.seed + context.rank)  # augmentation
    loader = build_loader(dataset, request.calib_batchsz, context, workers=workers, seed=request.seed, shuffle_once=True)
    histograms, images = collect_statistics(network, loader, request.num_calib_batch, context, request.histogram)
    load_calib_amax(network, histograms, request.calibrator, request.percentile)
    if methods:
        started = time.perf_counter()
        ptq_report.update(refine_quantized(network, reference, calib_images, calib_labels, methods, request.ptq_iters, request.seed))
        ptq_report["refine_seconds"] = time.perf_counter() - started
        del reference, calib_images, calib_labels
    chosen = None
    if fallback is not None:
        held_out = build_dataset(data_path, "train", eval_transform(config.data), use_zip, config.num_classes)
        chosen = auto_fallback(network, held_out, needed, request.seed, fallback, workers, context.device)

    meta = {
        "config": config.to_dict(),
        "quantization": {
            **{k: v for k, v in request.__dict__.items() if k != "percentile" or request.calibrator == "percentile"},
            "ptq_methods": list(methods),
            "int8_mode": recipe.name,
            "world_size": context.world_size,
            "images": images,
            "data_fingerprint": fingerprint(dataset),
            "source_checkpoint": str(checkpoint),
            "observed_amax": {name: float(histogram.max) for name, histogram in histograms.items()},
        },
        "versions": package_versions(),
    }
    if methods:
        meta["quantization"]["ptq"] = ptq_report
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


def auto_fallback(model: nn.Module, train_set: Dataset, calibration_images: int, seed: int, request: FallbackRequest,
                  workers: int, device: torch.device) -> Fallback:
    """Choose the groups to keep in higher precision on held-out train images (never val, which
    the accuracy is reported on) and disable them in ``model``."""
    indices = held_out_indices(len(train_set), calibration_images, seed, request.images)
    images, labels = load_images(Subset(train_set, indices), request.batch_size, workers, device)
    probe = SensitivityProbe(model, images, labels, batch_size=request.batch_size)
    ranking = request.ranking_images
    ranking_probe = SensitivityProbe(model, images[:ranking], labels[:ranking], batch_size=request.batch_size) if ranking < len(labels) else probe
    chosen = choose_fallback(probe, quantizer_groups(model, request.granularity), request.max_drop, ranking_probe)
    keep_in_higher_precision(model, chosen.disabled)
    return chosen
