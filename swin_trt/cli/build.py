"""``swin-trt build``: an engine from an exported graph."""

from __future__ import annotations

import argparse
from pathlib import Path

from swin_trt.cli.common import emit_json
from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import

console = lazy_import("swin_trt.console")
ort_runtime = lazy_import("swin_trt.runtimes.onnxruntime")

NAME = "build"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="build an engine (onnxruntime; TensorRT is planned)",
        description="Optimise an exported ONNX graph for this machine and save it with a JSON sidecar into engines/.",
    )
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE")
    parser.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                        help="onnxruntime (default); tensorrt is planned and refused in this version")
    parser.add_argument("--ort-mode", choices=("exact", "fast"), default="fast",
                        help="onnxruntime: fast (default) fuses Q/DQ and MatMul into integer kernels, faster but rounding differently "
                        "from fake-quant, by an amount that depends on the CPU (docs/onnx.md); exact keeps Q/DQ explicit, closest to fake-quant")
    parser.add_argument("--output", type=Path, metavar="FILE", help="engine path (default engines/<onnx name>.<backend>.<mode>.onnx)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write {engine, backend} as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.backend == "tensorrt":
        raise SwinTrtError("the TensorRT backend is not available in this version: build with --backend onnxruntime")

    output = args.output or Path("engines") / f"{args.onnx.stem}.ort-{args.ort_mode}.onnx"
    details = ort_runtime.build(args.onnx, output, args.ort_mode)
    console.print_table("build", ("engine", "backend", "mode", "providers"), [(details["engine"], details["backend"], details["ort_mode"], ", ".join(details["providers"]))])
    emit_json(args, {"engine": details["engine"], "backend": details["backend"]})
    return 0
