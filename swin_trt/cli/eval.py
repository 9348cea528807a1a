"""``swin-trt eval``: top-1 / top-5 and throughput of a model on a dataset split."""

from __future__ import annotations

import argparse

from swin_trt.cli.calibrate import add_int8_mode
from swin_trt.cli.common import (
    add_data_args,
    add_model_args,
    add_run_args,
    emit_json,
    positive_int,
)
from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import

api = lazy_import("swin_trt.api")
console = lazy_import("swin_trt.console")
ddp = lazy_import("swin_trt.distributed")
evaluate_stage = lazy_import("swin_trt.pipelines.evaluate")

NAME = "eval"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="evaluate top-1/top-5 and images/s",
        description="Evaluate a model on the val split (or --split train). Runs single-process or under "
        "`torchrun --nproc_per_node N`, where every image is counted exactly once.",
    )
    add_model_args(parser, resume_help="checkpoint to evaluate (original release .pth, timm, .safetensors, swin-trt)")
    parser.add_argument("--random-init", action="store_true", help="evaluate random weights (no --resume): checks that an architecture builds and runs")
    add_int8_mode(parser, default=None)
    parser.add_argument("--compare-fp", action="store_true", help="with a calibrated checkpoint: also evaluate its FP weights and print the delta")
    add_data_args(parser, batch_size=128)
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--max-batches", type=positive_int, default=None, help="stop after N batches per process")
    add_run_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.resume and not args.random_init:
        raise SwinTrtError("no weights to evaluate: pass --resume CKPT (or --random-init to run untrained weights)")
    if args.resume and args.random_init:
        raise SwinTrtError("--resume and --random-init exclude each other")
    with ddp.distributed(args.device) as context:
        loaded = api.open_model(args.model, args.cfg, args.resume, args.int8_mode)
        if args.compare_fp and not loaded.quantized:
            raise SwinTrtError("--compare-fp needs a calibrated checkpoint (it compares the fake-quant model with its FP weights)")
        if loaded.notice and context.is_main:
            print(loaded.notice)
        config = loaded.model.swin_trt_config

        def run_on(model):
            return evaluate_stage.evaluate_split(model, args.data_path, args.zip, args.batch_size, context, args.workers, args.split, args.max_batches)

        result = run_on(loaded.model)
        fp_result = run_on(loaded.fp_model()) if args.compare_fp else None
        if context.is_main:
            kind = f"INT8 fake-quant (mode {loaded.model.quant_recipe.name})" if loaded.quantized else "FP32"
            rows = [(kind, args.resume or "random init", result.images, result.top1, result.top5, f"{result.images_per_s:.1f}")]
            if fp_result is not None:
                rows.insert(0, ("FP32", args.resume, fp_result.images, fp_result.top1, fp_result.top5, f"{fp_result.images_per_s:.1f}"))
            title = f"eval {config.name} on {args.split}" + (f" x{context.world_size} processes" if context.enabled else "")
            console.print_table(title, ("model", "weights", "images", "top-1 %", "top-5 %", "images/s"), rows)
            payload = result.as_json()
            if fp_result is not None:
                print(f"top-1 delta (INT8 - FP32): {result.top1 - fp_result.top1:+.2f} pt")
                payload["fp_top1"] = fp_result.top1
            emit_json(args, payload)
    return 0
