"""The ``swin-trt`` command: small subcommands over one library (in the style of Polygraphy)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from swin_trt import __version__
from swin_trt.allocator import keep_freed_memory
from swin_trt.cli import bench, build, calibrate, data, demo, eval, export, inspect, models, qat, quant_summary, report, sensitivity, train
from swin_trt.errors import SwinTrtError, one_line
from swin_trt.io import OutputError, check_writable
from swin_trt.lazy import lazy_import

ddp = lazy_import("swin_trt.distributed")  # torch loads only when a run was distributed

SUBCOMMANDS = (data, models, train, calibrate, qat, eval, quant_summary, sensitivity, export, inspect, build, bench, report, demo)
SUBCOMMAND_NAMES = tuple(module.NAME for module in SUBCOMMANDS)


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are two lines: a short usage and the error.

    argparse prints the full usage before an error, which for ``calibrate`` is a dozen wrapped
    lines of options that bury the one line that matters; ``--help`` still lists them all.
    Subparsers inherit the class (``add_subparsers`` makes its parsers with ``type(self)``).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.short_usage()}\n{self.prog}: error: {message}\n")

    def short_usage(self) -> str:
        """``usage: PROG REQUIRED-OPTIONS [options] POSITIONALS  (PROG --help lists the options)``"""
        words = [self.prog]
        for action in self._actions:
            if action.option_strings and action.required:
                words.append(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}")
        words.append("[options]")
        words += [action.metavar or action.dest for action in self._get_positional_actions()]
        listed = "commands" if self._subparsers is not None else "options"
        return f"usage: {' '.join(words)}  ({self.prog} --help lists the {listed})"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    """Run one subcommand; user errors print as one line and exit with status 2.

    Under torchrun (several processes), a failing process prints its line with its rank and
    leaves at once, without tearing down the process group, which could wait forever for the
    other ranks (they may be blocked in a collective that this rank will never join): its exit
    is what makes torchrun stop the others, or their collectives fail on the closed connection.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_third_party()
    keep_freed_memory()  # large tensors reused from the heap instead of faulted in afresh every step (swin_trt/allocator.py)
    rank = _launched_rank()
    try:
        if getattr(args, "json", None):
            check_writable(args.json, "--json", "stream")  # before the work, not after it
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        code, line = 130, "interrupted"
    except Exception as error:  # sorted here: user errors become one line, bugs keep their traceback
        message = _user_message(error, args, rank)
        if message is None:
            if rank is None:
                raise
            traceback.print_exc()
            _leave(1)
        code, line = 2, "error: " + ("" if rank is None else f"rank {rank}: ") + message
    print(f"swin-trt {args.command}: {line}", file=sys.stderr)
    if rank is not None:
        _leave(code)
    return code


def _user_message(error: Exception, args: argparse.Namespace, rank: int | None) -> str | None:
    """The one line for ``error``, or None when it is a bug (which keeps its traceback)."""
    if isinstance(error, OutputError) and error.flag is None:
        flag = _flag_of(error.path, args)
        return one_line(error.with_flag(flag) if flag else error)
    if isinstance(error, SwinTrtError):
        return one_line(error)
    if isinstance(error, OSError) and error.filename is not None:  # e.g. a file that vanished mid-run
        return f"{os.fsdecode(error.filename)}: {os.strerror(error.errno).lower() if error.errno else error}"
    if rank is not None and ddp.is_peer_failure(error):
        detail = re.sub(r"^\[[^\]]*\] ", "", one_line(error)).split(". ")[0]  # gloo's "[.../pair.cc:561] Connection closed by peer ..."
        return f"stopped: a collective failed, most likely because another process of this run failed (see its error): {detail}"
    return None


def _flag_of(path: Path, args: argparse.Namespace) -> str | None:
    """The option whose value is ``path`` or a folder above it (``--calib-output-path DIR``)."""
    for dest, value in vars(args).items():
        if isinstance(value, Path) and (value == path or value in path.parents):
            return "--" + dest.replace("_", "-")
    return None


def _launched_rank() -> int | None:
    """This process's rank when torchrun started several (read from torchrun's environment, so
    that single-process errors need no torch import), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ.get("RANK", "0"))


def _leave(code: int) -> NoReturn:
    """Exit now: no process-group teardown, atexit hooks or DataLoader joins that could block."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
