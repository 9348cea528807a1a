"""ONNX graph passes and inspection, with plain ``onnx`` protobufs.

Small, explicit passes instead of a general optimizer: each one is checked by the tests against
onnxruntime outputs.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxconverter_common import float16

from swin_trt.errors import SwinTrtError

INT8_RANGE = (-128, 127)
FP8_RANGE = (-448, 448)  # float8e4m3fn: the exporter's Clip after an FP8 QuantizeLinear
# Q/DQ formats by the ONNX type of their zero point (the type QuantizeLinear produces)
QDQ_FORMATS = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT8E4M3FN: "fp8"}
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# ops that only reshape or reorder data: a tensor seen through them is still the same values
LAYOUT_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Gather", "Identity")
# ops that only move, cast or rescale data: TensorRT does not fuse a DequantizeLinear through them into the GEMM behind
DETOURS = (*LAYOUT_OPS, "Cast", "Mul", "Div", "Expand", "Concat", "Pad")


def constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for initializer in graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def read_model(path: str | Path, what: str = "--onnx") -> onnx.ModelProto:
    """An ONNX file as a ``ModelProto`` (external data not loaded), or one line (a
    :class:`~swin_trt.errors.SwinTrtError`) saying that ``what`` (the flag or role that named
    it) is missing or not an ONNX model: protobuf parses many non-ONNX files (an empty one is an
    empty model), so a model without nodes or opset is refused too."""
    path = Path(path)
    if not path.is_file():
        raise SwinTrtError(f"{what} {path}: ONNX file not found (make one with `swin-trt export`)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SwinTrtError(f"{what} {path}: not an ONNX model ({reason})") from None
    if not model.graph.node or not model.opset_import:
        raise SwinTrtError(f"{what} {path}: not an ONNX model (it has no graph nodes or no opset)")
    return model


def tensor_types(model: onnx.ModelProto) -> tuple[frozenset[str], frozenset[str]]:
    """What a graph computes in, from its own tensors: (the element types of its float constants
    (initializers and Constant nodes), the types its QuantizeLinear nodes produce (their zero
    points' types; int8 when a QuantizeLinear has none)), as numpy names (``float32``,
    ``float16``, ``int8``). The parity gate chooses its bounds from these."""
    graph = model.graph
    tensors = [*graph.initializer, *(a.t for node in graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value")]
    kinds = {tensor.name: onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) for tensor in tensors}
    floats = frozenset(dtype.name for dtype in kinds.values() if dtype.kind == "f")
    quantized = frozenset(kinds[node.input[2]].name if len(node.input) > 2 and node.input[2] in kinds else "int8"
                          for node in graph.node if node.op_type == "QuantizeLinear")
    return floats, quantized


def producer_map(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def consumer_map(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
    for output in graph.output:
        if output.name == old:
            raise ValueError(f"cannot bypass graph output {old}")


class GraphIndex:
    """Lookups over one ``GraphProto``: producers, consumers, constants, element types, shapes; the
    one index that the graph passes, the TensorRT lint and the engine-layer summary share."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.producers = producer_map(self.graph)
        self.consumers = consumer_map(self.graph)
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.model = model

    @functools.cached_property
    def values(self) -> dict[str, onnx.TypeProto.Tensor]:
        """Element types and shapes of every tensor (shape inference runs on first use only)."""
        inferred = onnx.shape_inference.infer_shapes(self.model)
        values = {v.name: v.type.tensor_type for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
        for init in self.graph.initializer:
            values.setdefault(init.name, onnx.TypeProto.Tensor(elem_type=init.data_type))
        return values

    def name(self, node: onnx.NodeProto) -> str:
        return node.name or f"{node.op_type}({node.output[0]})"

    def elem_type(self, tensor: str) -> int | None:
        value = self.values.get(tensor)
        return value.elem_type if value is not None and value.elem_type else None

    def shape(self, tensor: str) -> list[int | None] | None:
        value = self.values.get(tensor)
        if value is None or not value.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in value.shape.dim]

    def is_constant(self, tensor: str) -> bool:
        """An initializer or Constant, possibly behind its own Q/DQ, reshape or transpose."""
        if tensor in self.initializers:
            return True
        producer = self.producers.get(tensor)
        if producer is None:
            return False
        if producer.op_type == "Constant":
            return True
        return producer.op_type in (*QDQ_OPS, *DETOURS) and bool(producer.input) and self.is_constant(producer.input[0])

    def dequantized_weight(self, node: onnx.NodeProto) -> bool:
        return node.op_type == "DequantizeLinear" and self.is_constant(node.input[0])

    def source(self, tensor: str) -> onnx.NodeProto | None:
        """The node that computes ``tensor``, looking back through data-movement ops (None for a
        graph input or an initializer)."""
        return source_node(tensor, self.producers, DETOURS)

    def is_activation_matmul(self, node: onnx.NodeProto) -> bool:
        """A MatMul of two computed tensors (q @ k^T, attn @ v), as opposed to a linear layer's."""
        return node.op_type == "MatMul" and not any(self.is_constant(tensor) for tensor in node.input[:2])


def drop_int8_clips(model: onnx.ModelProto) -> int:
    """Remove the no-op ``Clip(-128, 127)`` the exporter puts between QuantizeLinear and
    DequantizeLinear (torch's quantize op clamps explicitly; ``Clip(-448, 448)`` after an FP8
    QuantizeLinear): TensorRT and onnxruntime fuse only adjacent Q -> DQ pairs. Returns how many
    were removed."""
    graph = model.graph
    producers = producer_map(graph)
    removed = []
    for node in graph.node:
        if node.op_type != "Clip" or node.input[0] not in producers or producers[node.input[0]].op_type != "QuantizeLinear":
            continue
        bounds = [constant(graph, name) for name in node.input[1:3]]
        if len(bounds) == 2 and all(b is not None for b in bounds) and (float(bounds[0]), float(bounds[1])) in (INT8_RANGE, FP8_RANGE):
            rename_input(graph, node.output[0], node.input[0])
            removed.append(node)
    for node in removed:
        graph.node.remove(node)
    prune_initializers(graph)
    return len(removed)


def fold_weight_clips(model: onnx.ModelProto) -> int:
    """Fold the clamps of narrow (fewer than 8 bits) weight ranges into the weights.

    Such a range is int8 Q/DQ plus a clamp. torch's per-channel quantize op emits it as
    ``QuantizeLinear(W) -> Clip(qmin, qmax) -> DequantizeLinear``, the per-tensor quantizer as
    ``Clip(W, qmin*s, qmax*s) -> QuantizeLinear``. For a weight the clamp is a constant
    computation: W is replaced by ``clip(W, qmin*s, qmax*s)`` (per channel along the quantize
    axis), whose QuantizeLinear yields exactly the narrow integers, and the Clip is removed, so the
    Q/DQ pair stays adjacent as TensorRT and onnxruntime require. Activations keep their float
    ``Clip -> QuantizeLinear``. Returns how many weights were folded."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = producer_map(graph)
    consumers = consumer_map(graph)
    folded = []
    for node in list(graph.node):
        if node.op_type != "Clip":
            continue
        source = producers.get(node.input[0])
        bounds = [constant(graph, name) for name in node.input[1:3]]
        if len(bounds) != 2 or any(b is None for b in bounds):
            continue
        if node.input[0] in initializers and all(c.op_type == "QuantizeLinear" for c in consumers[node.output[0]]):
            weight = numpy_helper.to_array(initializers[node.input[0]])
            clamped = np.clip(weight, bounds[0].astype(weight.dtype), bounds[1].astype(weight.dtype))
            rename_input(graph, node.output[0], _add_initializer(graph, clamped, f"{node.input[0]}_clamped"))
        elif source is not None and source.op_type == "QuantizeLinear" and source.input[0] in initializers:
            weight = numpy_helper.to_array(initializers[source.input[0]])
            scale = _broadcast_scale(graph, source, weight.ndim).astype(weight.dtype)
            low, high = (np.asarray(b).astype(weight.dtype) for b in bounds)
            clamped = np.clip(weight, low * scale, high * scale)
            source.input[0] = _add_initializer(graph, clamped, f"{source.input[0]}_clamped")
            rename_input(graph, node.output[0], node.input[0])
        else:
            continue
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    prune_initializers(graph)
    return len(folded)


def _add_initializer(graph: onnx.GraphProto, value: np.ndarray, name: str) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _int8_levels(scaled: np.ndarray) -> np.ndarray:
    """What QuantizeLinear computes from W / s: round half to even, saturated to int8."""
    return np.clip(np.rint(scaled), *INT8_RANGE).astype(np.int8)


def _integers(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """What QuantizeLinear computes for a weight: round half to even of W / s, saturated to int8."""
    return _int8_levels(weight / scale)


def axis(node: onnx.NodeProto, default: int) -> int:
    """A node's ``axis`` attribute, or the operator's default where the exporter left it out
    (1 for QuantizeLinear/DequantizeLinear, 0 for Split and Gather)."""
    return next((attribute.i for attribute in node.attribute if attribute.name == "axis"), default)


def _broadcast_scale(graph: onnx.GraphProto, quantize: onnx.NodeProto, ndim: int) -> np.ndarray:
    """The scale of a Q/DQ node, shaped to broadcast against its input (per channel along ``axis``)."""
    scale = constant(graph, quantize.input[1])
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * ndim
        shape[axis(quantize, 1) % ndim] = -1
        scale = scale.reshape(shape)
    return scale


def _store_quantized_weights(model: onnx.ModelProto, quant_format: str, stored: Callable[[np.ndarray, str], onnx.TensorProto]) -> int:
    """Replace each ``QuantizeLinear(float weight)`` of ``quant_format`` by the initializer
    ``stored(weight / scale, name)`` it computes, feeding its DequantizeLinear directly. Returns
    how many weights were converted."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    converted = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in initializers or qdq_format_of(graph, node) != quant_format:
            continue
        weight = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
        name = f"{node.input[0]}_{quant_format}"
        graph.initializer.append(stored(weight / _broadcast_scale(graph, node, weight.ndim).astype(np.float32), name))
        rename_input(graph, node.output[0], name)
        converted.append(node)
    for node in converted:
        graph.node.remove(node)
    prune_initializers(graph)
    return len(converted)


def store_int8_weights(model: onnx.ModelProto) -> int:
    """Replace ``QuantizeLinear(FP32 weight)`` by the INT8 weight it computes, feeding its
    DequantizeLinear directly (4x smaller weights; the same values, so the same outputs).
    Returns how many weights were converted."""
    return _store_quantized_weights(model, "int8", lambda scaled, name: numpy_helper.from_array(_int8_levels(scaled), name))


def fp8_tensor(values: np.ndarray, name: str) -> onnx.TensorProto:
    """A float8e4m3fn initializer holding ``values`` rounded as QuantizeLinear rounds them
    (nearest even, saturated at +-448: torch's cast after a clamp, tested bit for bit against
    onnxruntime)."""
    import torch  # the graph passes stay torch-free unless FP8 weights are stored

    scaled = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).clamp(*FP8_RANGE)
    raw = scaled.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT8E4M3FN, dims=list(values.shape))
    tensor.raw_data = raw.tobytes()
    return tensor


