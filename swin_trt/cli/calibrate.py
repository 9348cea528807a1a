"""``swin-trt calibrate``: PTQ with the seed's flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from swin_trt.cli.common import (
    add_data_args,
    add_model_args,
    add_precision_args,
    add_run_args,
    emit_json,
    positive_int,
)
from swin_trt.errors import SwinTrtError
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import
from swin_trt.quantization.recipes import CALIBRATORS, INT8_MODES
from swin_trt.settings import FORMATS, FP8_DEFAULT_CALIBRATOR, HISTOGRAMS, PTQ_METHODS, CalibrationRequest, FallbackRequest

console = lazy_import("swin_trt.console")
ddp = lazy_import("swin_trt.distributed")
calibrate_stage = lazy_import("swin_trt.pipelines.calibrate")
evaluate_stage = lazy_import("swin_trt.pipelines.evaluate")

NAME = "calibrate"
_DEFAULTS = CalibrationRequest()
_FALLBACK = FallbackRequest()
GRANULARITIES = ("quantizer", "layer", "block")  # swin_trt.quantization.sensitivity.GRANULARITIES (kept light for --help)


def add_int8_mode(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--int8-mode",
        choices=INT8_MODES,
        default=default,
        help="quantizer placement: 1 = all GEMM outputs (reference), 2 = without fc2/PatchMerging outputs, trt = TensorRT-preferred, "
             "trt-residual = trt before 0.2 (with the MLP residual's Q/DQ)",
    )


def add_format(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=default,
        help="what the quantizers round to: int8 (signed integers, scale = amax/127) or fp8 (E4M3, scale = amax/448; "
        "TensorRT runs it on compute capability 8.9+: L4, L40S, H100, H200). Recorded in the checkpoint; export, build and bench follow it "
        "(docs/fp8.md)" + ("" if default else "; default: the checkpoint's"),
    )


def check_format_precision(quant_format: str | None, weight_bits: int | None, activation_bits: int | None) -> None:
    """--wprec/--aprec narrow the integer range: FP8 E4M3 has one width."""
    if quant_format == "fp8" and any(bits not in (None, 8) for bits in (weight_bits, activation_bits)):
        raise SwinTrtError("--wprec/--aprec apply to --format int8 only (FP8 E4M3 is 8 bits); drop them or use --format int8")


def precision_label(weight_bits: int, activation_bits: int) -> str:
    """``W8A8``-style label; fewer than 8 bits run as int8 restricted to the narrower range."""
    return f"W{weight_bits}A{activation_bits}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="PTQ: calibrate amax and save a calibrated checkpoint",
        description="Insert INT8 quantizers, collect statistics on exactly --num-calib-batch batches of the train split, "
        "compute amax, save <calib-output-path>/<model>_calib.pth, then evaluate the fake-quant model on val. "
        "Under torchrun, statistics are merged across processes (--num-calib-batch is per process).",
    )
    add_model_args(parser, resume_help="FP checkpoint to calibrate (required)")
    add_data_args(parser, batch_size=128)
    add_int8_mode(parser, _DEFAULTS.int8_mode)
    add_format(parser, _DEFAULTS.format)
    parser.add_argument("--num-calib-batch", type=positive_int, default=_DEFAULTS.num_calib_batch, help="calibration batches (exactly this many)")
    parser.add_argument("--calib-batchsz", type=positive_int, default=_DEFAULTS.calib_batchsz, help="images per calibration batch")
    parser.add_argument("--calibrator", choices=CALIBRATORS, default=None,
                        help=f"how activation amax is chosen (default {_DEFAULTS.calibrator}; {FP8_DEFAULT_CALIBRATOR} with --format fp8, "
                        "which takes max, percentile or mse)")
    parser.add_argument("--percentile", type=float, default=_DEFAULTS.percentile, help="for --calibrator percentile (default 99.99)")
    parser.add_argument(
        "--histogram",
        choices=HISTOGRAMS,
        default=_DEFAULTS.histogram,
        help="activation statistics: native (default) = swin-trt's batch-order-independent histogram, mergeable under torchrun; "
        "pytorch-quantization = its HistogramCalibrator reproduced (torch.histc over the first batch's range, lower-edge percentile, "
        "its entropy/MSE candidates), one process only. See docs/quantization.md",
    )
    parser.add_argument("--per-tensor-weights", action="store_true",
                        help="one max|W| amax per weight tensor, the reference's granularity (default: per output channel)")
    parser.add_argument("--calib-transform", choices=("train", "eval"), default=_DEFAULTS.calib_transform, help="augmentation of calibration images (default train, as the reference)")
    parser.add_argument("--calib-output-path", type=Path, default=Path("calib-checkpoint"), metavar="DIR")
    parser.add_argument("--skip-eval", action="store_true", help="do not evaluate the calibrated model on val")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    add_precision_args(parser)
    lowbit = parser.add_argument_group("low-bit PTQ methods (docs/lowbit.md)")
    lowbit.add_argument("--ptq-method", action="append", choices=PTQ_METHODS, default=[],
                        help="repeat the flag to combine methods (they run in this order whatever the order given): "
                        "smoothquant and ln-reparam rewrite the FP weights before quantizers go in; adaround (learned weight rounding), "
                        "qwt (per-channel affine compensation) and bias-correction refine the calibrated model block by block, "
                        "on the calibration images (raise --num-calib-batch for them: 1024 images is a good start)")
    lowbit.add_argument("--ptq-iters", type=positive_int, default=_DEFAULTS.ptq_iters, metavar="N",
                        help=f"adaround's optimisation steps per block (default {_DEFAULTS.ptq_iters})")
    fallback = parser.add_argument_group("mixed-precision fallback (docs/sensitivity.md)")
    fallback.add_argument("--auto-fallback", action="store_true",
                          help="after calibrating, keep the fewest quantizer groups in higher precision so that the fake-quant top-1 drop "
                          "against FP32 on held-out train images is within --max-drop; the checkpoint records them")
    fallback.add_argument("--max-drop", type=float, default=_FALLBACK.max_drop, metavar="PT", help=f"top-1 budget in points (default {_FALLBACK.max_drop})")
    fallback.add_argument("--fallback-images", type=positive_int, default=_FALLBACK.images, metavar="N",
                          help=f"held-out train images (after those calibration used, in its seeded order; default {_FALLBACK.images})")
    fallback.add_argument("--fallback-ranking-images", type=positive_int, default=_FALLBACK.ranking_images, metavar="N",
                          help=f"the first N held-out images rank the groups by KL against FP32 (default {_FALLBACK.ranking_images})")
    fallback.add_argument("--fallback-granularity", choices=GRANULARITIES, default=_FALLBACK.granularity,
                          help=f"what is kept in higher precision together (default {_FALLBACK.granularity}: single quantizers)")
    add_run_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.resume:
        raise SwinTrtError("--resume is required: the FP checkpoint to calibrate")
    if not 0 < args.percentile <= 100:
        raise SwinTrtError(f"--percentile must be in (0, 100], got {args.percentile}")
    if args.max_drop < 0:
        raise SwinTrtError(f"--max-drop must be >= 0 points, got {args.max_drop}")
    check_format_precision(args.format, args.wprec, args.aprec)
    fp8 = args.format == "fp8"
    calibrator = args.calibrator or (FP8_DEFAULT_CALIBRATOR if fp8 else _DEFAULTS.calibrator)
    if fp8 and calibrator == "entropy":
        raise SwinTrtError("--calibrator entropy does not apply to --format fp8 (its KL target is int8's 128 uniform levels): use max, percentile or mse")
    if fp8 and args.histogram == "pytorch-quantization":
        raise SwinTrtError("--histogram pytorch-quantization reproduces an int8-only calibrator: use --histogram native with --format fp8")
    if fp8 and args.ptq_method:
        raise SwinTrtError("--ptq-method works on the integer grid (docs/lowbit.md): use it with --format int8, or drop it with --format fp8")
    check_writable(args.calib_output_path, "--calib-output-path", "folder")
    fallback = FallbackRequest(max_drop=args.max_drop, images=args.fallback_images, ranking_images=args.fallback_ranking_images,
                               granularity=args.fallback_granularity, batch_size=args.batch_size) if args.auto_fallback else None
    request = CalibrationRequest(
        int8_mode=args.int8_mode,
        calibrator=calibrator,
        percentile=args.percentile,
        histogram=args.histogram,
        per_channel_weights=not args.per_tensor_weights,
        num_calib_batch=args.num_calib_batch,
        calib_batchsz=args.calib_batchsz,
        calib_transform=args.calib_transform,
        seed=args.seed,
        weight_bits=args.wprec,
        activation_bits=args.aprec,
        format=args.format,
        ptq_methods=tuple(name for name in PTQ_METHODS if name in args.ptq_method),
        ptq_iters=args.ptq_iters,
    )
    with ddp.distributed(args.device) as context:
        outcome = calibrate_stage.calibrate_checkpoint(args.model, args.cfg, args.resume, args.data_path, args.zip, request, args.calib_output_path, context, args.workers,
                                                        fallback)
        result = None if args.skip_eval else evaluate_stage.evaluate_split(outcome.model, args.data_path, args.zip, args.batch_size, context, args.workers)
        if context.is_main:
            console.print_table(
                f"calibrate {outcome.meta['config']['name']}",
                ("checkpoint", "int8 mode", "precision", "calibrator", "images", "fake-quant top-1 %"),
                [(outcome.checkpoint, request.int8_mode, "FP8 E4M3" if fp8 else precision_label(request.weight_bits, request.activation_bits), request.calibrator,
                  outcome.images, "-" if result is None else result.top1)],
            )
            payload = summary(outcome, request, None if result is None else result.top1)
            if outcome.fallback is not None:
                chosen = outcome.meta["quantization"]["fallback"]
                print(f"--auto-fallback: {len(chosen['groups'])} {args.fallback_granularity} group(s) in higher precision "
                      f"({len(outcome.fallback.disabled)} quantizers): held-out top-1 {chosen['top1']:.2f} % vs FP32 {chosen['fp32_top1']:.2f} % "
                      f"(drop {chosen['drop']:.2f} pt, all quantized {chosen['quant_top1']:.2f} %): {', '.join(chosen['groups']) or 'none needed'}")
                payload.update(fallback_groups=chosen["groups"], fallback_disabled=outcome.fallback.disabled, fallback_drop=chosen["drop"],
                               fallback_top1=chosen["top1"], fallback_fp32_top1=chosen["fp32_top1"], fallback_quant_top1=chosen["quant_top1"],
                               fallback_images=chosen["held_out_images"])
            emit_json(args, payload)
    return 0


def summary(outcome: Any, request: CalibrationRequest, top1: float | None) -> dict[str, Any]:
    """The ``--json`` object of a calibration (before any fallback keys); the demo writes the same
    object for each setting it calibrates."""
    payload = {"checkpoint": str(outcome.checkpoint), "int8_mode": request.int8_mode, "calibrator": request.calibrator, "images": outcome.images,
               "weight_bits": request.weight_bits, "activation_bits": request.activation_bits, "format": request.format,
               "ptq_methods": list(request.ptq_methods)}
    if top1 is not None:
        payload["top1"] = top1
    return payload
