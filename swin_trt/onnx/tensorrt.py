"""The graph TensorRT should get, and a lint that says why a Q/DQ graph would build a slow engine.

TensorRT 10.12+ deprecates and TensorRT 11 removes weak typing: every layer runs in the type the
ONNX graph gives it, and INT8 only where QuantizeLinear/DequantizeLinear say so. A graph is fast
only when (from NVIDIA's TensorRT 10->11 migration guide and its Q/DQ placement rules):

- everything outside the Q/DQ pairs is FP16 (input and logits may stay FP32): an FP32 graph runs
  LayerNorm, softmax, GELU, residual adds and unquantized GEMMs in FP32, so INT8 loses to FP16;
- each DequantizeLinear feeds its MatMul directly (TensorRT fuses a DQ only into the op it feeds;
  a weight's ``DQ -> Transpose -> MatMul`` is folded at build time and is fine);
- no Q/DQ sits on a GEMM output ahead of its bias (the bias, and a residual add, fuse into the
  GEMM epilogue only without it);
- LayerNorm inputs are not quantized; weights are per output channel; zero points are 0;
- both attention batched matmuls have Q/DQ inputs and softmax's output is quantized (fused INT8
  MHA, for head sizes 16/32/64 and at most 512 tokens).

FP8 (E4M3) Q/DQ graphs follow the same rules, with FP8's own (docs/fp8.md has the sources):
- zero points are float8e4m3fn zeros; engines need compute capability 8.9+ (Ada, Hopper);
- TensorRT runs FP8 only in GEMMs (MatMul/Gemm/Conv) and fused attention: a FP8 DequantizeLinear
  that feeds anything else (the ``trt`` recipe's residual-add operand) is a standalone FP8 ->
  FP16 conversion, not an epilogue fusion;
- fused FP8 MHA takes head sizes up to 64 and up to 3072 tokens (TensorRT 10.6 release notes);
- per-channel FP8 weight scales are supported from TensorRT 10.6 on Hopper (same notes); Ada may
  need per-tensor weights (``calibrate --per-tensor-weights``);
- one format per graph: an INT8 and FP8 mix is legal ONNX but not what swin-trt exports.

:func:`prepare_for_tensorrt` makes an exported graph follow these rules; :func:`lint` checks any
Q/DQ graph against them, one :class:`Finding` per offending node. Both are plain ``onnx``
protobuf code (no onnxruntime, no TensorRT), so they run and are tested everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from swin_trt.onnx.graph import DETOURS, QDQ_OPS, GraphIndex, axis, constant, qdq_format_of, qdq_formats

GEMM_OPS = ("MatMul", "Gemm")
FUSED_MHA_HEAD_SIZES = (16, 32, 64)
FUSED_MHA_MAX_TOKENS = 512
FP8_FUSED_MHA_MAX_HEAD = 64  # TensorRT 10.6 release notes: FP8 MHA fusion, head sizes up to 64, sequences up to 3072
FP8_FUSED_MHA_MAX_TOKENS = 3072
FP8_GEMM_OPS = ("MatMul", "Gemm", "Conv")

RULES = {
    "dq-not-direct": "a DequantizeLinear reaches its consumer through a Cast/Mul/Reshape/Transpose/...: TensorRT cannot fuse it",
    "qdq-on-gemm-output": "Q/DQ on a GEMM output ahead of its bias: blocks the bias and residual fusion (--int8-mode trt has none)",
    "quantized-layernorm-input": "a LayerNorm reads a dequantized tensor: LayerNorm should see the unquantized activation",
    "fp32-island": "float32 compute inside a float16 graph: runs in FP32 in a strongly typed engine",
    "fp32-graph": "the graph computes in float32: a strongly typed engine runs every non-quantized layer in FP32",
    "per-channel-axis": "a per-channel scale not on the weight's output channel (or on an activation)",
    "zero-point": "a non-zero or unsigned zero point: TensorRT takes symmetric int8 or float8e4m3fn zero points only",
    "attention-not-quantized": "an attention batched matmul input without Q/DQ: fused INT8 MHA needs both inputs and the softmax output quantized",
    "fused-mha-limits": f"attention head size outside {FUSED_MHA_HEAD_SIZES} or more than {FUSED_MHA_MAX_TOKENS} tokens (FP8: head size "
                        f"above {FP8_FUSED_MHA_MAX_HEAD} or more than {FP8_FUSED_MHA_MAX_TOKENS} tokens): no fused MHA kernel",
    "fp8-outside-gemm": "an FP8 DequantizeLinear feeds neither a GEMM nor an attention matmul: TensorRT runs FP8 only in GEMMs and fused MHA, "
                        "so this is a standalone FP8 -> FP16 conversion (a kernel and FP8 rounding for nothing)",
    "fp8-per-channel-weights": "per-channel FP8 weight scales: TensorRT supports them from 10.6 on Hopper; on Ada (sm 8.9) calibrate with "
                               "--per-tensor-weights",
    "mixed-formats": "INT8 and FP8 Q/DQ in one graph: swin-trt exports one format per graph",
}
ERROR, WARNING = "error", "warning"
DEQUANTIZE_SUFFIX = ".DequantizeLinear"  # export names each DequantizeLinear after its quantizer (swin_trt.onnx.export.name_qdq_nodes)
SEVERITY = {rule: WARNING if rule in ("fp32-graph", "attention-not-quantized", "fused-mha-limits", "fp8-outside-gemm", "fp8-per-channel-weights")
            else ERROR for rule in RULES}


@dataclass(frozen=True)
class Finding:
    """One rule broken at one place in the graph. Errors fail the lint; warnings cost speed only
    where the user may have chosen so (an FP32 debugging graph, attention kept in FP16)."""

    rule: str
    nodes: tuple[str, ...]
    detail: str

    @property
    def severity(self) -> str:
        return SEVERITY[self.rule]

    def line(self) -> str:
        return f"{self.severity} [{self.rule}] {', '.join(self.nodes)}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "severity": self.severity, "nodes": list(self.nodes), "detail": self.detail}


# ---------------------------------------------------------------------------------------------
# passes


def hoist_transposes_above_qdq(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Rewrite ``Q -> DQ -> Transpose -> MatMul`` (an activation, per tensor) as
    ``Transpose -> Q -> DQ -> MatMul``, so the DQ feeds the attention matmul directly.

    Exact: a per-tensor quantize commutes with a transpose. The exporter writes ``k.transpose``
    after k's quantizer, which is where PyTorch applies it. Returns what was moved: {the
    quantizer (the DequantizeLinear's name less ``.DequantizeLinear``): the permutation}. After
    the move that quantizer's tensor in the graph is the transpose of the one PyTorch quantizes;
    export records this in the sidecar (``hoisted_transposes``) and ``bench --localize`` inverts
    it before comparing the two."""
    graph = GraphIndex(model)
    moved: dict[str, list[int]] = {}
    for transpose in list(model.graph.node):
        if transpose.op_type != "Transpose":
            continue
        dequantize = graph.producers.get(transpose.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or graph.is_constant(dequantize.input[0]):
            continue
        quantize = graph.producers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        scale = constant(model.graph, quantize.input[1])
        single_use = len(graph.consumers[dequantize.output[0]]) == 1 and len(graph.consumers[quantize.output[0]]) == 1
        if not single_use or scale is None or scale.size != 1:
            continue
        # the Transpose now reads the float source and writes a fresh tensor that Q reads; DQ takes
        # over the tensor the Transpose wrote, so everything downstream stays connected
        source, transposed = quantize.input[0], transpose.output[0]
        _forget_value_info(model.graph, (quantize.output[0], dequantize.output[0]))  # their shapes change
        transpose.input[0] = source
        transpose.output[0] = quantize.input[0] = f"{transposed}_before_qdq"
        dequantize.output[0] = transposed
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [])
        moved[graph.name(dequantize).removesuffix(DEQUANTIZE_SUFFIX)] = perm
    if moved:
        _topological_sort(model.graph)
    return moved


