"""``swin-trt bench``: the parity gate of an engine against its fake-quant reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swin_trt.cli.common import add_data_args, emit_json, positive_int
from swin_trt.lazy import lazy_import

console = lazy_import("swin_trt.console")
workflows = lazy_import("swin_trt.workflows")

NAME = "bench"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="accuracy and argmax parity of an engine vs fake-quant; CI gate",
        description="Evaluate FP32 (the reference's FP weights), the fake-quant reference and the engine on val: top-1/top-5, "
        "argmax agreement engine vs fake-quant, max/mean |logit difference|, cosine, engine images/s. "
        "--min-agreement / --max-top1-drop turn it into a gate (exit 1 naming the failed bound).",
    )
    parser.add_argument("--reference", type=Path, required=True, metavar="CKPT", help="calibrated checkpoint the engine was exported from")
    parser.add_argument("--engine", type=Path, required=True, metavar="FILE", help="engine from `swin-trt build`")
    add_data_args(parser, batch_size=64)
    parser.add_argument("--max-batches", type=positive_int, default=None)
    parser.add_argument("--min-agreement", type=float, default=None, metavar="PCT", help="fail below this argmax agreement (%%)")
    parser.add_argument("--max-top1-drop", type=float, default=None, metavar="PT", help="fail when engine top-1 is this many points below fake-quant")
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report, engine = workflows.bench_engine(args.reference, args.engine, args.data_path, args.zip, args.batch_size, args.workers, args.max_batches)
    name = engine.details.get("model") or "model"
    failures = report.failures(args.min_agreement, args.max_top1_drop)
    console.print_table(
        f"bench {name}: {args.engine} vs {args.reference} ({report.images} images)",
        ("model", "top-1 %", "top-5 %"),
        [("FP32", report.fp32_top1, report.fp32_top5), ("INT8 fake-quant (reference)", report.fakequant_top1, report.fakequant_top5),
         (f"engine ({engine.details.get('backend', 'onnxruntime')} {engine.details.get('ort_mode', '')})", report.engine_top1, report.engine_top5)],
    )
    console.print_table("engine vs fake-quant", ("argmax agreement %", "max |dlogit|", "mean |dlogit|", "cosine", "engine images/s"),
                [(report.agreement, f"{report.max_abs_diff:.4g}", f"{report.mean_abs_diff:.4g}", f"{report.cosine:.6f}", f"{report.images_per_s:.1f}")])
    emit_json(args, {
        "fp32_top1": report.fp32_top1, "fakequant_top1": report.fakequant_top1, "engine_top1": report.engine_top1,
        "agreement": report.agreement, "max_abs_diff": report.max_abs_diff, "mean_abs_diff": report.mean_abs_diff,
        "cosine": report.cosine, "images_per_s": report.images_per_s, "passed": not failures,
    })
    if failures:
        print(f"swin-trt bench: gate failed: {'; '.join(failures)}", file=sys.stderr)
        return 1
    print("gate passed" if args.min_agreement is not None or args.max_top1_drop is not None else "no gate bounds given")
    return 0
