"""``swin-trt train``: FP32 training (how the swin_micro reference is made)."""

from __future__ import annotations

import argparse
from pathlib import Path

from swin_trt.cli.common import (
    add_data_args,
    add_model_args,
    add_run_args,
    emit_json,
    positive_int,
)
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import
from swin_trt.settings import TrainRecipe

console = lazy_import("swin_trt.console")
ddp = lazy_import("swin_trt.distributed")
train_stage = lazy_import("swin_trt.pipelines.train")

_DEFAULTS = TrainRecipe()


NAME = "train"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="train a model in FP32",
        description="Train a model in FP32 with AdamW and a one-cycle schedule, then evaluate it on val. "
        "Runs single-process or under `torchrun --nproc_per_node N` (DDP; --batch-size is per process).",
    )
    add_model_args(parser, resume_help="initial weights (fine-tuning); random init without it")
    add_data_args(parser, batch_size=_DEFAULTS.batch_size)
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder for <model>.pth")
    parser.add_argument("--epochs", type=positive_int, default=_DEFAULTS.epochs)
    parser.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay)
    parser.add_argument("--label-smoothing", type=float, default=_DEFAULTS.label_smoothing)
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    add_run_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_writable(args.output, "--output", "folder")
    recipe = TrainRecipe(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
    )
    with ddp.distributed(args.device) as context:
        outcome = train_stage.train_reference(
            args.model, args.cfg, args.resume, args.data_path, args.zip, args.output, recipe, context, workers=args.workers
        )
        if context.is_main:
            console.print_table(
                f"train {outcome.config.name}",
                ("checkpoint", "epochs", "final loss", "val top-1 %", "val top-5 %"),
                [(outcome.checkpoint, recipe.epochs, outcome.losses[-1], outcome.result.top1, outcome.result.top5)],
            )
            emit_json(args, {"checkpoint": str(outcome.checkpoint), "top1": outcome.result.top1})
    return 0