def store_fp8_weights(model: onnx.ModelProto) -> int:
    """Replace ``QuantizeLinear(float weight)`` with an FP8 zero point by the float8e4m3fn weight it
    computes, feeding its DequantizeLinear directly (4x smaller than FP32 weights, the same values).
    Returns how many weights were converted."""
    return _store_quantized_weights(model, "fp8", fp8_tensor)


def qdq_format_of(graph: onnx.GraphProto, node: onnx.NodeProto) -> str | None:
    """``int8``, ``uint8`` or ``fp8`` for a QuantizeLinear/DequantizeLinear, from its zero point's
    type (or, for a DequantizeLinear without one, its stored input's); None when not a constant."""
    initializers = {init.name: init for init in graph.initializer}
    for name in (node.input[2] if len(node.input) > 2 else "", node.input[0] if node.op_type == "DequantizeLinear" else ""):
        if name in initializers:
            return QDQ_FORMATS.get(initializers[name].data_type, onnx.TensorProto.DataType.Name(initializers[name].data_type).lower())
        for constant_node in graph.node:
            if name and constant_node.op_type == "Constant" and constant_node.output[0] == name:
                data_type = constant_node.attribute[0].t.data_type
                return QDQ_FORMATS.get(data_type, onnx.TensorProto.DataType.Name(data_type).lower())
    return None


