"""``swin-trt data digits``: write the bundled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from swin_trt.cli.common import emit_json, positive_int
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import

console = lazy_import("swin_trt.console")
digits = lazy_import("swin_trt.data.digits")

NAME = "data"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help="write the bundled digits dataset", description="Prepare datasets.")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    digits = kinds.add_parser(
        "digits",
        help="scikit-learn's handwritten digits in both ImageNet layouts",
        description="Write scikit-learn's 1,797 handwritten digits (10 classes) as train/ val/ class folders AND as "
        "train.zip/val.zip with train_map.txt/val_map.txt, using a fixed stratified 80/20 split (random_state=0).",
    )
    digits.add_argument("--output", type=Path, required=True, metavar="DIR", help="dataset root to create")
    digits.add_argument("--size", type=positive_int, default=32, help="image side in pixels (default 32, the swin_micro input)")
    digits.add_argument("--overwrite", action="store_true", help="replace an existing non-empty DIR")
    digits.add_argument("--json", type=Path, metavar="PATH", help="write {train, val, root} as JSON")
    digits.set_defaults(run=run_digits)


def run_digits(args: argparse.Namespace) -> int:
    check_writable(args.output, "--output", "folder")
    summary = digits.write_digits(args.output, size=args.size, overwrite=args.overwrite)
    console.print_table("digits dataset", ("split", "images"), [("train", summary["train"]), ("val", summary["val"])])
    print(f"written to {summary['root']} (folder layout and --zip layout)")
    emit_json(args, summary)
    return 0
