"""Is the engine's graph the reference's quantized model?

:func:`graph_differences` compares the engine's source graph, tensor by tensor, with a fresh
in-memory export of ``--reference`` under the settings its sidecar records (recipe, precision,
target, fusion passes, weights format; :func:`swin_trt.pipelines.export.export_graph`): the node
sequence (operator, name, inputs, outputs, attributes), and every constant a node reads, by the
node and input it feeds: integer and float weights, biases, LayerNorm parameters, position-bias
tables, the patch embedding and the head, every QuantizeLinear and DequantizeLinear scale and zero
point. Export is deterministic (``tests/test_graph_check.py``), so a right graph is equal to the
bit, in every precision, and the first line names the first tensor that differs in a wrong one.
No arithmetic is involved.

Why beside the logit error: the logit error cannot tell an FP16 engine of the right model from
one of another recipe. An FP16 graph rounds every tensor to float16 before quantizing it; a value
within half a float16 step of a rounding boundary lands on the neighbouring integer, and that
one-step error carries the next layers' inputs across further boundaries, so a right FP16 engine
is nearly as far from the reference as a wrong recipe (docs/parity.md). Nor can it see one edited
bias element. Together with the provenance chain (the engine was built from this graph, SHA-256
checked) the graph check pins the model; the logit bounds then check that the runtime computed it.

:func:`mismatches` is the quantizer-level view against a live fake-quant model (scales and weights
by quantizer name), for graphs whose export settings are unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from swin_trt.lazy import lazy_import
from swin_trt.onnx.graph import constant
from swin_trt.quantization.model import is_weight_quantizer, named_quantizers
from swin_trt.quantization.quantizer import TensorQuantizer, fp8_levels

onnx = lazy_import("onnx")

DEQUANTIZE = ".DequantizeLinear"


@dataclass(frozen=True)
class GraphQuantizer:
    scale: np.ndarray | None  # in the graph's type; None when not a constant
    weight: np.ndarray | None  # a weight quantizer's constant input: INT8 values, or the float weight its QuantizeLinear reads


def graph_quantizers(onnx_path: str | Path) -> dict[str, GraphQuantizer]:
    """The quantizers of a graph, from the DequantizeLinear nodes export named after them."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    found = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.name.endswith(DEQUANTIZE):
            source = producers.get(node.input[0])
            weight = constant(graph, source.input[0] if source is not None and source.op_type == "QuantizeLinear" else node.input[0])
            found[node.name[: -len(DEQUANTIZE)]] = GraphQuantizer(constant(graph, node.input[1]), weight)
    return found


def _differs(label: str, got: np.ndarray, expected: np.ndarray) -> str | None:
    """Where ``got`` and ``expected`` (already in ``got``'s type) are not equal, in words."""
    got, expected = got.reshape(-1), expected.reshape(-1)
    if got.size != expected.size:
        return f"{got.size} {label} value(s) in the graph, {expected.size} in the reference"
    differ = np.flatnonzero(got != expected)
    if not differ.size:
        return None
    first = differ[0]
    where = f" (element {first}; {differ.size} of {got.size} differ)" if got.size > 1 else ""
    return f"{label} {got[first]:.6g} in the graph, {expected[first]:.6g} in the reference{where}"


def _reference_weight(quantizer: TensorQuantizer, weight: torch.Tensor, stored: np.ndarray) -> np.ndarray:
    """The reference's weight as the graph stores it: INT8 values ``clamp(round(w / s))`` (as
    export computes them), FP8 values ``fp8(clamp(w / s, -448, 448))``, or the float weight in the
    graph's type."""
    weight = weight.detach().float().cpu()
    scale = quantizer.scale().detach().float().cpu()
    if quantizer.per_channel:
        scale = scale.reshape([-1 if axis == quantizer.axis % weight.ndim else 1 for axis in range(weight.ndim)])

    def integers(values: torch.Tensor) -> np.ndarray:
        return torch.round(values / scale).clamp(quantizer.qmin, quantizer.qmax).to(torch.int8).numpy()

    if stored.dtype == np.int8:
        return integers(weight)
    if stored.dtype.name == "float8_e4m3fn":  # FP8 weights (ml_dtypes): what QuantizeLinear stores, saturated at +-448
        return fp8_levels(weight / scale).numpy().astype(stored.dtype)
    if quantizer.num_bits < 8 and np.array_equal(integers(torch.from_numpy(stored.astype(np.float32))), integers(weight)):
        return stored  # export clamps a narrow-range float weight to [qmin*s, qmax*s] (fold_weight_clips): the same integers
    return weight.numpy().astype(stored.dtype)


