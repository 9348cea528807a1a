"""``swin-trt build``: an engine from an exported graph."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from swin_trt.cli.common import emit_json, positive_int
from swin_trt.errors import SwinTrtError
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import
from swin_trt.runtimes import BACKENDS, backend_module, check_engine_output, check_result_path

console = lazy_import("swin_trt.console")
onnx_graph = lazy_import("swin_trt.onnx.graph")
ort_runtime = lazy_import("swin_trt.runtimes.onnxruntime")
backend_select = lazy_import("swin_trt.runtimes.select")

TENSORRT_OPTIONS = ("min_batch", "opt_batch", "max_batch", "timing_cache", "builder_optimization_level", "workspace")

NAME = "build"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="build an engine (onnxruntime; OpenVINO or TensorRT where installed)",
        description="Optimise an exported ONNX graph for this machine and save it with a JSON sidecar (source graph and its SHA-256, "
        "mode, CPU) into engines/.",
    )
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="auto (default): onnxruntime for quantized graphs (its engines compute the graph's integers exactly); for graphs "
                        "without Q/DQ, whichever of onnxruntime and OpenVINO (where installed) runs faster here, measured at build time. "
                        "The choice and why go into the sidecar and --json (backend, backend_reason); tensorrt is never chosen by auto")
    parser.add_argument("--ort-mode", choices=("auto", "exact", "fast"), default="auto",
                        help="onnxruntime: fast fuses integer kernels, exact keeps Q/DQ explicit (closest to fake-quant); "
                        "auto (default) takes fast where its int8 kernels compute exact integer results: a CPU with VNNI or AMX, "
                        "or a graph whose int8 matmul operands fit 7 bits (calibrate --wprec 7 --aprec 7); exact elsewhere (docs/cpu.md)")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="engine path (default engines/<onnx name>.ort-<mode>.onnx, .openvino.blob or .plan)")
    group = parser.add_argument_group("tensorrt", "strongly typed engine (precision from the graph: export with --target tensorrt); see docs/tensorrt.md")
    group.add_argument("--min-batch", type=positive_int, metavar="N", help="smallest batch of the optimisation profile (default 1)")
    group.add_argument("--opt-batch", type=positive_int, metavar="N", help="batch TensorRT tunes for (default 32, within min..max)")
    group.add_argument("--max-batch", type=positive_int, metavar="N", help="largest batch of the optimisation profile (default 128)")
    group.add_argument("--timing-cache", type=Path, metavar="FILE", help="read tactic timings from FILE if it exists and save them back (faster rebuilds)")
    group.add_argument("--builder-optimization-level", type=int, choices=range(6), metavar="{0-5}", help="TensorRT's default is 3; higher searches longer")
    group.add_argument("--workspace", type=positive_int, metavar="MiB", help="workspace memory limit for tactics (default: TensorRT's, the GPU's memory)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write {engine, backend, ort_mode (onnxruntime), backend_reason (auto)} as JSON")
    parser.set_defaults(run=run)


def _checked_output(args: argparse.Namespace, default: Path) -> Path:
    """The engine path, refused before the build when it or ``--json`` would overwrite an
    artifact or a sidecar (docs/parity.md: every sidecar describes one file)."""
    output = args.output or default
    check_engine_output(output, args.onnx)
    check_result_path(args.json, (args.onnx, output))
    check_writable(output, "--output")
    return output


def run(args: argparse.Namespace) -> int:
    if args.output is not None:  # an unwritable destination is named before anything is read
        check_writable(args.output, "--output")
    onnx_graph.read_model(args.onnx, "--onnx")  # a corrupt or non-ONNX file is one line here, for every backend
    if args.backend == "tensorrt":
        return _build_tensorrt(args)
    given = [f"--{name.replace('_', '-')}" for name in TENSORRT_OPTIONS if getattr(args, name) is not None]
    if given:
        raise SwinTrtError(f"{', '.join(given)}: TensorRT options, given with --backend {args.backend} (add --backend tensorrt or drop them)")
    if args.backend == "openvino":
        return _report_openvino(args, backend_module("openvino").build(args.onnx, _checked_output(args, _default_output(args, "openvino"))))
    if args.backend == "auto":
        return _build_auto(args)
    return _report_onnxruntime(args, ort_runtime.build(args.onnx, _checked_output(args, _default_output(args, "onnxruntime")), args.ort_mode))


def _default_output(args: argparse.Namespace, backend: str) -> Path:
    if backend == "openvino":
        return Path("engines") / f"{args.onnx.stem}.openvino.blob"
    return Path("engines") / f"{args.onnx.stem}.ort-{ort_runtime.resolve_mode(args.onnx, args.ort_mode).mode}.onnx"


def _build_auto(args: argparse.Namespace) -> int:
    installed = importlib.util.find_spec("openvino") is not None
    outputs = {backend: _checked_output(args, _default_output(args, backend)) for backend in ("onnxruntime", "openvino")}
    builders = {"onnxruntime": lambda onnx, engine: ort_runtime.build(onnx, engine, args.ort_mode),
                "openvino": lambda onnx, engine: backend_module("openvino").build(onnx, engine)}
    details = backend_select.build_fastest(args.onnx, outputs, builders, installed)
    print(f"backend: {details['backend_reason']}")
    return (_report_onnxruntime if details["backend"] == "onnxruntime" else _report_openvino)(args, details)


def _report_onnxruntime(args: argparse.Namespace, details: dict) -> int:
    print(f"onnxruntime mode: {details['ort_mode']} ({details['ort_mode_reason']}); CPU: {details['cpu']['model']}")
    console.print_table("build", ("engine", "backend", "mode", "providers"), [(details["engine"], details["backend"], details["ort_mode"], ", ".join(details["providers"]))])
    emit_json(args, _json(details, ort_mode=details["ort_mode"]))
    return 0


def _report_openvino(args: argparse.Namespace, details: dict) -> int:
    console.print_table("build", ("engine", "backend", "OpenVINO", "device", "precision outside Q/DQ"),
                        [(details["engine"], details["backend"], details["openvino_version"], details["device"], details["inference_precision"])])
    emit_json(args, _json(details))
    return 0


def _json(details: dict, **extra) -> dict:
    """``build --json``: the engine, its backend, and with ``--backend auto`` why that backend."""
    reason = {"backend_reason": details["backend_reason"]} if "backend_reason" in details else {}
    return {"engine": details["engine"], "backend": details["backend"], **extra, **reason}


def _build_tensorrt(args: argparse.Namespace) -> int:
    output = args.output or Path("engines") / f"{args.onnx.stem}.plan"
    check_engine_output(output, args.onnx)
    check_result_path(args.json, (args.onnx, output))
    details = backend_module("tensorrt").build(args.onnx, output, args.min_batch, args.opt_batch, args.max_batch, args.timing_cache,
                                               args.builder_optimization_level, args.workspace)
    build = details["build"]
    console.print_table("build", ("engine", "backend", "TensorRT", "GPU", "batch min/opt/max"),
                        [(details["engine"], details["backend"], details["tensorrt_version"], f"{details['gpu']['name']} (sm {details['gpu']['compute_capability']})",
                          f"{build['min_shape'][0]}/{build['opt_shape'][0]}/{build['max_shape'][0]}")])
    emit_json(args, {"engine": details["engine"], "backend": details["backend"]})
    return 0
