"""``swin-trt models``: the zoo."""

from __future__ import annotations

import argparse

NAME = "models"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help="list the model zoo", description="List the model zoo (names accepted by --model).")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from swin_trt.console import print_table
    from swin_trt.models.zoo import ZOO

    rows = [
        (name, c.img_size, c.window_size, c.embed_dim, "-".join(map(str, c.depths)), c.num_classes)
        for name, c in sorted(ZOO.items())
    ]
    print_table("swin-trt model zoo", ("model", "resolution", "window", "embed dim", "depths", "classes"), rows)
    return 0
