"""What a built TensorRT engine actually runs: per layer its precision, tactic and the ONNX nodes
fused into it, and the summary users need when INT8 is not faster than FP16 — how many GEMMs and
attention matmuls run INT8, how many fell back to FP16/FP32, and which.

The input is the engine inspector's JSON (``IEngineInspector.get_engine_information(JSON)``, or
``trtexec --exportLayerInfo``) of an engine built with ``ProfilingVerbosity.DETAILED``. Its
schema changed in TensorRT 11: a tensor's ``"Format/Datatype"`` string became separate
``"Format"`` and ``"Datatype"`` fields and ``"Bindings"`` became ``"I/O Tensors"``; both are
read. Everything here is pure (JSON and ONNX protobufs in, dataclasses out), so it is tested
without TensorRT.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import onnx

from swin_trt.errors import SwinTrtError
from swin_trt.onnx.graph import GraphIndex

# substrings of TensorRT's format/datatype strings, most specific first ("Row major linear FP16
# format (kLINEAR)", "Thirty-two wide channel vectorized row major Int8 format", "Half", "Float")
PRECISION_WORDS = (("BFLOAT16", "BF16"), ("BF16", "BF16"), ("FP8", "FP8"), ("INT8", "INT8"), ("INT32", "INT32"), ("INT64", "INT64"),
                   ("BOOL", "BOOL"), ("FP16", "FP16"), ("HALF", "FP16"), ("FP32", "FP32"), ("FLOAT", "FP32"))
FLOAT_PRECISIONS = ("INT8", "FP8", "FP16", "BF16", "FP32")  # how a GEMM can run, lowest first
ROLES = ("gemm", "attention")
ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


@dataclass(frozen=True)
class Tensor:
    name: str
    precision: str | None
    elements: int  # product of the known dimensions (dynamic ones count as 1)


@dataclass(frozen=True)
class Layer:
    name: str
    layer_type: str
    tactic: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    onnx_nodes: tuple[str, ...]  # the ONNX nodes fused into this layer

    @property
    def gemm_precision(self) -> str | None:
        """The precision a GEMM layer computes in: that of its two largest operands (activation
        and weight; alpha/beta scalars and bias vectors are smaller), INT8 only when both are."""
        operands = sorted((t for t in self.inputs if t.precision in FLOAT_PRECISIONS), key=lambda t: -t.elements)[:2]
        if not operands:
            return None
        return max((t.precision for t in operands), key=FLOAT_PRECISIONS.index)

    @property
    def precision(self) -> str:
        kinds = sorted({t.precision for t in (*self.inputs, *self.outputs) if t.precision}, key=lambda p: (p not in FLOAT_PRECISIONS, p))
        return "/".join(kinds) or "?"


@dataclass(frozen=True)
class Fallback:
    role: str
    onnx_node: str
    layer: str
    precision: str


@dataclass(frozen=True)
class EngineSummary:
    layers: tuple[Layer, ...]
    counts: dict[str, Counter] = field(default_factory=dict)  # role -> Counter(precision)
    fallbacks: tuple[Fallback, ...] = ()
    standalone_qdq: tuple[str, ...] = ()  # layers that only quantize/dequantize: Q/DQ TensorRT did not fuse
    unmatched: tuple[str, ...] = ()  # ONNX matmuls no layer names (metadata missing)

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON results: ``<role>_<precision>`` counts, the fallbacks, the unfused Q/DQ."""
        flat: dict[str, Any] = {"layers": len(self.layers)}
        for role in ROLES:
            for precision in FLOAT_PRECISIONS:
                flat[f"{role}_{precision.lower()}"] = self.counts.get(role, Counter()).get(precision, 0)
        flat["fallbacks"] = [f"{f.role} {f.onnx_node} in {f.layer}: {f.precision}" for f in self.fallbacks]
        flat["standalone_qdq"] = list(self.standalone_qdq)
        return flat


def tensor_precision(tensor: dict[str, Any]) -> str | None:
    """INT8 / FP16 / FP32 / ... of an inspector tensor entry, from TensorRT 10's
    ``"Format/Datatype"`` or TensorRT 11's ``"Datatype"`` (also ``"DataType"``) field."""
    text = tensor.get("Datatype") or tensor.get("DataType") or tensor.get("Format/Datatype") or ""
    upper = str(text).upper()
    return next((precision for word, precision in PRECISION_WORDS if word in upper), None)


def _elements(tensor: dict[str, Any]) -> int:
    count = 1
    for dim in tensor.get("Dimensions") or []:
        count *= dim if isinstance(dim, int) and dim > 0 else 1
    return count


