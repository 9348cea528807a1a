"""Arguments shared by the subcommands, and how they turn into library objects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from swin_trt.io import write_json


def add_model_args(parser: argparse.ArgumentParser, resume_help: str) -> None:
    group = parser.add_argument_group("model")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="NAME", help="zoo model name, e.g. swin_tiny_patch4_window7_224 (see `swin-trt models`)")
    which.add_argument("--cfg", metavar="FILE", help="original Swin YAML config, e.g. configs/swin_tiny_patch4_window7_224.yaml")
    group.add_argument("--resume", metavar="CKPT", help=resume_help)


def add_data_args(parser: argparse.ArgumentParser, batch_size: int, required: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data-path", required=required, metavar="DIR", help="dataset root: train/ and val/ class folders, or the zipped layout with --zip")
    group.add_argument("--zip", action="store_true", help="read {train,val}.zip with {train,val}_map.txt")
    group.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"images per batch and process (default {batch_size})")
    group.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader worker processes (default 2)")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    group.add_argument("--json", type=Path, metavar="PATH", help="write the results as one JSON object")
    # torch.distributed.launch (the seed's launcher) passes --local-rank / --local_rank; torchrun
    # uses the LOCAL_RANK variable, which is what swin-trt reads.
    group.add_argument("--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS)


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    """The seed toolkit's precision flags (it forced them to 8): fake-quant at fewer bits."""
    group = parser.add_argument_group("precision")
    group.add_argument("--wprec", type=bit_width, default=8, metavar="N", help="weight bits, 4-8 (default 8)")
    group.add_argument("--aprec", type=bit_width, default=8, metavar="N", help="activation bits, 4-8 (default 8)")


def bit_width(text: str) -> int:
    value = int(text)
    if not 4 <= value <= 8:
        raise argparse.ArgumentTypeError(f"must be 4 to 8 bits, got {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def probability(text: str) -> float:
    """A significance level: above 0, at most 1."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {value:g}")
    return value


def emit_json(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    if getattr(args, "json", None):
        write_json(args.json, payload)
