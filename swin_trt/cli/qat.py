"""``swin-trt qat``: quantization-aware training with the seed's flags (``main.py --train``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swin_trt.cli.calibrate import add_format, add_int8_mode, check_format_precision
from swin_trt.cli.common import (
    add_data_args,
    add_model_args,
    add_precision_args,
    add_run_args,
    emit_json,
    non_negative_int,
    positive_int,
    probability,
)
from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import
from swin_trt.loops.teacher import TEACHER_RUNTIMES
from swin_trt.settings import QatRecipe

console = lazy_import("swin_trt.console")
ddp = lazy_import("swin_trt.distributed")
qat_loop = lazy_import("swin_trt.loops.qat")
qat_stage = lazy_import("swin_trt.pipelines.qat")

NAME = "qat"
_DEFAULTS = QatRecipe()
SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by it


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="QAT: fine-tune a calibrated checkpoint (distillation from the FP teacher)",
        description="Fine-tune a calibrated checkpoint with its scales fixed (straight-through estimator clipped at +-amax): "
        "cross-entropy with the config's mixup/cutmix/label smoothing, plus --distill: KL divergence to the FP teacher. "
        "Saves <output>/<model>_qat.pth, a calibrated checkpoint that eval/export/build/bench take unchanged. "
        "Resumable: <output>/<model>_qat_last.pth is saved at every epoch end and on SIGTERM, and the same command continues it. "
        "Runs under `torchrun --nproc_per_node N` (DDP; --batch-size is per process). "
        "--wprec/--aprec default to the calibrated checkpoint's precision.",
    )
    add_model_args(parser, resume_help="calibrated checkpoint to fine-tune (from `swin-trt calibrate`; required)")
    add_data_args(parser, batch_size=_DEFAULTS.batch_size)
    add_int8_mode(parser, None)
    add_format(parser, None)
    group = parser.add_argument_group("training")
    group.add_argument("--output", type=Path, default=Path("qat-output"), metavar="DIR", help="folder for <model>_qat.pth and the resumable state (default qat-output)")
    group.add_argument("--num-epochs", type=positive_int, default=_DEFAULTS.epochs, help=f"epochs (default {_DEFAULTS.epochs})")
    group.add_argument("--qat-lr", type=float, default=_DEFAULTS.qat_lr,
                       help=f"learning rate per 512 images of global batch: the peak LR is qat-lr x batch x processes / 512 (default {_DEFAULTS.qat_lr:g})")
    group.add_argument("--lr-schedule", choices=("cosine", "constant"), default=_DEFAULTS.lr_schedule,
                       help="cosine with linear warm-up (default), or constant (the reference's, whose scheduler was never stepped)")
    group.add_argument("--no-mixup", dest="mixup", action="store_false", help="plain labels with label smoothing instead of the config's mixup/cutmix")
    group.add_argument("--learn-amax", action="store_true", help="train the scales too (LSQ gradient); default: fixed, as calibrated")
    group.add_argument("--compile-fake-quant", action="store_true",
                       help="fake-quantize in one compiled pass (torch.compile; needs a C++ compiler, ~1 min to compile; the same values; "
                       "measured 2.2x slower than eager on a 2-core AVX2 CPU, see docs/qat.md)")
    group.add_argument("--select-images", type=non_negative_int, default=_DEFAULTS.selection_images, metavar="N",
                       help="keep the best of the calibrated model and every epoch by top-1 on N held-out train images (those after the "
                       f"calibration images in its seeded order; default {_DEFAULTS.selection_images}); 0 keeps the last epoch")
    group.add_argument("--select-alpha", type=probability, default=_DEFAULTS.selection_alpha, metavar="P",
                       help="a later epoch replaces the one kept only when it is better on the held-out images by a one-sided sign test "
                       f"at p < P (default {_DEFAULTS.selection_alpha:g}; 1 keeps any improvement, however small)")
    group.add_argument("--seed", type=non_negative_int, default=_DEFAULTS.seed)
    group.add_argument("--restart", action="store_true", help="start over, ignoring a saved run in --output (by default the same command continues it)")
    group.add_argument("--quant-mode", metavar="MODE", help=argparse.SUPPRESS)  # the seed's; the reference ignores it too
    distill = parser.add_argument_group("distillation")
    distill.add_argument("--distill", action="store_true", help="add KL divergence to the FP teacher's softened outputs to the loss")
    distill.add_argument("--teacher", metavar="CKPT", help="FP checkpoint of the teacher (default: the FP weights stored in the calibrated checkpoint)")
    distill.add_argument("--distillation-loss-scale", "--distillation_loss_scale", dest="distillation_loss_scale", type=float, metavar="S",
                         default=_DEFAULTS.distillation_loss_scale,
                         help="weight of the KL term in the reference's units (KL averaged over images and classes; default 10000)")
    distill.add_argument("--teacher-runtime", choices=TEACHER_RUNTIMES, default="auto",
                         help="where the teacher's forward runs: auto (default) onnxruntime on the CPU (the FP32 graph exported once: "
                         "about 1.4x as fast as PyTorch's forward for Swin-T, float32 throughout, docs/qat.md), PyTorch on a GPU")
    distill.add_argument("--temperature", type=float, default=_DEFAULTS.temperature, help=f"softmax temperature (default {_DEFAULTS.temperature:g})")
    add_precision_args(parser)
    parser.set_defaults(wprec=None, aprec=None)
    add_run_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.resume:
        raise SwinTrtError("--resume is required: the calibrated checkpoint to fine-tune (from `swin-trt calibrate`)")
    if args.qat_lr <= 0 or args.temperature <= 0 or args.distillation_loss_scale < 0:
        raise SwinTrtError("--qat-lr and --temperature must be positive and --distillation-loss-scale non-negative")
    check_format_precision(args.format, args.wprec, args.aprec)
    recipe = QatRecipe(
        epochs=args.num_epochs,
        batch_size=args.batch_size,
        qat_lr=args.qat_lr,
        lr_schedule=args.lr_schedule,
        distill=args.distill,
        distillation_loss_scale=args.distillation_loss_scale,
        temperature=args.temperature,
        mixup=args.mixup,
        learn_amax=args.learn_amax,
        selection_images=args.select_images,
        selection_alpha=args.select_alpha,
        weight_bits=args.wprec,
        activation_bits=args.aprec,
        seed=args.seed,
    )
    with ddp.distributed(args.device) as context:
        if args.quant_mode is not None and context.is_main:
            print(f"note: --quant-mode {args.quant_mode} is ignored (the reference ignores it too; the placement is --int8-mode)")
        try:
            outcome = qat_stage.qat_checkpoint(
                args.model, args.cfg, args.resume, args.data_path, args.zip, recipe, args.output, context,
                int8_mode=args.int8_mode, teacher=args.teacher, restart=args.restart, workers=args.workers,
                compile_kernel=args.compile_fake_quant, quant_format=args.format, teacher_runtime=args.teacher_runtime,
            )
        except qat_loop.TrainingInterrupted as stopped:
            if context.is_main:
                print(f"swin-trt qat: {stopped}", file=sys.stderr)
            return SIGTERM_EXIT
        if context.is_main:
            baseline, history = outcome.progress.baseline, outcome.progress.history
            console.print_table(
                f"qat {outcome.meta['config']['name']} (int8 mode {outcome.meta['quantization']['int8_mode']}, "
                + ("FP8 E4M3)" if outcome.meta["quantization"].get("format") == "fp8" else f"W{outcome.recipe.weight_bits}A{outcome.recipe.activation_bits})"),
                ("epoch", "train loss", "val top-1 %", "held-out top-1 %", "p (sign test vs kept)", "lr"),
                [(h["epoch"], h["loss"], h["top1"], h.get("held_out_top1", "-"), f"{h['held_out_p']:.3g}" if "held_out_p" in h else "-",
                  f"{h['lr']:.2e}") for h in history],
            )
            if outcome.selected_epoch is not None:
                print(f"kept epoch {outcome.selected_epoch} of {len(history)} (0 = the calibrated model): no later epoch beat it on the held-out "
                      f"images at p < {outcome.recipe.selection_alpha:g}")
            console.print_table(
                "FP32 / PTQ / QAT",
                ("checkpoint", "FP32 top-1 %", "PTQ top-1 %", "QAT top-1 %"),
                [(outcome.checkpoint, baseline["fp_top1"], baseline["ptq_top1"], outcome.top1)],
            )
            emit_json(args, {"checkpoint": str(outcome.checkpoint), "top1": outcome.top1, "ptq_top1": baseline["ptq_top1"], "fp_top1": baseline["fp_top1"],
                             "selected_epoch": outcome.selected_epoch, "held_out_top1": [baseline.get("held_out_ptq_top1")] + [h.get("held_out_top1") for h in history],
                             "held_out_p": [h.get("held_out_p") for h in history]})
    return 0
