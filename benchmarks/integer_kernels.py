"""Whether onnxruntime's integer GEMM sums a real graph's Linear layers exactly on this CPU.

``benchmarks/fast_drift.py`` found that on the AVX2 EPYC an otherwise exact engine whose Linear
layers run as ``MatMulInteger`` drifts from the fake-quant reference as far as a fast engine does
(r median 0.37), while on the AVX-512 VNNI EPYC the same session stays at 6e-5. If both kernels
summed exactly, both CPUs would compute the same integers and score alike, so one of them does
not, for this graph's operands: zero points of 128 on both sides, K up to 4 x channels. The
suite's kernel test (``tests/test_parity.py``) takes the saturation worst case at K = 64 with a
zero A zero point; this script takes every quantized Linear layer of an exported graph, its real
weights quantized as the graph quantizes them, and random activations over the whole uint8 range
with the graph's own zero point, and compares onnxruntime's int32 result with numpy's int64 one.

Both stored forms a fast engine runs are checked: ``unsigned`` (weights as uint8 with zero point
128: ``swin_trt.onnx.fuse.unsigned_int8_operands``, what ``--ort-mode fast`` builds on CPUs without
an int8 dot product) and ``signed`` (int8 weights, as exported: what fast builds with VNNI/AMX);
each with the weights prepacked at load, as in an engine, and with prepacking off, as in the
suite's test, whose weights are an input.

    python benchmarks/integer_kernels.py --graph W/export/trt_fp32.onnx   # a parity_pairings.py workdir's graph
    qemu-x86_64 -cpu Haswell python benchmarks/integer_kernels.py --graph W/export/trt_fp32.onnx --emulated-cpu haswell

The second line runs MLAS's AVX2 kernels on any x86 CPU: QEMU's user-mode emulator (Debian's qemu-user)
presents a Haswell's CPUID (AVX2, no AVX-512, no VNNI), from which MLAS picks its kernels.

Saves benchmarks/results/integer_kernels/<cpu kind>.json (CPU model and ISA flags, versions).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from fast_drift import matmul_families
from machine import add_emulated_cpu_argument, describe, result_kind
from onnx import TensorProto, helper, numpy_helper

from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.onnx import fuse
from swin_trt.onnx import graph as onnx_graph
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "integer_kernels"


def integer_forms(model: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    """The two forms of ``model`` a fast engine runs, each with its weights stored as the integers
    its QuantizeLinear computes (``export --weights int8``'s own conversion): ``signed`` (int8) and
    ``unsigned`` (uint8, zero point + 128)."""
    signed = copy.deepcopy(model)
    onnx_graph.store_int8_weights(signed)
    unsigned = copy.deepcopy(signed)
    fuse.unsigned_int8_operands(unsigned)
    return {"signed": signed, "unsigned": unsigned}


def quantized_linears(model: onnx.ModelProto) -> list[dict]:
    """Each quantized Linear's integer operands as its MatMul reads them, from a graph whose weights
    are stored as integers (:func:`integer_forms`): the weight as a (K, N) integer matrix with its
    per-column scales and zero points, and the activation's zero point."""
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    found = []
    for matmul, left, right, transpose in matmul_families(model)["linear"]:
        weight, scale, zero = (initializers[name] for name in right.input[:3])
        if transpose is not None:
            weight = weight.transpose(list(transpose.attribute[0].ints))
        input_zero = initializers[left.input[2]]
        if input_zero.dtype == np.int8:  # onnxruntime's integer kernels take the activation as uint8: level + 128, zero point + 128
            input_zero = (input_zero.astype(np.int16) + 128).astype(np.uint8)
        found.append({"name": matmul.name, "weight": weight, "weight_scale": scale, "weight_zero": zero, "input_zero": input_zero})
    return found


def matmul_integer(activations: np.ndarray, layer: dict, prepack: bool = True) -> np.ndarray:
    """onnxruntime's ``MatMulInteger`` on the CPU provider, no graph optimisation: the kernel alone,
    the weights a constant as in an engine, so MLAS packs them once at load (``prepack``; off, it
    packs them at every call, the path the suite's kernel test takes with a weight fed as input)."""
    rows, depth = activations.shape
    columns = layer["weight"].shape[1]
    node = helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])
    graph = helper.make_graph([node], "matmul_integer",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [rows, depth])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [rows, columns])],
                              [numpy_helper.from_array(layer["weight"], "b"), numpy_helper.from_array(np.asarray(layer["input_zero"]).reshape(()), "a_zero"),
                               numpy_helper.from_array(layer["weight_zero"], "b_zero")])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"a": activations})[0]


def exact_sums(activations: np.ndarray, layer: dict) -> np.ndarray:
    """The same product in int64: (a - za) @ (w - zw)."""
    return (activations.astype(np.int64) - int(layer["input_zero"])) @ (layer["weight"].astype(np.int64) - layer["weight_zero"].astype(np.int64))


def check(model: onnx.ModelProto, rows: int, seed: int, prepack: bool = True) -> dict:
    """Every quantized Linear of ``model`` on ``rows`` random uint8 activation rows (the whole range)."""
    rng = np.random.default_rng(seed)
    layers, inexact = quantized_linears(model), []
    for layer in layers:
        activations = rng.integers(0, 256, size=(rows, layer["weight"].shape[0]), dtype=np.uint8)
        got, expected = matmul_integer(activations, layer, prepack), exact_sums(activations, layer)
        if not np.array_equal(got, expected):
            wrong = got != expected
            inexact.append({"layer": layer["name"], "k": int(layer["weight"].shape[0]), "n": int(layer["weight"].shape[1]),
                            "share_wrong": float(wrong.mean()), "max_abs_error": int(np.abs(got.astype(np.int64) - expected).max())})
    return {"layers": len(layers), "inexact": inexact, "weight_dtype": str(layers[0]["weight"].dtype) if layers else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, required=True, help="an exported 8-bit graph (FP32 weights or INT8-stored)")
    parser.add_argument("--rows", type=int, default=196, help="activation rows per layer (tokens)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="results file (default benchmarks/results/integer_kernels/<cpu kind>.json)")
    add_emulated_cpu_argument(parser)
    args = parser.parse_args()
    if not args.graph.is_file():
        parser.error(f"--graph {args.graph}: no such file; give an exported graph (swin-trt export)")
    cpu = read_cpu()
    forms = {f"{name}, {'prepacked' if prepack else 'not prepacked'}": check(graph, args.rows, args.seed, prepack)
             for name, graph in sorted(integer_forms(onnx.load(args.graph)).items(), reverse=True) for prepack in (True, False)}
    print_table(f"onnxruntime MatMulInteger against int64 sums, {args.graph.name}, {describe(cpu, args.emulated_cpu)}", ["stored form, weights", "type", "Linear layers", "inexact", "worst |error|"],
                [[form, r["weight_dtype"], r["layers"], len(r["inexact"]), max((i["max_abs_error"] for i in r["inexact"]), default=0)] for form, r in forms.items()])
    output = args.output or RESULTS / f"{result_kind(cpu, args.emulated_cpu)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "graph": str(args.graph), "rows": args.rows,
                                   "seed": args.seed, "forms": forms, "cpu": cpu.as_json(), "emulated_cpu": args.emulated_cpu,
                                   "load_average": os.getloadavg(), "versions": package_versions()}, indent=2))
    partial.replace(output)
    print(f"saved {output}")


if __name__ == "__main__":
    main()
