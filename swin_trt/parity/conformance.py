"""Is the engine's graph the reference's quantized model? Its Q/DQ nodes against the reference's
quantizers, by name, exactly: the same tensors quantized, each with the same scale.

Why beside the logit error: the logit error cannot tell an FP16 engine of the right model from
one of another recipe. An FP16 graph rounds every tensor to float16 before quantizing it; a value
within half a float16 step of a rounding boundary lands on the neighbouring integer, and that
one-step error carries the next layers' inputs across further boundaries. On swin_micro 0.1-0.7 %
of a quantizer's values flip on their own and 35-45 % differ by the last stage (docs/parity.md):
the quantization noise is drawn anew, so a right FP16 engine is nearly as far from the reference
(r ~0.9) as a wrong recipe (r ~1.1-1.3). The graph's quantizers, though, are numbers the export
wrote from the reference; comparing them involves no arithmetic and holds in every precision.
Together with the provenance chain (the engine was built from this graph) this pins the model;
the logit bounds then check that the runtime computed it. Weights are compared too (the INT8
values a graph stores, or the float weights it quantizes): a weight edited after export keeps its
scale.
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
