"""``swin-trt report``: one self-contained HTML page with the results a pipeline's workdir holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from swin_trt.errors import SwinTrtError
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import

report = lazy_import("swin_trt.report")

NAME = "report"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="one HTML page with the pipeline's results",
        description="Build an HTML page (figures inlined as data URIs, PNGs also written beside it) from the --json files and "
        "calibrated checkpoints in --workdir: FP32 / PTQ per recipe x calibrator / QAT / engine top-1 and agreement with the "
        "gate's criterion, throughput per runtime and batch (benchmarks/results/*.json), sensitivity bars, amax against the "
        "observed max. docs/sensitivity.md lists the files it reads.",
    )
    parser.add_argument("--workdir", type=Path, required=True, metavar="DIR", help="the pipeline's folder (e.g. the demo's runs/demo)")
    parser.add_argument("--output", type=Path, metavar="FILE.html", help="default DIR/report.html")
    parser.add_argument("--benchmarks", type=Path, metavar="DIR", default=Path("benchmarks/results"),
                        help="throughput JSON files (default benchmarks/results; skipped when missing)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.workdir.is_dir():
        raise SwinTrtError(f"--workdir {args.workdir} is not a folder: pass the folder a pipeline (e.g. `swin-trt demo --workdir DIR`) wrote")
    output = args.output or args.workdir / "report.html"
    check_writable(output, "--output")
    page = report.write_report(args.workdir, output, args.benchmarks)
    print(f"report: {page}")
    return 0
