"""Where a fast onnxruntime engine's drift from the fake-quant reference comes from, on this CPU:
the same exported graph run as sessions that differ in one thing each, scored against the
reference exactly as the parity gate scores an engine.

``benchmarks/parity_pairings.py`` measures each engine's r (median, p95) against its reference;
on the deep swin_tiny_fashion the fast engines fail the p95 bound on the AVX2 EPYC and pass on
the Zen 5 VNNI EPYC. This script takes that run's workdir (its calibrations, graphs and cached
reference logits) and asks which arithmetic moves r:

- ``exact``: what ``--ort-mode exact`` runs (basic optimisations, Q/DQ handling off);
- ``float fusions``: every onnxruntime optimisation except the Q/DQ fusions;
- ``fast, signed`` / ``fast, unsigned``: every optimisation, the graph's int8 Q/DQ as exported or
  stored as uint8 (what a fast engine holds without / with VNNI: ``unsigned_int8_operands``);
- ``integer linear`` / ``integer q.k`` / ``integer attn.v``: the exact session with one family of
  quantized matmuls written as ``MatMulInteger`` (uint8 operands, int32 sums, one float scale
  after: the arithmetic of onnxruntime's fused kernels) and nothing else changed, so a family's own
  contribution shows without any other fusion. Whether the kernel's sums are exact on this CPU for
  the graph's own layers is ``benchmarks/integer_kernels.py``'s question.

Each session is also scored against the fake-quant model run in float64, which says whether an
arithmetic is nearer the model's mathematics or only nearer the float32 reference's rounding.

    python benchmarks/parity_pairings.py --checkpoint benchmarks/models/swin_tiny_fashion.pth --data-path DATA --workdir W
    python benchmarks/fast_drift.py --checkpoint benchmarks/models/swin_tiny_fashion.pth --data-path DATA --workdir W
    qemu-x86_64 -cpu Haswell python benchmarks/fast_drift.py ... --workdir W2 --emulated-cpu haswell   # AVX2 kernels (integer_kernels.py)

Under the emulator PyTorch takes its AVX2 kernels too, so its references are computed as on an AVX2 CPU; give
it a workdir of its own (the references are cached there).

Saves benchmarks/results/fast_drift/<cpu kind>.json (CPU model and ISA flags, load average before
and after, versions, seconds).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from machine import add_emulated_cpu_argument, describe, result_kind
from onnx import TensorProto, helper
from parity_pairings import cached_logits, val_images

from swin_trt.api import open_model
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.onnx import fuse
from swin_trt.parity.compare import quantile, relative_errors
from swin_trt.runtimes import onnxruntime as ort_runtime
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "fast_drift"
FAMILIES = ("linear", "q.k", "attn.v")


def matmul_families(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto, onnx.NodeProto | None]]]:
    """The quantized MatMuls of an exported graph by what they multiply: ``linear`` (an
    activation by quantized weights), ``q.k`` (by a transposed activation), ``attn.v`` (by an
    activation); each as (matmul, A's DequantizeLinear, B's DequantizeLinear, B's Transpose)."""
    producer = {output: node for node in model.graph.node for output in node.output}
    constants = {initializer.name for initializer in model.graph.initializer}
    found: dict[str, list] = {family: [] for family in FAMILIES}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        left, right, transpose = producer.get(node.input[0]), producer.get(node.input[1]), None
        if right is not None and right.op_type == "Transpose":
            transpose, right = right, producer.get(right.input[0])
        if not all(n is not None and n.op_type == "DequantizeLinear" for n in (left, right)):
            continue
        quantize = producer.get(right.input[0])  # weights are exported as QuantizeLinear(float initializer)
        weights = quantize is None or quantize.input[0] in constants
        found["linear" if weights else "q.k" if transpose is not None else "attn.v"].append((node, left, right, transpose))
    return found


def integer_matmuls(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    """A copy of an unsigned graph with ``family``'s matmuls as MatMulInteger on the quantized
    operands, cast to float and scaled by the product of the two scales: the integers of the
    fused kernels, with the reference's float rounding left everywhere else."""
    model = copy.deepcopy(model)
    replaced = {}
    for node, left, right, transpose in matmul_families(model)[family]:
        stem, operand = node.name + "_integer", right.input[0]
        nodes = []
        if transpose is not None:
            nodes.append(helper.make_node("Transpose", [operand], [stem + "_right"], perm=list(transpose.attribute[0].ints)))
            operand = stem + "_right"
        nodes += [helper.make_node("MatMulInteger", [left.input[0], operand, left.input[2], right.input[2]], [stem + "_int32"]),
                  helper.make_node("Cast", [stem + "_int32"], [stem + "_float"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [left.input[1], right.input[1]], [stem + "_scale"]),
                  helper.make_node("Mul", [stem + "_float", stem + "_scale"], [node.output[0]])]
        replaced[node.name] = nodes
    order = [n for node in model.graph.node for n in replaced.get(node.name, [node])]
    del model.graph.node[:]
    model.graph.node.extend(order)
    return model


def session_runner(model: onnx.ModelProto, mode: str, qdq_fusions: bool = True) -> Callable[[torch.Tensor], np.ndarray]:
    """``model`` in onnxruntime with the options of ``--ort-mode`` ``mode`` (the engines' own,
    ``session_options``), in fast mode optionally without its Q/DQ fusions (exact runs without them)."""
    options = ort_runtime.session_options(mode)
    if mode == "fast" and not qdq_fusions:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda chunk: session.run(None, {name: chunk.numpy()})[0]


def sessions(graph: onnx.ModelProto) -> dict[str, Callable[[], Callable]]:
    """Each variant as a factory, so that only one session is alive at a time."""
    unsigned = copy.deepcopy(graph)
    fuse.unsigned_int8_operands(unsigned)
    variants = {
        "exact": lambda: session_runner(graph, "exact"),
        "float fusions": lambda: session_runner(graph, "fast", qdq_fusions=False),
        "fast, signed": lambda: session_runner(fuse.onnxruntime_fusions(copy.deepcopy(graph)), "fast"),
        "fast, unsigned": lambda: session_runner(fuse.onnxruntime_fusions(copy.deepcopy(unsigned)), "fast"),
    }
    for family in FAMILIES:
        variants[f"integer {family}"] = lambda family=family: session_runner(integer_matmuls(unsigned, family), "exact")
    return variants


def drift(logits: np.ndarray, reference: np.ndarray, fp32: np.ndarray) -> dict[str, float]:
    errors = relative_errors(logits, reference, fp32)
    return {"share_above_0.01": float(np.mean(errors > 0.01)), "rel_error_median": float(np.median(errors)),
            "rel_error_p95": quantile(errors, 0.95), "agreement": float(np.mean(logits.argmax(1) == reference.argmax(1)) * 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the trained checkpoint parity_pairings.py was given")
    parser.add_argument("--data-path", type=Path, required=True, help="its dataset (the val split is scored)")
    parser.add_argument("--workdir", type=Path, required=True, help="a finished benchmarks/parity_pairings.py workdir")
    parser.add_argument("--recipes", nargs="+", default=["trt", "1"])
    parser.add_argument("--max-images", type=int, default=None, help="the first N val images (default: the whole split)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--output", type=Path, default=None, help="results file (default benchmarks/results/fast_drift/<cpu kind>.json)")
    add_emulated_cpu_argument(parser)
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    images, _ = val_images(args.checkpoint, args.data_path, args.max_images)
    cache = args.workdir / f"logits_{len(images)}"
    rows = []
    for recipe in args.recipes:
        calibrated, exported = args.workdir / "calib" / recipe / f"{args.checkpoint.stem}_calib.pth", args.workdir / "export" / f"{recipe}_fp32.onnx"
        if not (calibrated.is_file() and exported.is_file()):
            sys.exit(f"error: {calibrated} or {exported} missing: run benchmarks/parity_pairings.py with --workdir {args.workdir} first")
        loaded = open_model(checkpoint=calibrated)
        fp32 = cached_logits(cache / f"{recipe}_fp32", loaded.fp_model().eval(), images, args.batch_size)[0]
        reference = cached_logits(cache / f"{recipe}_fakequant_fp32", loaded.model.eval(), images, args.batch_size)[0]
        fp64_model = loaded.model.eval().double()
        reference64 = cached_logits(cache / f"{recipe}_fakequant_fp64", lambda chunk, m=fp64_model: m(chunk.double()), images, args.batch_size)[0]
        rows.append({"recipe": recipe, "session": "fake-quant reference, float32", "against_float32": drift(reference, reference, fp32),
                     "against_float64": drift(reference, reference64, fp32)})
        graph = onnx.load(str(exported))
        for label, make in sessions(graph).items():
            print(f"[{time.strftime('%H:%M:%S')}] {recipe}: {label}", file=sys.stderr, flush=True)
            run = make()
            logits = np.concatenate([run(chunk) for chunk in images.split(args.batch_size)])
            rows.append({"recipe": recipe, "session": label, "against_float32": drift(logits, reference, fp32),
                         "against_float64": drift(logits, reference64, fp32)})
    cpu = read_cpu()
    print_table(f"fast engine drift by arithmetic, {len(images)} val images ({describe(cpu, args.emulated_cpu)})",
                ("recipe", "session", "share r > 0.01", "r median", "r p95", "vs float64: r median", "r p95"),
                [(row["recipe"], row["session"], f"{row['against_float32']['share_above_0.01']:.2f}", f"{row['against_float32']['rel_error_median']:.3g}",
                  f"{row['against_float32']['rel_error_p95']:.3g}", f"{row['against_float64']['rel_error_median']:.3g}",
                  f"{row['against_float64']['rel_error_p95']:.3g}") for row in rows])
    output = args.output or RESULTS / f"{result_kind(cpu, args.emulated_cpu)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    temporary.write_text(json.dumps({
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "checkpoint": str(args.checkpoint), "data": str(args.data_path),
        "images": len(images), "rows": rows, "cpu": cpu.as_json(), "emulated_cpu": args.emulated_cpu, "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "seconds": time.time() - started, "versions": package_versions(),
    }, indent=2) + "\n")
    temporary.replace(output)
    print(f"saved {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
