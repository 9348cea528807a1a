"""``swin-trt inspect``: where the Q/DQ nodes of an ONNX graph sit, checked against its recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swin_trt.cli.calibrate import precision_label
from swin_trt.cli.common import emit_json
from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import
from swin_trt.onnx.placement import expected_placement

onnx = lazy_import("onnx")
console = lazy_import("swin_trt.console")
onnx_graph = lazy_import("swin_trt.onnx.graph")

NAME = "inspect"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="count Q/DQ by what they feed; check the recipe",
        description="Count DequantizeLinear outputs by consumer (GEMM weights, GEMM inputs, attention batched matmuls, "
        "residual adds, others), list MatMul/Gemm nodes left unquantized, and check the placement against the recipe "
        "in the sidecar: non-zero exit on a mismatch. Also reads the bit widths the graph really uses (integer range of each "
        "weight, Clip bounds before each activation QuantizeLinear) and checks them against the sidecar's precision.",
    )
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.onnx.is_file():
        raise SwinTrtError(f"ONNX file not found: {args.onnx}")
    try:
        graph = onnx.load(str(args.onnx))
    except Exception as error:  # protobuf DecodeError and friends
        raise SwinTrtError(f"{args.onnx}: not an ONNX model ({error})") from None
    counts = onnx_graph.classify_dequantize(graph)
    left = onnx_graph.unquantized_matmuls(graph)
    ops = [node.op_type for node in graph.graph.node]
    rows = [(kind, counts.get(kind, 0)) for kind in ("gemm_weight", "gemm_input", "attention_matmul", "gemm_output", "residual_add", "other")]
    console.print_table(f"Q/DQ placement of {args.onnx}", ("DequantizeLinear feeds", "count"), rows)
    print(f"QuantizeLinear {ops.count('QuantizeLinear')}, DequantizeLinear {ops.count('DequantizeLinear')}; "
          f"MatMul/Gemm without Q/DQ on both inputs: {len(left)}" + (f" ({', '.join(left[:5])}{' ...' if len(left) > 5 else ''})" if left else ""))
    payload = {"q_nodes": ops.count("QuantizeLinear"), "dq_nodes": ops.count("DequantizeLinear"), **counts, "unquantized_matmuls": left}
    used = onnx_graph.quantized_bits(graph)
    weight_bits, activation_bits = max(used["weight"], default=None), sorted(set(used["activation"]))
    if used["weight"] or used["activation"]:
        print(f"precision in the graph: weights need up to {weight_bits} bits, activations {'/'.join(map(str, activation_bits)) or '-'}-bit "
              "(int8 Q/DQ; a narrower activation range is a Clip before its QuantizeLinear)")
        payload["weight_bits"] = weight_bits
        payload["activation_bits"] = activation_bits[0] if len(activation_bits) == 1 else activation_bits

    sidecar = args.onnx.with_suffix(".json")
    mismatches: list[str] = []
    if sidecar.is_file():
        details = json.loads(sidecar.read_text())
        expected = expected_placement(details)
        for key, value in expected.items():
            if payload.get(key, 0) != value:
                mismatches.append(f"{key} {payload.get(key, 0)} != {value} expected for int8-mode {details.get('int8_mode')}")
        payload["recipe_check"] = "failed" if mismatches else "passed"
        if details.get("int8_mode") is not None:
            mismatches += _precision_mismatches(details, weight_bits, activation_bits)
        print(f"placement vs recipe {details.get('int8_mode') or 'fp32'}: " + ("; ".join(mismatches) if mismatches else "matches"))
    else:
        print(f"no sidecar {sidecar}: recipe not checked")
    emit_json(args, payload)
    if mismatches:
        raise SwinTrtError(f"{args.onnx}: placement does not match its recipe: {mismatches[0]}")
    return 0


def _precision_mismatches(details: dict, weight_bits: int | None, activation_bits: list[int]) -> list[str]:
    """The graph against the sidecar's precision (8 bits for sidecars that predate the field).
    Weights calibrated with max |W| use their full range, but a weight may need fewer bits, never more."""
    declared_w, declared_a = details.get("weight_bits") or 8, details.get("activation_bits") or 8
    print(f"precision of the sidecar: {precision_label(declared_w, declared_a)}")
    found = []
    if weight_bits is not None and weight_bits > declared_w:
        found.append(f"weights need {weight_bits} bits, more than the {declared_w} of the sidecar")
    if activation_bits and activation_bits != [declared_a]:
        found.append(f"activations are {'/'.join(map(str, activation_bits))}-bit, the sidecar says {declared_a}")
    return found
