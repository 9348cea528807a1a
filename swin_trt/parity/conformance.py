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
the logit bounds then check that the runtime computed it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from swin_trt.lazy import lazy_import
from swin_trt.onnx.graph import _constant
from swin_trt.quantization.model import named_quantizers

onnx = lazy_import("onnx")

DEQUANTIZE = ".DequantizeLinear"


def graph_scales(onnx_path: str | Path) -> dict[str, np.ndarray]:
    """{quantizer name: the scale its DequantizeLinear holds, in the graph's type}, for the
    DequantizeLinear nodes export named after their quantizer."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {node.name[: -len(DEQUANTIZE)]: _constant(graph, node.input[1])
            for node in graph.node if node.op_type == "DequantizeLinear" and node.name.endswith(DEQUANTIZE)}


def mismatches(fakequant: torch.nn.Module, onnx_path: str | Path) -> list[str]:
    """One line per quantizer where the graph and the reference differ: quantized in one only, or
    a scale that is not the reference's (rounded to the graph's scale type, as export writes it)."""
    reference = {name: quantizer.scale().detach().cpu().numpy() for name, quantizer in named_quantizers(fakequant) if quantizer.enabled}
    graph = graph_scales(onnx_path)
    found = [f"{name}: quantized in the reference, not in the graph" for name in reference if name not in graph]
    found += [f"{name}: quantized in the graph, not in the reference" for name in graph if name not in reference]
    for name in (n for n in graph if n in reference):
        scale = graph[name]
        if scale is None:
            found.append(f"{name}: its scale is not a constant in the graph")
            continue
        expected = reference[name].astype(scale.dtype).reshape(-1)
        if scale.size != expected.size:
            found.append(f"{name}: {scale.size} scale(s) in the graph, {expected.size} in the reference")
            continue
        differ = np.flatnonzero(scale.reshape(-1) != expected)
        if differ.size:
            first = differ[0]
            where = f" (channel {first}; {differ.size} of {scale.size} differ)" if scale.size > 1 else ""
            found.append(f"{name}: scale {scale.reshape(-1)[first]:.6g} in the graph, {expected[first]:.6g} in the reference{where}")
    return found