def mismatches(fakequant: torch.nn.Module, onnx_path: str | Path) -> list[str]:
    """One line per quantizer where the graph and the reference differ: quantized in one only, a
    scale that is not the reference's (in the graph's scale type, as export rounds it), or a
    weight that is not the reference's (its INT8 values, or the float weight the graph quantizes)."""
    reference = {name: quantizer for name, quantizer in named_quantizers(fakequant) if quantizer.enabled}
    modules = dict(fakequant.named_modules())
    graph = graph_quantizers(onnx_path)
    found = [f"{name}: quantized in the reference, not in the graph" for name in reference if name not in graph]
    found += [f"{name}: quantized in the graph, not in the reference" for name in graph if name not in reference]
    for name in (n for n in graph if n in reference):
        quantizer, stored = reference[name], graph[name]
        if stored.scale is None:
            found.append(f"{name}: its scale is not a constant in the graph")
            continue
        problems = [_differs("scale", stored.scale, quantizer.scale().detach().cpu().numpy().astype(stored.scale.dtype))]
        if is_weight_quantizer(name) and stored.weight is not None:
            weight = modules[name.rsplit(".", 1)[0]].weight
            problems.append(_differs("weight", stored.weight, _reference_weight(quantizer, weight, stored.weight)))
        found += [f"{name}: {problem}" for problem in problems if problem]
    return found


# ---------------------------------------------------------------------------------------------
# the complete check: the graph against a fresh export


ROLES = {"QuantizeLinear": ("input", "scale", "zero point"), "DequantizeLinear": ("input", "scale", "zero point"),
         "LayerNormalization": ("input", "gamma", "beta"), "MatMul": ("input A", "input B"), "Gemm": ("input A", "input B", "bias C"),
         "Conv": ("input", "weight", "bias"), "Add": ("input A", "input B"), "Mul": ("input A", "input B")}


class _Constants:
    """The constant tensors of a graph (initializers and Constant nodes), as arrays on first use."""

    def __init__(self, graph):
        self.protos = {init.name: init for init in graph.initializer}
        self.protos.update({node.output[0]: next(a.t for a in node.attribute if a.name == "value")
                            for node in graph.node if node.op_type == "Constant" and any(a.name == "value" for a in node.attribute)})
        self.arrays: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.protos

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = onnx.numpy_helper.to_array(self.protos[name])
        return self.arrays[name]


