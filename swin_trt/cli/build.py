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
        help="build an engine (onnxruntime; TensorRT where installed)",
        description="Optimise an exported ONNX graph for this machine and save it with a JSON sidecar (source graph and its SHA-256, "
        "mode, CPU) into engines/.",
    )
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE")
    parser.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime")
    parser.add_argument("--ort-mode", choices=("auto", "exact", "fast"), default="auto",
                        help="onnxruntime: fast fuses integer kernels, exact keeps Q/DQ explicit (closest to fake-quant); "
                        "auto (default) takes fast where this CPU's int8 kernels hold the default parity gate (VNNI or AMX), "
                        "exact elsewhere (docs/parity.md)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="engine path (default engines/<onnx name>.ort-<mode>.onnx)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write {engine, backend, ort_mode} as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.backend == "tensorrt":
        raise SwinTrtError("the TensorRT backend is not available in this version: build with --backend onnxruntime")

    output = args.output or Path("engines") / f"{args.onnx.stem}.ort-{ort_runtime.resolve_mode(args.onnx, args.ort_mode)[0]}.onnx"
    details = ort_runtime.build(args.onnx, output, args.ort_mode)
    print(f"onnxruntime mode: {details['ort_mode']} ({details['ort_mode_reason']}); CPU: {details['cpu']['model']}")
    console.print_table("build", ("engine", "backend", "mode", "providers"), [(details["engine"], details["backend"], details["ort_mode"], ", ".join(details["providers"]))])
    emit_json(args, {"engine": details["engine"], "backend": details["backend"], "ort_mode": details["ort_mode"]})
    return 0
