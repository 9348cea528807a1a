"""``swin-trt sensitivity``: which quantizer groups cost accuracy, alone disabled and alone enabled."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from swin_trt.cli.calibrate import GRANULARITIES
from swin_trt.cli.common import add_data_args, add_model_args, add_run_args, emit_json, positive_int
from swin_trt.errors import SwinTrtError
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import

api = lazy_import("swin_trt.api")
console = lazy_import("swin_trt.console")
ddp = lazy_import("swin_trt.distributed")
plots = lazy_import("swin_trt.report.plots")
sensitivity = lazy_import("swin_trt.quantization.sensitivity")
sensitivity_stage = lazy_import("swin_trt.pipelines.sensitivity")

NAME = "sensitivity"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="per-group sensitivity: top-1 and KL vs FP32 with each group alone disabled / enabled",
        description="For each group of the calibrated model's enabled quantizers (single quantizers, layers or Swin blocks), "
        "the top-1 and the mean KL divergence of the logits against FP32 with the group alone disabled and alone enabled, "
        "on the first --max-batches batches of val held in memory. Ranked table, --json, --plot. See docs/sensitivity.md.",
    )
    add_model_args(parser, resume_help="calibrated checkpoint (required)")
    add_data_args(parser, batch_size=128)
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--max-batches", type=positive_int, default=4, help="images: this many batches of --batch-size (default 4)")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="layer",
                        help="quantizer: each alone; layer (default): a linear's input/weight/output, an attention's q/k/v/softmax, "
                        "a block's residual quantizers; block: a Swin block or PatchMerging")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="horizontal bars, one per group")
    add_run_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.resume:
        raise SwinTrtError("--resume is required: a calibrated checkpoint")
    if args.plot is not None:
        if args.plot.suffix.lower() != ".png":
            raise SwinTrtError(f"--plot {args.plot}: the plot is a PNG, name it FILE.png")
        check_writable(args.plot, "--plot")
    loaded = api.open_model(args.model, args.cfg, args.resume)
    if not loaded.quantized:
        raise SwinTrtError(f"{args.resume} is not a calibrated checkpoint (no amax): run `swin-trt calibrate` first")
    device = ddp.resolve_device(args.device)
    start = time.perf_counter()
    probe = sensitivity_stage.split_probe(loaded.model, args.data_path, args.zip, args.split, args.max_batches * args.batch_size,
                                             args.batch_size, args.workers, device)
    groups = sensitivity.quantizer_groups(loaded.model, args.granularity)
    results = probe.measure(groups)
    seconds = time.perf_counter() - start
    payload = sensitivity_stage.sensitivity_payload(probe, results, args.granularity)
    payload["seconds"] = seconds
    console.print_table(
        f"sensitivity of {args.resume} ({len(groups)} {args.granularity} groups, {payload['images']} {args.split} images; "
        f"FP32 {payload['fp32_top1']:.2f} %, quantized {payload['quant_top1']:.2f} %, KL {payload['quant_kl']:.4f}; "
        "off: the group alone in higher precision, on: the group alone quantized)",
        ("rank", "group", "n", "top-1 % off", "KL off", "top-1 % on", "KL on"),
        [(rank, r.group.name, len(r.group.quantizers), r.disabled.top1, f"{r.disabled.kl:.4f}", r.enabled.top1, f"{r.enabled.kl:.4f}")
         for rank, r in enumerate(results, 1)],
    )
    print(f"{len(groups)} groups x 2 evaluations on {payload['images']} images in {seconds:.1f} s")
    if args.plot is not None:
        print(f"plot: {plots.sensitivity_plot(payload, args.plot)}")
    emit_json(args, payload)
    return 0