def _value_difference(got: np.ndarray, want: np.ndarray) -> str | None:
    """Where two constants differ, bit for bit (NaN and -0.0 included), in words; None when equal."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"{got.dtype} {list(got.shape)} in the graph, {want.dtype} {list(want.shape)} in the reference export"
    flat_got, flat_want = got.reshape(-1), want.reshape(-1)
    if got.dtype.itemsize in (1, 2, 4, 8):  # compare the bits: NaN equals itself, -0.0 differs from 0.0
        bits = np.dtype(f"u{got.dtype.itemsize}")
        flat_got, flat_want = flat_got.view(bits), flat_want.view(bits)
    differ = np.flatnonzero(flat_got != flat_want)
    if not differ.size:
        return None
    first = int(differ[0])
    where = f"element {tuple(int(i) for i in np.unravel_index(first, got.shape)) if got.ndim > 1 else first}: " if got.size > 1 else ""
    share = f" ({differ.size} of {got.size} values differ)" if got.size > 1 else ""
    return f"{where}{got.reshape(-1)[first]:.6g} in the graph, {want.reshape(-1)[first]:.6g} in the reference export{share}"


def _node_label(node) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else f"{node.op_type} writing {node.output[0]!r}"


def _role(node, slot: int) -> str:
    roles = ROLES.get(node.op_type, ())
    return roles[slot] if slot < len(roles) else f"input {slot}"


def _attributes(node) -> dict[str, bytes]:
    return {a.name: a.SerializeToString(deterministic=True) for a in node.attribute if not (node.op_type == "Constant" and a.name == "value")}


def _sources(model) -> dict[str, tuple]:
    """Each computed tensor by where it comes from: a graph input (its position) or a node output
    (node index, output slot). The exporter numbers its node and tensor names with counters that
    shift when another calibration shares a different number of equal constants, so graphs are
    compared by this wiring, not by those names."""
    sources = {value.name: ("graph input", index) for index, value in enumerate(model.graph.input)}
    for index, node in enumerate(model.graph.node):
        sources.update({name: ("output", index, slot) for slot, name in enumerate(node.output)})
    return sources


def _quantizer_node(node) -> bool:
    """A Q/DQ node export named after its quantizer (those names are compared: localize relies on them)."""
    return node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.name.endswith(f".{node.op_type}")


def graph_differences(graph, reference) -> list[str]:
    """One line per difference between ``graph`` and ``reference`` (``onnx.ModelProto``s: the
    engine's source graph and a fresh export of the reference), in the graph's node order.

    Nodes are compared in sequence: operator, domain, attributes, the names of the Q/DQ nodes
    named after quantizers, and the wiring (each non-constant input comes from the same graph
    input or the same output of the same earlier node); the first structural difference ends the
    comparison (everything after it is misaligned). Each constant a node reads is compared by
    value, bit for bit, and named with the node and the input it feeds (``scale`` / ``zero
    point`` of a quantizer's QuantizeLinear, ``gamma`` of a LayerNormalization, ...)."""
    found = []
    opsets = ({o.domain: o.version for o in graph.opset_import}, {o.domain: o.version for o in reference.opset_import})
    if opsets[0] != opsets[1]:
        found.append(f"opsets {opsets[0]} in the graph, {opsets[1]} in the reference export")
    for kind in ("input", "output"):
        ours, theirs = ([v.SerializeToString(deterministic=True) for v in getattr(g.graph, kind)] for g in (graph, reference))
        if ours != theirs:
            found.append(f"the graph's {kind}s ({', '.join(v.name for v in getattr(graph.graph, kind))}) are not the reference export's "
                         f"({', '.join(v.name for v in getattr(reference.graph, kind))}) or differ in type or shape")
    constants = (_Constants(graph.graph), _Constants(reference.graph))
    sources = (_sources(graph), _sources(reference))
    outputs = ({v.name: i for i, v in enumerate(graph.graph.output)}, {v.name: i for i, v in enumerate(reference.graph.output)})
    compared: set[tuple[str, str]] = set()
    nodes = (list(graph.graph.node), list(reference.graph.node))
    for index, (ours, theirs) in enumerate(zip(*nodes)):
        named = _quantizer_node(ours) or _quantizer_node(theirs)
        structure = ((ours.op_type, ours.domain, len(ours.input), len(ours.output), ours.name if named else "",
                      [outputs[0].get(name) for name in ours.output]) !=
                     (theirs.op_type, theirs.domain, len(theirs.input), len(theirs.output), theirs.name if named else "",
                      [outputs[1].get(name) for name in theirs.output]))
        if structure:
            found.append(f"node {index}: {_node_label(ours)} in the graph, {_node_label(theirs)} in the reference export")
            return found
        attributes = (_attributes(ours), _attributes(theirs))
        if attributes[0] != attributes[1]:
            attribute = next(name for name in sorted(set(attributes[0]) | set(attributes[1])) if attributes[0].get(name) != attributes[1].get(name))
            found.append(f"node {index}: attribute {attribute!r} of {_node_label(ours)} is not the reference export's")
        for slot, (name, expected) in enumerate(zip(ours.input, theirs.input)):
            ours_constant, theirs_constant = name in constants[0], expected in constants[1]
            wired = sources[0].get(name, ("missing", name)) == sources[1].get(expected, ("missing", expected)) if name and expected else name == expected
            if ours_constant != theirs_constant or (not ours_constant and not wired):
                found.append(f"node {index}: {_node_label(ours)} reads {name!r} as its {_role(ours, slot)}, the reference export reads "
                             f"{expected!r}" + (" (a constant in one of them only)" if ours_constant != theirs_constant else
                                                " (computed elsewhere)"))
                return found
            if not ours_constant or (name, expected) in compared:
                continue
            compared.add((name, expected))
            difference = _value_difference(constants[0][name], constants[1][expected])
            if difference is not None:
                found.append(f"{name} ({_role(ours, slot)} of {_node_label(ours)}): {difference}")
    if len(nodes[0]) != len(nodes[1]):
        found.append(f"{len(nodes[0])} nodes in the graph, {len(nodes[1])} in the reference export")
    return found
