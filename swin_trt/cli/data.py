"""``swin-trt data digits|fashion-mnist``: write a real dataset in both ImageNet layouts."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from swin_trt.cli.common import emit_json, positive_int
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import

console = lazy_import("swin_trt.console")
digits = lazy_import("swin_trt.data.digits")
fashion = lazy_import("swin_trt.data.fashion")

NAME = "data"
FASHION_SOURCE = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs it


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="dataset root to create")
    parser.add_argument("--size", type=positive_int, default=32, help="image side in pixels (default 32, the swin_micro input)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty DIR")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write {train, val, root} as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help="write a bundled dataset (digits, Fashion-MNIST)", description="Prepare datasets.")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    digits_parser = kinds.add_parser(
        "digits",
        help="scikit-learn's handwritten digits in both ImageNet layouts",
        description="Write scikit-learn's 1,797 handwritten digits (10 classes) as train/ val/ class folders AND as "
        "train.zip/val.zip with train_map.txt/val_map.txt, using a fixed stratified 80/20 split (random_state=0).",
    )
    _add_output_args(digits_parser)
    digits_parser.set_defaults(run=run_digits)
    fashion_parser = kinds.add_parser(
        "fashion-mnist",
        help="Fashion-MNIST (70,000 images, 10 clothing classes) in both ImageNet layouts",
        description="Write Fashion-MNIST from the files of Debian's dataset-fashion-mnist package "
        f"(`apt-get install dataset-fashion-mnist`, {FASHION_SOURCE}) as train/ val/ class folders AND as train.zip/val.zip "
        "with map files: val = the 10,000 test images, train = the 60,000 train images or a fixed stratified subset.",
    )
    _add_output_args(fashion_parser)
    fashion_parser.add_argument("--train-images", type=positive_int, metavar="N", help="a fixed stratified subset of N train images (default all 60,000)")
    fashion_parser.add_argument("--source", type=Path, default=Path(FASHION_SOURCE), metavar="DIR", help=f"folder with the idx .gz files (default {FASHION_SOURCE})")
    fashion_parser.set_defaults(run=run_fashion)


def _report(title: str, summary: dict, seconds: float, args: argparse.Namespace) -> int:
    console.print_table(title, ("split", "images"), [("train", summary["train"]), ("val", summary["val"])])
    print(f"written to {summary['root']} (folder layout and --zip layout) in {seconds:.1f} s")
    emit_json(args, summary)
    return 0


def run_digits(args: argparse.Namespace) -> int:
    check_writable(args.output, "--output", "folder")
    start = time.perf_counter()
    summary = digits.write_digits(args.output, size=args.size, overwrite=args.overwrite)
    return _report("digits dataset", summary, time.perf_counter() - start, args)


def run_fashion(args: argparse.Namespace) -> int:
    check_writable(args.output, "--output", "folder")
    start = time.perf_counter()
    summary = fashion.write_fashion_mnist(args.output, size=args.size, train_images=args.train_images, source=args.source, overwrite=args.overwrite)
    return _report("Fashion-MNIST dataset", summary, time.perf_counter() - start, args)
