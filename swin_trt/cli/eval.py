"""``swin-trt eval``: top-1 / top-5 and throughput of a model on a dataset split."""

from __future__ import annotations

import argparse

from swin_trt.cli.common import add_data_args, add_model_args, add_run_args, emit_json, positive_int


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
    add_data_args(parser, batch_size=128)
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--max-batches", type=positive_int, default=None, help="stop after N batches per process")
    add_run_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from swin_trt.api import load_model
    from swin_trt.console import print_table
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.loader import build_loader
    from swin_trt.data.transforms import eval_transform
    from swin_trt.distributed import distributed
    from swin_trt.engine.evaluate import evaluate
    from swin_trt.errors import SwinTrtError

    if not args.resume and not args.random_init:
        raise SwinTrtError("no weights to evaluate: pass --resume CKPT (or --random-init to run untrained weights)")
    if args.resume and args.random_init:
        raise SwinTrtError("--resume and --random-init exclude each other")
    with distributed(args.device) as context:
        model = load_model(args.model, args.cfg, args.resume)
        config = model.swin_trt_config
        dataset = build_dataset(args.data_path, args.split, eval_transform(config.data), args.zip, config.num_classes)
        loader = build_loader(dataset, args.batch_size, context, workers=args.workers)
        result = evaluate(model.to(context.device), loader, context, args.max_batches, description=config.name)
        if context.is_main:
            weights = args.resume or "random init"
            print_table(
                f"eval {config.name} on {args.split}" + (f" x{context.world_size} processes" if context.enabled else ""),
                ("weights", "images", "top-1 %", "top-5 %", "images/s"),
                [(weights, result.images, result.top1, result.top5, f"{result.images_per_s:.1f}")],
            )
            emit_json(args, result.as_json())
    return 0
