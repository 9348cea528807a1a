"""``swin-trt export``: ONNX with QuantizeLinear/DequantizeLinear."""

from __future__ import annotations

import argparse
from pathlib import Path

from swin_trt.cli.calibrate import add_int8_mode
from swin_trt.cli.common import add_model_args, emit_json
from swin_trt.errors import SwinTrtError
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import
from swin_trt.onnx.layout import DEFAULT_LAYOUT, LAYOUTS

console = lazy_import("swin_trt.console")
export_stage = lazy_import("swin_trt.pipelines.export")

NAME = "export"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="export a calibrated model to ONNX with Q/DQ",
        description="Export a calibrated checkpoint to ONNX (opset 19, dynamic batch): one QuantizeLinear/DequantizeLinear "
        "pair per enabled quantizer (with --weights int8, weights are INT8 initializers behind a DequantizeLinear). "
        "--no-quant (or an FP checkpoint) exports the FP32 model, the speed baseline. "
        "A JSON sidecar is written beside the graph.",
    )
    add_model_args(parser, resume_help="calibrated (or FP) checkpoint (required)")
    add_int8_mode(parser, default=None)
    parser.add_argument("--output", type=Path, metavar="FILE", help="ONNX path (default export/<model>_<int8 mode or fp32>.onnx)")
    parser.add_argument("--target", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                        help="tensorrt: the graph a strongly typed TensorRT engine needs (FP16 outside Q/DQ, INT8 weights, each DequantizeLinear "
                        "feeding its MatMul; --int8-mode trt only); see docs/tensorrt.md")
    parser.add_argument("--weights", choices=("fp32", "int8", "fp8"), default=None,
                        help="int8 / fp8: store weights as INT8 (or, for an FP8 checkpoint, float8e4m3fn) initializers behind "
                        "DequantizeLinear (default fp32; the checkpoint's format with --target tensorrt)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                        help="precision of the non-quantized parts, inputs and logits stay float32 (default fp32; fp16 with --target tensorrt)")
    parser.add_argument("--no-quant", action="store_true", help="export the FP weights without quantizers")
    parser.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT,
                        help="how shifted windows move: gather (one Gather each way per block, the default) or timm (roll and window "
                        "partition as timm writes them, every graph before 0.3); the same values either way, see docs/onnx.md")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write {onnx, q_nodes, dq_nodes, bytes} as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.resume:
        raise SwinTrtError("--resume is required: the calibrated checkpoint to export")
    if args.output:
        check_writable(args.output, "--output")
    details = export_stage.export_checkpoint(args.resume, args.output, args.model, args.cfg, args.int8_mode, args.weights, args.no_quant, args.precision,
                                          args.target, args.layout)
    console.print_table("export", ("onnx", "int8 mode", "format", "QuantizeLinear", "DequantizeLinear", "weights", "MB"),
                [(details["onnx"], details["int8_mode"] or "-", details["format"] or "-", details["q_nodes"], details["dq_nodes"], details["weights"], details["bytes"] / 1e6)])
    emit_json(args, {k: details[k] for k in ("onnx", "q_nodes", "dq_nodes", "bytes")})
    return 0
