"""The ``swin-trt`` command: small subcommands over one library (in the style of Polygraphy)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from swin_trt import __version__
from swin_trt.cli import bench, build, calibrate, data, demo, eval, export, inspect, models, qat, quant_summary, train
from swin_trt.errors import SwinTrtError, one_line

SUBCOMMANDS = (data, models, train, calibrate, qat, eval, quant_summary, export, inspect, build, bench, demo)
SUBCOMMAND_NAMES = tuple(module.NAME for module in SUBCOMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swin-trt",
        description="Quantize Swin Transformer classifiers to INT8 and deploy them.",
    )
    parser.add_argument("--version", action="version", version=f"swin-trt {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def _quiet_third_party() -> None:
    """Known, harmless notices from dependencies that would bury our own output."""
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*Importing from timm\.models\..*deprecated.*", category=FutureWarning)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors print as one line and exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_third_party()
    try:
        return int(args.run(args) or 0)
    except SwinTrtError as error:
        print(f"swin-trt {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"swin-trt {args.command}: interrupted", file=sys.stderr)
        return 130