def qdq_formats(model: onnx.ModelProto) -> set[str]:
    """The Q/DQ formats a graph uses, read from its zero-point types (empty: no Q/DQ). An FP8
    graph is ``{"fp8"}``; what decides the gate's bounds and the engines' FP8 rules."""
    graph = model.graph
    return {fmt for node in graph.node if node.op_type in QDQ_OPS for fmt in [qdq_format_of(graph, node)] if fmt is not None}


def prune_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    for initializer in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(initializer)


def classify_dequantize(model: onnx.ModelProto) -> dict[str, int]:
    """Count DequantizeLinear nodes by role, each once: GEMM weight, GEMM activation input,
    attention batched-matmul input, GEMM output (its Q reads a MatMul/Gemm result), residual-add
    operand, other."""
    index = GraphIndex(model)
    graph, producers, consumers = model.graph, index.producers, index.consumers
    initializers = set(index.initializers)
    counts: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(node.input[0])
        if node.input[0] in initializers or (quantize is not None and quantize.input[0] in initializers):
            counts["gemm_weight"] += 1
            continue
        reached = through_layout_ops(node.output[0], consumers)
        matmuls = [c for c in reached if c.op_type in ("MatMul", "Gemm")]
        source = source_node(_unclipped(quantize.input[0], producers), producers) if quantize is not None else None
        if matmuls:
            counts["attention_matmul" if index.is_activation_matmul(matmuls[0]) else "gemm_input"] += 1
        elif source is not None and source.op_type in ("MatMul", "Gemm"):
            counts["gemm_output"] += 1
        elif any(c.op_type == "Add" for c in reached):
            counts["residual_add"] += 1
        else:
            counts["other"] += 1
    return dict(counts)