def _forget_value_info(graph: onnx.GraphProto, names: Iterable[str]) -> None:
    stale = set(names)
    for value in [v for v in graph.value_info if v.name in stale]:
        graph.value_info.remove(value)


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (ONNX requires it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or a dangling input")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def prepare_for_tensorrt(model: onnx.ModelProto) -> dict[str, list[int]]:
    """The passes that make an exported Q/DQ graph (already converted to the target precision)
    follow TensorRT's rules, in place, then a self-check: the result must lint clean. Raises
    ValueError naming the first finding otherwise (a model or exporter this module does not know
    yet). Returns the transposes moved above a quantizer (:func:`hoist_transposes_above_qdq`)."""
    hoisted = hoist_transposes_above_qdq(model)
    errors = [f for f in lint(model) if f.severity == ERROR]
    if errors:
        raise ValueError(f"the TensorRT-target graph still breaks {len(errors)} rule(s), first: {errors[0].line()}")
    return hoisted


# ---------------------------------------------------------------------------------------------
# lint


def lint(model: onnx.ModelProto) -> list[Finding]:
    """Every place ``model`` breaks a rule in :data:`RULES`, in graph order within each rule."""
    graph = GraphIndex(model)
    findings: list[Finding] = []
    for check in (_dq_not_direct, _qdq_on_gemm_output, _quantized_layernorm_input, _float_precision, _per_channel_axis, _zero_points,
                  _attention, _fp8):
        findings.extend(check(graph))
    return findings


def _dq_not_direct(graph: GraphIndex) -> Iterable[Finding]:
    for node in graph.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        for consumer in graph.consumers.get(node.output[0], []):
            if consumer.op_type not in DETOURS:
                continue
            if graph.dequantized_weight(node) and consumer.op_type == "Transpose" and all(
                    c.op_type in GEMM_OPS for c in graph.consumers.get(consumer.output[0], [])):
                continue  # a weight's DQ -> Transpose -> MatMul: folded by the builder
            reached = ", ".join(sorted({c.op_type for c in graph.consumers.get(consumer.output[0], [])})) or "nothing"
            yield Finding("dq-not-direct", (graph.name(node), graph.name(consumer)), f"DequantizeLinear -> {consumer.op_type} -> {reached}")


def _qdq_on_gemm_output(graph: GraphIndex) -> Iterable[Finding]:
    for node in graph.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        producer = graph.producers.get(node.input[0])
        if producer is not None and producer.op_type in GEMM_OPS and not graph.is_activation_matmul(producer):
            yield Finding("qdq-on-gemm-output", (graph.name(producer), graph.name(node)), f"{producer.op_type} output quantized before its bias/residual add")


def _quantized_layernorm_input(graph: GraphIndex) -> Iterable[Finding]:
    for node in graph.graph.node:
        if node.op_type not in ("LayerNormalization", "ReduceMean"):
            continue
        source = graph.source(node.input[0])
        if source is not None and source.op_type == "DequantizeLinear":
            yield Finding("quantized-layernorm-input", (graph.name(source), graph.name(node)), f"{node.op_type} input is dequantized")


def _float_precision(graph: GraphIndex) -> Iterable[Finding]:
    """FP32 islands in an FP16 graph, or an FP32 graph as a whole. The casts at the graph's
    float32 input and logits are the only float32 compute allowed in an FP16 graph."""
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    compute = [n for n in graph.graph.node if n.op_type not in ("Cast", "Constant", *QDQ_OPS, "Shape")]
    typed = {n.output[0]: graph.elem_type(n.output[0]) for n in compute if n.output}
    half = [name for name, kind in typed.items() if kind in floats[1:]]
    single = [n for n in compute if n.output and typed[n.output[0]] == TensorProto.FLOAT]
    if not half:
        if single:
            yield Finding("fp32-graph", (graph.graph.name or "graph",), f"{len(single)} float32 compute nodes, no float16 ones: export with --target tensorrt")
        return
    for node in single:
        yield Finding("fp32-island", (graph.name(node),), f"{node.op_type} computes in float32")


def _per_channel_axis(graph: GraphIndex) -> Iterable[Finding]:
    for node in graph.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        scale = constant(graph.graph, node.input[1])
        if scale is None or scale.size <= 1:
            continue
        if not graph.is_constant(node.input[0]):
            yield Finding("per-channel-axis", (graph.name(node),), "per-channel scale on an activation: TensorRT quantizes activations per tensor")
            continue
        rank = len(graph.shape(node.input[0]) or []) or 2
        scale_axis = axis(node, 1) % rank
        for consumer, position in _gemm_uses(graph, node.output[0]):
            expected = _output_channel_axis(graph, consumer, position, rank)
            if expected is not None and scale_axis != expected:
                yield Finding("per-channel-axis", (graph.name(node), graph.name(consumer)), f"scale axis {scale_axis}, the output channel is axis {expected}")


def _gemm_uses(graph: GraphIndex, tensor: str, perm: tuple[int, ...] | None = None) -> Iterable[tuple[onnx.NodeProto, tuple[int, tuple[int, ...] | None]]]:
    """(GEMM-like consumer, (input position, transpose permutation on the way)) for ``tensor``."""
    for consumer in graph.consumers.get(tensor, []):
        if consumer.op_type == "Transpose":
            order = tuple(next((list(a.ints) for a in consumer.attribute if a.name == "perm"), []))
            yield from _gemm_uses(graph, consumer.output[0], order or None)
        elif consumer.op_type in (*GEMM_OPS, "Conv"):
            yield consumer, (list(consumer.input).index(tensor), perm)


def _output_channel_axis(graph: GraphIndex, consumer: onnx.NodeProto, use: tuple[int, tuple[int, ...] | None], rank: int) -> int | None:
    """The weight axis that holds the consumer's output channels, before any transpose."""
    position, perm = use
    if consumer.op_type == "Conv":
        channel = 0
    elif consumer.op_type == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        channel = 0 if trans_b else 1
    elif position == 1:  # MatMul B: [..., K, N], N is the output channel
        channel = rank - 1
    else:
        return None
    return perm[channel] if perm else channel


def _zero_points(graph: GraphIndex) -> Iterable[Finding]:
    for node in graph.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or not node.input[2]:
            continue
        zero = constant(graph.graph, node.input[2])
        if zero is None:
            continue
        if qdq_format_of(graph.graph, node) == "fp8":
            if np.any(zero.astype(np.float32) != 0):
                yield Finding("zero-point", (graph.name(node),), "non-zero float8e4m3fn zero point (TensorRT needs 0)")
            continue
        if zero.dtype != np.int8:
            yield Finding("zero-point", (graph.name(node),), f"{zero.dtype} zero point (TensorRT needs int8 or float8e4m3fn)")
        elif np.any(zero != 0):
            yield Finding("zero-point", (graph.name(node),), f"zero point {int(zero.flat[np.flatnonzero(zero)[0]])} (TensorRT needs 0)")


def _attention(graph: GraphIndex) -> Iterable[Finding]:
    """Attention matmuls: Q/DQ on both inputs (the second one's first input is softmax's output),
    and shapes within the fused-MHA kernels' limits where the graph's shapes say."""
    quantized_graph = any(n.op_type == "DequantizeLinear" for n in graph.graph.node)
    fp8 = "fp8" in qdq_formats(graph.model)
    for node in graph.graph.node:
        if not graph.is_activation_matmul(node):
            continue
        if quantized_graph:
            for position, tensor in enumerate(node.input[:2]):
                source = graph.source(tensor)  # a DQ behind a detour is dq-not-direct's finding
                if source is None or source.op_type != "DequantizeLinear":
                    yield Finding("attention-not-quantized", (graph.name(node),),
                                  f"input {position} comes from {source.op_type if source is not None else 'a graph input'} without Q/DQ")
        shape = graph.shape(node.input[0])
        if not shape or len(shape) < 2 or None in shape[-2:]:
            continue
        first = _feeds_softmax(graph, node)
        tokens, head = (shape[-2], shape[-1]) if first else (shape[-1], (graph.shape(node.input[1]) or [None])[-1])
        if fp8:
            outside = tokens > FP8_FUSED_MHA_MAX_TOKENS or (head is not None and head > FP8_FUSED_MHA_MAX_HEAD)
        else:
            outside = tokens > FUSED_MHA_MAX_TOKENS or (head is not None and head not in FUSED_MHA_HEAD_SIZES)
        if outside:
            yield Finding("fused-mha-limits", (graph.name(node),), f"{tokens} tokens, head size {head}" + (" (FP8)" if fp8 else ""))


def _fp8(graph: GraphIndex) -> Iterable[Finding]:
    """FP8's own rules (see the module notes): one format per graph, FP8 only into GEMMs and
    attention matmuls, per-channel FP8 weights only where TensorRT supports them."""
    formats = qdq_formats(graph.model)
    if "fp8" not in formats:
        return
    if formats & {"int8", "uint8"}:
        yield Finding("mixed-formats", (graph.graph.name or "graph",), f"Q/DQ formats {', '.join(sorted(formats))}")
    for node in graph.graph.node:
        if node.op_type != "DequantizeLinear" or qdq_format_of(graph.graph, node) != "fp8":
            continue
        consumers = graph.consumers.get(node.output[0], [])
        reached = [c for c in consumers if c.op_type not in FP8_GEMM_OPS]
        # a weight's DQ -> Transpose -> MatMul is folded at build time (see _dq_not_direct)
        reached = [c for c in reached if not (c.op_type == "Transpose" and all(n.op_type in FP8_GEMM_OPS for n in graph.consumers.get(c.output[0], [])))]
        if reached:
            yield Finding("fp8-outside-gemm", (graph.name(node), graph.name(reached[0])), f"FP8 DequantizeLinear -> {reached[0].op_type}")
        scale = constant(graph.graph, node.input[1])
        if scale is not None and scale.size > 1 and graph.is_constant(node.input[0]):
            yield Finding("fp8-per-channel-weights", (graph.name(node),), f"{scale.size} FP8 weight scales")


def _feeds_softmax(graph: GraphIndex, node: onnx.NodeProto) -> bool:
    """Whether ``node`` is the first attention matmul (q @ k^T): softmax follows it (after the
    bias and mask adds and reshapes)."""
    frontier = [node.output[0]]
    for _ in range(8):  # matmul -> add bias -> reshape -> add mask -> reshape -> softmax, with room to spare
        following = [c for name in frontier for c in graph.consumers.get(name, [])]
        if any(c.op_type == "Softmax" for c in following):
            return True
        frontier = [o for c in following if c.op_type in (*DETOURS, "Add") for o in c.output]
    return False


def summary_line(findings: list[Finding]) -> str:
    errors = sum(f.severity == ERROR for f in findings)
    warnings = len(findings) - errors
    if not findings:
        return "TensorRT lint: clean"
    rules = sorted({f.rule for f in findings})
    return f"TensorRT lint: {errors} error(s), {warnings} warning(s) ({', '.join(rules)})"