def _fused_nodes(layer: dict[str, Any]) -> tuple[str, ...]:
    """ONNX node names from the layer's metadata (``[ONNX Layer: name]`` records), else from
    its name, which TensorRT joins from the fused nodes' names with `` + ``."""
    found = ONNX_LAYER.findall(str(layer.get("Metadata") or ""))
    if not found:
        found = [part.strip() for part in str(layer.get("Name", "")).split(" + ")]
    return tuple(dict.fromkeys(n for n in found if n))


def parse_engine_information(payload: Any) -> list[Layer]:
    """The layers of an inspector JSON document (``{"Layers": [...]}`` or a bare list)."""
    records = payload.get("Layers") if isinstance(payload, dict) else payload
    if not isinstance(records, list) or not records:
        raise SwinTrtError("not TensorRT engine-inspector JSON: expected {\"Layers\": [...]} with at least one layer")
    if all(isinstance(r, str) for r in records):
        raise SwinTrtError("the engine was built without detailed profiling (layer names only): rebuild it with `swin-trt build --backend tensorrt`, "
                           "which sets ProfilingVerbosity.DETAILED")
    layers = []
    for record in records:
        if not isinstance(record, dict):
            continue
        tensors = {key: tuple(Tensor(str(t.get("Name", "?")), tensor_precision(t), _elements(t)) for t in record.get(key) or [] if isinstance(t, dict))
                   for key in ("Inputs", "Outputs", "Constants")}
        layers.append(Layer(
            name=str(record.get("Name", "?")),
            layer_type=str(record.get("LayerType", "?")),
            tactic=str(record.get("TacticName") or record.get("TacticValue") or "?"),
            inputs=tensors["Inputs"] + tensors["Constants"],
            outputs=tensors["Outputs"],
            onnx_nodes=_fused_nodes(record),
        ))
    return layers


def matmul_roles(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX MatMul/Gemm node name -> "gemm" (a linear layer, constant weight) or "attention"
    (q @ k^T, attn @ v: both operands computed)."""
    graph = GraphIndex(model)
    return {node.name: "attention" if graph.is_activation_matmul(node) else "gemm"
            for node in model.graph.node if node.op_type in ("MatMul", "Gemm") and node.name}


def _heuristic_role(layer: Layer) -> str | None:
    """Without the source graph: a layer is a GEMM by its type or kernel name, attention when
    the kernel is a fused multi-head-attention one."""
    text = f"{layer.layer_type} {layer.tactic}".lower()
    if "conv" in layer.layer_type.lower():
        return None  # convolution kernels are implicit GEMMs by name, but not matmuls of the graph
    if "mha" in text or "attention" in text:
        return "attention"
    if "gemm" in text or "matrixmultiply" in text or "matmul" in text:
        return "gemm"
    return None


def _only_qdq(layer: Layer, op_types: dict[str, str]) -> bool:
    """A layer that only quantizes or dequantizes: a Q/DQ TensorRT did not fuse into a neighbour."""
    if layer.layer_type.lower() in ("quantize", "dequantize"):
        return True
    known = [op_types[n] for n in layer.onnx_nodes if n in op_types]
    return bool(known) and all(op in ("QuantizeLinear", "DequantizeLinear") for op in known)


def summarize(layers: list[Layer], model: onnx.ModelProto | None = None) -> EngineSummary:
    """Count GEMMs and attention matmuls by the precision their layer runs in. With the engine's
    source ONNX ``model``, each ONNX matmul is counted once, by the name TensorRT records for the
    nodes it fused; without, each GEMM-like layer counts once, by its type and kernel name."""
    roles = matmul_roles(model) if model is not None else {}
    op_types = {node.name: node.op_type for node in model.graph.node} if model is not None else {}
    counts: dict[str, Counter] = {role: Counter() for role in ROLES}
    fallbacks: list[Fallback] = []
    seen: set[str] = set()
    for layer in layers:
        if roles:
            matched = [(n, roles[n]) for n in layer.onnx_nodes if n in roles and n not in seen]
        else:
            role = _heuristic_role(layer)
            matched = [(layer.name, role)] if role else []
        precision = layer.gemm_precision or "?"
        for node, role in matched:
            seen.add(node)
            counts[role][precision] += 1
            if precision != "INT8":
                fallbacks.append(Fallback(role, node, layer.name, precision))
    standalone = tuple(layer.name for layer in layers if _only_qdq(layer, op_types))
    unmatched = tuple(n for n in roles if n not in seen)
    return EngineSummary(tuple(layers), counts, tuple(fallbacks), standalone, unmatched)