def _unclipped(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    """The input of the Clip that produces ``name`` (a narrow activation range), else ``name``."""
    node = producers.get(name)
    return node.input[0] if node is not None and node.op_type == "Clip" else name


def signed_bits(low: int, high: int) -> int:
    """The fewest bits of a signed integer that hold every value in [low, high]."""
    bits = 1
    while low < -(1 << (bits - 1)) or high > (1 << (bits - 1)) - 1:
        bits += 1
    return bits


def quantized_bits(model: onnx.ModelProto) -> dict[str, list[int]]:
    """The bit widths a Q/DQ graph really uses, read from its numbers rather than from any label:
    ``{"weight": [...], "activation": [...]}`` with, per quantized weight, the signed bits its
    integers need and, per activation QuantizeLinear, 8 or the width of the Clip that bounds its
    input (the form :func:`fold_weight_clips` leaves narrow activation ranges in)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = producer_map(graph)
    bits: dict[str, list[int]] = {"weight": [], "activation": []}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            integers = numpy_helper.to_array(initializers[node.input[0]])
        elif node.op_type == "QuantizeLinear" and node.input[0] in initializers:
            weight = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
            integers = _integers(weight, _broadcast_scale(graph, node, weight.ndim).astype(np.float32))
        elif node.op_type == "QuantizeLinear":
            bits["activation"].append(_activation_bits(graph, node, producers))
            continue
        else:
            continue
        bits["weight"].append(signed_bits(int(integers.min(initial=0)), int(integers.max(initial=0))))
    return bits


def integer_gemm_operand_bits(model: onnx.ModelProto) -> int | None:
    """The widest right-hand (B) operand, in signed bits, of any MatMul/Gemm whose two inputs are
    both dequantized -- the matmuls onnxruntime fuses into integer kernels in fast mode: the GEMM
    weights and, for attention, k^T and v (activations). None when there is no such matmul.

    On x86 onnxruntime shifts the int8 left operand to uint8 (0..255) and, without VNNI, sums pairs
    of u8*s8 products in int16 with saturation; 2 * 255 * 2**(b-1) <= 32767 only for b <= 7, so
    this number (not the sidecar's label) decides whether fast mode is exact there. Read from the
    graph's numbers: integer weights' ranges, and the Clip bounds of narrow activation ranges."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = producer_map(graph)
    widest = None
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        sources = [source_node(name, producers) for name in node.input[:2]]
        if not all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            continue
        bits = _dequantized_bits(graph, sources[1], initializers, producers)
        widest = bits if widest is None else max(widest, bits)
    return widest


def _dequantized_bits(graph: onnx.GraphProto, dequantize: onnx.NodeProto, initializers: dict[str, onnx.TensorProto],
                      producers: dict[str, onnx.NodeProto]) -> int:
    """Signed bits of the integers a DequantizeLinear reads: a stored INT8 weight, a quantized float
    weight, or an activation QuantizeLinear (8, or the width of the Clip before it)."""
    if dequantize.input[0] in initializers:
        integers = numpy_helper.to_array(initializers[dequantize.input[0]])
        return signed_bits(int(integers.min(initial=0)), int(integers.max(initial=0)))
    quantize = producers.get(dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return 8
    if quantize.input[0] in initializers:
        weight = numpy_helper.to_array(initializers[quantize.input[0]]).astype(np.float32)
        integers = _integers(weight, _broadcast_scale(graph, quantize, weight.ndim).astype(np.float32))
        return signed_bits(int(integers.min(initial=0)), int(integers.max(initial=0)))
    return _activation_bits(graph, quantize, producers)


def _activation_bits(graph: onnx.GraphProto, quantize: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> int:
    clip = producers.get(quantize.input[0])
    bounds = [constant(graph, name) for name in clip.input[1:3]] if clip is not None and clip.op_type == "Clip" else []
    if len(bounds) != 2 or any(b is None for b in bounds):
        return 8
    scale = float(constant(graph, quantize.input[1]))
    return min(8, signed_bits(round(float(bounds[0]) / scale), round(float(bounds[1]) / scale)))


def through_layout_ops(name: str, consumers: dict[str, list[onnx.NodeProto]]) -> list[onnx.NodeProto]:
    """The compute nodes reached from ``name`` through :data:`LAYOUT_OPS`."""
    found, stack = [], list(consumers.get(name, []))
    while stack:
        node = stack.pop()
        if node.op_type in LAYOUT_OPS:
            for output in node.output:
                stack.extend(consumers.get(output, []))
        else:
            found.append(node)
    return found


def source_node(name: str, producers: dict[str, onnx.NodeProto], through: tuple[str, ...] = LAYOUT_OPS) -> onnx.NodeProto | None:
    """The node that computes ``name``, looking back through the ``through`` ops (None for a graph
    input or an initializer)."""
    node = producers.get(name)
    while node is not None and node.op_type in through and node.input:
        node = producers.get(node.input[0])
    return node


def unquantized_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes with an input that does not come from a DequantizeLinear."""
    graph = model.graph
    producers = producer_map(graph)
    left = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        sources = [source_node(name, producers) for name in node.input[:2]]
        if not all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            left.append(node.name)
    return left


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 for everything in float32 except the graph's inputs and outputs (onnxconverter-
    common's converter). Opset 19 QuantizeLinear/DequantizeLinear take float16 directly, so no
    casts are needed around the Q/DQ pairs."""
    with warnings.catch_warnings():  # "the float32 number ... will be truncated": expected for fp16
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(model, keep_io_types=True)
