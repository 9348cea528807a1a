"""``swin-trt inspect``: where the Q/DQ nodes of an ONNX graph sit, checked against its recipe and,
with ``--target tensorrt``, against TensorRT's fusion rules; for a built TensorRT engine (or the
inspector JSON ``trtexec --exportLayerInfo`` writes), what each layer runs in."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swin_trt.cli.calibrate import precision_label
from swin_trt.cli.common import emit_json
from swin_trt.errors import SwinTrtError
from swin_trt.io import read_sidecar, sidecar_path
from swin_trt.lazy import lazy_import
from swin_trt.onnx.placement import expected_placement

console = lazy_import("swin_trt.console")
onnx_graph = lazy_import("swin_trt.onnx.graph")
onnx_tensorrt = lazy_import("swin_trt.onnx.tensorrt")
engine_layers = lazy_import("swin_trt.runtimes.engine_layers")
trt_runtime = lazy_import("swin_trt.runtimes.tensorrt")

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")

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
    parser.add_argument("onnx", type=Path, metavar="FILE", help="ONNX graph, TensorRT engine (.plan/.engine), or engine-inspector JSON")
    parser.add_argument("--target", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                        help="tensorrt: also lint the graph against TensorRT's Q/DQ fusion rules, one line per finding (exit 2 on an error)")
    parser.add_argument("--graph", type=Path, metavar="ONNX", help="engines: the source graph, to tell GEMMs from attention matmuls "
                        "(default: the engine sidecar's source_onnx)")
    parser.add_argument("--layers", action="store_true", help="engines: also list every layer with its precision, tactic and fused ONNX nodes")
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.onnx.is_file():
        raise SwinTrtError(f"file not found: {args.onnx}")
    if args.onnx.suffix in ENGINE_SUFFIXES or args.onnx.suffix == ".json":
        return _inspect_engine(args)
    graph = onnx_graph.read_model(args.onnx, "inspect")
    counts = onnx_graph.classify_dequantize(graph)
    left = onnx_graph.unquantized_matmuls(graph)
    ops = [node.op_type for node in graph.graph.node]
    rows = [(kind, counts.get(kind, 0)) for kind in ("gemm_weight", "gemm_input", "attention_matmul", "gemm_output", "residual_add", "other")]
    console.print_table(f"Q/DQ placement of {args.onnx}", ("DequantizeLinear feeds", "count"), rows)
    print(f"QuantizeLinear {ops.count('QuantizeLinear')}, DequantizeLinear {ops.count('DequantizeLinear')}; "
          f"MatMul/Gemm without Q/DQ on both inputs: {len(left)}" + (f" ({', '.join(left[:5])}{' ...' if len(left) > 5 else ''})" if left else ""))
    payload = {"q_nodes": ops.count("QuantizeLinear"), "dq_nodes": ops.count("DequantizeLinear"), **counts, "unquantized_matmuls": left}
    formats = sorted(onnx_graph.qdq_formats(graph))
    graph_format = "/".join(formats) if formats else None
    if graph_format:
        print(f"Q/DQ format in the graph (zero-point types): {graph_format}")
        payload["format"] = graph_format
    used = onnx_graph.quantized_bits(graph) if "fp8" not in formats else {"weight": [], "activation": []}
    weight_bits, activation_bits = max(used["weight"], default=None), sorted(set(used["activation"]))
    if used["weight"] or used["activation"]:
        print(f"precision in the graph: weights need up to {weight_bits} bits, activations {'/'.join(map(str, activation_bits)) or '-'}-bit "
              "(int8 Q/DQ; a narrower activation range is a Clip before its QuantizeLinear)")
        payload["weight_bits"] = weight_bits
        payload["activation_bits"] = activation_bits[0] if len(activation_bits) == 1 else activation_bits

    sidecar = sidecar_path(args.onnx)
    mismatches: list[str] = []
    details = read_sidecar(args.onnx)
    if details is not None:
        expected = expected_placement(details)
        for key, value in expected.items():
            if payload.get(key, 0) != value:
                mismatches.append(f"{key} {payload.get(key, 0)} != {value} expected for int8-mode {details.get('int8_mode')}")
        payload["recipe_check"] = "failed" if mismatches else "passed"
        if details.get("int8_mode") is not None:
            declared = details.get("format") or "int8"  # sidecars from before FP8 are int8
            if graph_format != declared:
                mismatches.append(f"the graph's Q/DQ are {graph_format}, the sidecar says format {declared}")
            if declared == "int8":
                mismatches += _precision_mismatches(details, weight_bits, activation_bits)
        kept = len(details.get("disabled") or ())
        recipe = (details.get("int8_mode") or "fp32") + (f" with {kept} quantizers kept in higher precision" if kept else "")
        print(f"placement vs recipe {recipe}: " + ("; ".join(mismatches) if mismatches else "matches"))
    else:
        print(f"no sidecar {sidecar}: recipe not checked")
    findings = onnx_tensorrt.lint(graph) if args.target == "tensorrt" else []
    for finding in findings:
        print(finding.line())
    if args.target == "tensorrt":
        print(onnx_tensorrt.summary_line(findings))
        payload["tensorrt_lint"] = [finding.as_dict() for finding in findings]
    emit_json(args, payload)
    if mismatches:
        raise SwinTrtError(f"{args.onnx}: placement does not match its recipe: {mismatches[0]}")
    errors = [f for f in findings if f.severity == onnx_tensorrt.ERROR]
    if errors:
        raise SwinTrtError(f"{args.onnx}: {len(errors)} TensorRT rule violation(s), first: {errors[0].line()}")
    return 0


def _inspect_engine(args: argparse.Namespace) -> int:
    """Layer precisions of a TensorRT engine, or of an inspector JSON file saved elsewhere."""
    if args.onnx.suffix == ".json":
        try:
            information = json.loads(args.onnx.read_text())
        except json.JSONDecodeError as error:
            raise SwinTrtError(f"{args.onnx}: not JSON ({error.msg} at line {error.lineno})") from None
        source = args.graph
    else:
        engine = trt_runtime.Engine(args.onnx)
        information = engine.layer_information()
        source = args.graph or engine.details.get("source_onnx")
    layers = engine_layers.parse_engine_information(information)
    graph = onnx_graph.read_model(source, "--graph" if args.graph else "the engine's source graph") if source and (args.graph or Path(source).is_file()) else None
    summary = engine_layers.summarize(layers, graph)
    if args.layers:
        console.print_table(f"layers of {args.onnx}", ("layer", "type", "precision", "tactic", "fused ONNX nodes"),
                            [(layer.name, layer.layer_type, layer.precision, layer.tactic, ", ".join(layer.onnx_nodes)) for layer in layers])
    console.print_table(f"GEMM precision in {args.onnx} ({len(layers)} layers; roles from {source if graph is not None else 'kernel names'})",
                        ("matmuls", *engine_layers.FLOAT_PRECISIONS, "other"),
                        [(role, *(summary.counts[role].get(p, 0) for p in engine_layers.FLOAT_PRECISIONS),
                          sum(n for p, n in summary.counts[role].items() if p not in engine_layers.FLOAT_PRECISIONS)) for role in engine_layers.ROLES])
    for fallback in summary.fallbacks:
        print(f"not INT8: {fallback.role} {fallback.onnx_node} runs {fallback.precision} in layer {fallback.layer}")
    if summary.standalone_qdq:
        print(f"{len(summary.standalone_qdq)} layer(s) only quantize/dequantize (Q/DQ not fused): {', '.join(summary.standalone_qdq[:5])}"
              + (" ..." if len(summary.standalone_qdq) > 5 else ""))
    if summary.unmatched:
        print(f"{len(summary.unmatched)} ONNX matmul(s) not named by any layer's metadata: {', '.join(summary.unmatched[:5])}")
    emit_json(args, summary.as_dict())
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
