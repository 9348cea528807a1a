"""``swin-trt models``: the zoo."""

from __future__ import annotations

import argparse

from swin_trt.lazy import lazy_import
from swin_trt.models.zoo import ZOO

console = lazy_import("swin_trt.console")

NAME = "models"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help="list the model zoo", description="List the model zoo (names accepted by --model).")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = [
        (name, c.img_size, c.window_size, c.embed_dim, "-".join(map(str, c.depths)), c.num_classes)
        for name, c in sorted(ZOO.items())
    ]
    console.print_table("swin-trt model zoo", ("model", "resolution", "window", "embed dim", "depths", "classes"), rows)
    return 0
