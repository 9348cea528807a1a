"""Graph passes that cut the non-GEMM time of a Swin Q/DQ graph on the CPU (issue 10).

Two kinds, because the exported graph is shared by every backend while some fusions exist only
as onnxruntime contrib operators:

- export passes (standard ONNX, any backend): :func:`drop_noop_pads` (timm pads every block's
  input to a multiple of the window, a zero-width Pad at every block of Swin-T 224),
  :func:`fold_constant_layout_ops` (the exporter leaves the position bias of some blocks, in Swin-T
  224 those with 6, 12 and 24 heads, as a Reshape/Transpose/Unsqueeze chain on its table) and
  :func:`combine_attention_biases` (the relative position bias and the shift mask added as one
  constant per shifted block instead of two broadcast adds over every attention map);
- onnxruntime passes for a ``fast`` engine (:func:`onnxruntime_fusions`): onnxruntime's own
  transformer optimizer turns fc1's bias add + the erf GELU into one ``BiasGelu`` (onnxruntime's
  graph optimizer does not match the exporter's GELU form); on CPUs without VNNI/AMX,
  :func:`unsigned_int8_operands` stores the graph's int8 Q/DQ as uint8 so that the fused GEMMs take
  MLAS's exact u8u8 kernels instead of the saturating u8s8 ones;
- engine passes on the graph onnxruntime has optimized, for both modes (:func:`engine_passes`):
  they change no value, only where the layout work happens and what onnxruntime left unfused.
  :func:`fold_bias_into_integer_matmuls` (fast) moves each remaining bias add into its
  ``MatMulIntegerToFloat`` (whose epilogue adds a bias; onnxruntime's QDQ selectors leave it out),
  :func:`split_integer_gemms` (fast) computes q, k and v as three GEMMs instead of copying them out
  of the qkv output, :func:`gather_rows_before_integer_gemms` (fast) does the window reverse on
  proj's 8-bit input, :func:`layout_ops_on_integers` and :func:`quantize_before_layout_ops` move
  the head transposes of q and k (and the window partition) from float tensors to 8-bit integers.

Measured against the graph without them in ``docs/cpu.md``; the tests check each pass against
onnxruntime's outputs on the unmodified graph.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from swin_trt.lazy import lazy_import
from swin_trt.onnx.graph import axis, consumer_map, producer_map, prune_initializers, rename_input

transformers_optimizer = lazy_import("onnxruntime.transformers.optimizer")
fusion_options = lazy_import("onnxruntime.transformers.fusion_options")


class _Index(NamedTuple):
    """Who makes and who reads each tensor of a graph, and its constants, as a pass starts."""

    initializers: dict[str, onnx.TensorProto]
    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]


def _index(graph: onnx.GraphProto) -> _Index:
    return _Index({init.name: init for init in graph.initializer}, producer_map(graph), consumer_map(graph))


def _graph_outputs(graph: onnx.GraphProto) -> set[str]:
    """Tensors a rewrite must leave as they are: a consumer outside the graph reads them."""
    return {output.name for output in graph.output}


def _replace(graph: onnx.GraphProto, old: list[onnx.NodeProto], new: list[onnx.NodeProto]) -> None:
    """Remove ``old`` and put ``new`` (in order) where the first of ``old`` stood, so that a graph in
    topological order stays so (``new`` reads only what was made before ``old``)."""
    position = min(list(graph.node).index(node) for node in old)
    for node in old:
        graph.node.remove(node)
    for node in reversed(new):
        graph.node.insert(position, node)


def _bypass(graph: onnx.GraphProto, node: onnx.NodeProto, replacement: str) -> None:
    """Feed ``node``'s consumers from ``replacement`` and remove ``node`` (refused for a graph output)."""
    rename_input(graph, node.output[0], replacement)
    graph.node.remove(node)


def drop_noop_pads(model: onnx.ModelProto) -> int:
    """Remove constant-mode Pads whose pads are all zero (a copy that changes nothing). Returns how many."""
    graph = model.graph
    initializers = _index(graph).initializers
    outputs = {output.name for output in graph.output}
    dropped = 0
    for node in list(graph.node):
        if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in initializers or node.output[0] in outputs:
            continue
        if not np.any(numpy_helper.to_array(initializers[node.input[1]])):
            _bypass(graph, node, node.input[0])
            dropped += 1
    prune_initializers(graph)
    return dropped


# single-output ops that move each element to one place: narrower than graph.LAYOUT_OPS, whose Split
# (several outputs), Slice and Gather (which drop or repeat elements) these rewrites do not handle
RESHAPING_OPS = ("Reshape", "Transpose", "Unsqueeze", "Squeeze")


def fold_constant_layout_ops(model: onnx.ModelProto) -> int:
    """Replace each layout node whose inputs are all constants by its output as a constant, until
    none is left. Why: torch.onnx folds the position bias of some blocks into one constant (in Swin-T
    224 those with 3 heads) and leaves the others as a chain on the bias table, which :func:`combine_attention_biases`
    cannot match (onnxruntime folds the chain when a session starts, too late for that pass). Values
    are moved, never computed (ONNX's reference implementation runs the node). Returns how many."""
    graph = model.graph
    folded = 0
    while True:
        initializers = _index(graph).initializers
        ready = [node for node in graph.node if node.op_type in RESHAPING_OPS and node.domain in ("", "ai.onnx")
                 and all(name in initializers for name in node.input if name)]
        if not ready:
            break
        for node in ready:
            feeds = {name: numpy_helper.to_array(initializers[name]) for name in node.input if name}
            (value,) = ReferenceEvaluator(node).run(None, feeds)
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            graph.node.remove(node)
            folded += 1
    prune_initializers(graph)
    return folded


def combine_attention_biases(model: onnx.ModelProto) -> int:
    """``Add(attn, bias) -> Reshape(B, nW, H, N, N) -> Add(mask)`` becomes ``Reshape(attn) ->
    Add(bias + mask)`` with one precombined constant of shape (1, nW, H, N, N) per shifted block.

    The same values reach the softmax wherever the mask is 0 (bias + 0 is bias exactly); where
    it is -100 the sum rounds differently in the last place, and those entries leave the softmax
    as exp(-100) ~ 4e-44 either way, which quantizes to 0. Returns how many blocks were combined."""
    graph = model.graph
    initializers, producers, consumers = _index(graph)
    combined = 0
    for mask_add in list(graph.node):
        if mask_add.op_type != "Add":
            continue
        mask_name = next((name for name in mask_add.input if name in initializers), None)
        reshape = next((producers.get(name) for name in mask_add.input if name != mask_name), None)
        if mask_name is None or reshape is None or reshape.op_type != "Reshape" or len(consumers[reshape.output[0]]) != 1:
            continue
        bias_add = producers.get(reshape.input[0])
        if bias_add is None or bias_add.op_type != "Add" or len(consumers[bias_add.output[0]]) != 1:
            continue
        bias_name = next((name for name in bias_add.input if name in initializers), None)
        if bias_name is None:
            continue
        mask, bias = (numpy_helper.to_array(initializers[name]) for name in (mask_name, bias_name))
        if mask.ndim != 5 or bias.ndim != 4 or mask.shape[2] != 1 or bias.shape[0] != 1:
            continue
        activation = next(name for name in bias_add.input if name != bias_name)
        together = (bias[:, None] + mask).astype(mask.dtype)  # (1, nW, H, N, N)
        name = f"{mask_name}_plus_{bias_name}"
        graph.initializer.append(numpy_helper.from_array(together, name))
        mask_add.input[list(mask_add.input).index(mask_name)] = name
        _bypass(graph, bias_add, activation)
        combined += 1
    prune_initializers(graph)
    return combined


def export_fusions(model: onnx.ModelProto) -> dict[str, int]:
    """The standard-ONNX passes, in place; how many nodes each changed."""
    return {"noop_pads": drop_noop_pads(model), "constant_layout_ops": fold_constant_layout_ops(model),
            "attention_biases": combine_attention_biases(model)}


def bias_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's transformer optimizer with only its GELU fusions (``Add(bias) -> erf GELU``
    -> ``BiasGelu``) and LayerNorm fusion: attention fusion expects BERT's unquantized attention,
    and the Q/DQ nodes must stay where export put them."""
    options = fusion_options.FusionOptions("vit")
    for switch in ("enable_attention", "enable_skip_layer_norm", "enable_bias_skip_layer_norm", "enable_embed_layer_norm",
                   "enable_rotary_embeddings", "enable_qordered_matmul", "enable_shape_inference"):
        setattr(options, switch, False)
    quiet = logging.getLogger("onnxruntime.transformers")  # it warns that num_heads is unset: attention is not fused here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        optimized = transformers_optimizer.optimize_model(model, model_type="vit", num_heads=0, hidden_size=0, optimization_options=options,
                                                          opt_level=0, only_onnxruntime=False)
    finally:
        quiet.setLevel(level)
    return optimized.model


def fold_bias_into_integer_matmuls(model: onnx.ModelProto) -> int:
    """In a graph onnxruntime has optimized, ``Add(MatMulIntegerToFloat(...), bias)`` with a 1-D
    constant bias becomes the MatMulIntegerToFloat's own bias input (its 7th): the epilogue that
    scales the int32 accumulator adds it, instead of a second pass over the output. Returns how many."""
    graph = model.graph
    initializers, producers, consumers = _index(graph)
    folded = 0
    for add in list(graph.node):
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for gemm_output, bias in (add.input, reversed(add.input)):
            matmul = producers.get(gemm_output)
            if (matmul is None or matmul.op_type != "MatMulIntegerToFloat" or matmul.domain != "com.microsoft" or len(matmul.input) > 6
                    or len(consumers[gemm_output]) != 1 or bias not in initializers or len(initializers[bias].dims) != 1):
                continue
            matmul.input.extend([""] * (6 - len(matmul.input)) + [bias])
            matmul.output[0] = add.output[0]
            graph.node.remove(add)
            folded += 1
            break
    return folded


def onnxruntime_fusions(model: onnx.ModelProto) -> onnx.ModelProto:
    """The contrib-operator fusions that go before onnxruntime's own optimizer (see the module doc)."""
    return bias_gelu(model)


UNSIGNED_OFFSET = 128  # int8 q with zero point z is uint8 q + 128 with zero point z + 128: the same real value


def _shifted(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array((numpy_helper.to_array(tensor).astype(np.int16) + UNSIGNED_OFFSET).astype(np.uint8), name)


def _inverse_of(dequantize: onnx.NodeProto, quantize: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """``dequantize`` reads ``quantize``'s integers on the same scale and zero point, compared by value: the exporter
    gives a per-channel weight quantizer's Q and DQ constants of their own where the vectors are long (Swin-T 224:
    the 1152- and 1536-channel qkv and fc1 weights of its last two stages), so equal names would miss them."""
    return (dequantize.op_type == "DequantizeLinear" and len(dequantize.input) == len(quantize.input) == 3 and axis(dequantize, 1) == axis(quantize, 1)
            and all(a == b or (a in initializers and b in initializers and _same_constant(a, b, initializers))
                    for a, b in zip(dequantize.input[1:], quantize.input[1:])))


def unsigned_int8_operands(model: onnx.ModelProto) -> int:
    """Store every signed 8-bit QuantizeLinear -> DequantizeLinear pair (and every int8 weight
    initializer behind a DequantizeLinear) as uint8 with its zero point + 128, in place; returns how
    many DequantizeLinear nodes changed.

    The graph computes exactly what it did: uint8 [0, 255] with zero point z + 128 holds int8
    [-128, 127] with zero point z, level for level, and QuantizeLinear saturates at the same real
    values. What changes is the kernel onnxruntime fuses the pair into. On x86 without VNNI/AMX,
    MLAS's u8s8 GEMM sums pairs of u8*s8 products in int16 with saturation, wrong for 8-bit signed
    operands (``integer_gemm_operand_bits``); its u8u8 GEMM widens both operands to int16 and
    accumulates pairs in int32 (``vpmaddwd``), exact for any 8-bit values. No ONNX Runtime option
    selects that kernel; the operand type does. Why by hand: onnxruntime's own QDQ S8->U8 pass
    converts activations only, and keeps int8 weights on the u8s8 path."""
    graph = model.graph
    initializers, producers, consumers = _index(graph)
    shifted: dict[str, str] = {}  # int8 initializer -> its uint8 copy (zero points are shared between nodes)

    def unsigned(name: str) -> str:
        if name not in shifted:
            shifted[name] = f"{name}_uint8"
            graph.initializer.append(_shifted(initializers[name], shifted[name]))
        return shifted[name]

    def signed_constant(name: str) -> bool:
        return name in initializers and initializers[name].data_type == onnx.TensorProto.INT8

    changed, retyped = 0, set()
    for node in list(graph.node):
        if len(node.input) < 3 or not signed_constant(node.input[2]):
            continue
        source = node.input[0]
        if node.op_type == "DequantizeLinear" and signed_constant(source) and len(consumers[source]) == 1:  # int8 weights (export --weights int8)
            node.input[0] = unsigned(source)
            pairs = [node]
        elif node.op_type == "QuantizeLinear" and consumers[node.output[0]] and all(
                _inverse_of(c, node, initializers) for c in consumers[node.output[0]]):
            pairs = consumers[node.output[0]]
            node.input[2] = unsigned(node.input[2])
            retyped.add(node.output[0])
        else:
            continue
        for dequantize in pairs:
            dequantize.input[2] = unsigned(dequantize.input[2])
        changed += len(pairs)
    for info in graph.value_info:  # the exporter's type annotations of the quantized tensors
        if info.name in retyped:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    prune_initializers(graph)
    return changed


def _columns(values: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Columns ``start:stop`` of a per-column GEMM constant (weights, scales, zero points, bias); a scalar is shared."""
    return values if values.ndim == 0 or values.size == 1 else values[..., start:stop]


def split_integer_gemms(model: onnx.ModelProto) -> int:
    """``Split(Reshape(MatMulIntegerToFloat(a, B)))`` along axes that hold whole blocks of the GEMM's
    columns becomes one MatMulIntegerToFloat per part, each over its block of B's columns (with its
    scales, zero points and bias), reshaped to the part's shape. Each output element is the same sum
    with the same epilogue; what goes is the copy of every qkv output into q, k and v (the Split was
    4-5 % of the fast engine's time on Swin-T). Returns how many Splits were removed."""
    graph = model.graph
    initializers, producers, consumers = _index(graph)
    outputs = _graph_outputs(graph)

    def constant(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(initializers[name]) if name in initializers else None

    removed = 0
    for split in list(graph.node):
        reshape = producers.get(split.input[0]) if split.op_type == "Split" else None
        gemm = producers.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        if (gemm is None or gemm.op_type != "MatMulIntegerToFloat" or len(consumers[gemm.output[0]]) != 1 or len(consumers[reshape.output[0]]) != 1
                or {gemm.output[0], reshape.output[0]} & outputs):
            continue
        shape, weights = constant(reshape.input[1]), constant(gemm.input[1])
        sizes = constant(split.input[1]) if len(split.input) > 1 and split.input[1] else None
        if shape is None or weights is None or weights.ndim != 2 or sizes is None or (shape == 0).any():
            continue
        split_axis = axis(split, 0) % len(shape)
        inner = int(np.prod(shape[split_axis + 1:]))
        if -1 in shape[split_axis:] or shape[split_axis] * inner != weights.shape[1]:
            continue  # the split axis does not cut the GEMM's columns into blocks
        extras = [constant(name) if name else None for name in gemm.input[2:]]
        if any(name and value is None for name, value in zip(gemm.input[2:], extras)):
            continue
        start, parts = 0, []
        for index, (size, output) in enumerate(zip(sizes.tolist(), split.output)):
            stop = start + size * inner
            inputs = [gemm.input[0]]
            for name, value in zip(gemm.input[1:], [weights, *extras]):
                if not name:
                    inputs.append("")
                    continue
                part = f"{name}_columns_{start}_{stop}"
                if part not in initializers:
                    initializers[part] = numpy_helper.from_array(_columns(value, start, stop), part)
                    graph.initializer.append(initializers[part])
                inputs.append(part)
            part_shape = shape.copy()
            part_shape[split_axis] = size
            shape_name = f"{output}_shape"
            graph.initializer.append(numpy_helper.from_array(part_shape, shape_name))
            gemm_output = f"{output}_gemm"
            parts += [onnx.helper.make_node("MatMulIntegerToFloat", inputs, [gemm_output], f"{gemm.name or gemm.output[0]}_part{index}", domain=gemm.domain),
                      onnx.helper.make_node("Reshape", [gemm_output, shape_name], [output], f"{reshape.name or reshape.output[0]}_part{index}")]
            start = stop
        _replace(graph, [gemm, reshape, split], parts)
        removed += 1
    prune_initializers(graph)
    return removed


def _gather_rows_before_gemm(graph: onnx.GraphProto, index: _Index) -> bool:
    initializers, producers, consumers = index
    outputs = _graph_outputs(graph)
    for gather in graph.node:
        reshape = producers.get(gather.input[0]) if gather.op_type == "Gather" else None
        gemm = producers.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        if (gemm is None or gemm.op_type != "MatMulIntegerToFloat" or gather.input[1] not in initializers or reshape.input[1] not in initializers
                or gemm.input[1] not in initializers or len(consumers[gemm.output[0]]) != 1 or len(consumers[reshape.output[0]]) != 1
                or {gemm.output[0], reshape.output[0]} & outputs):
            continue
        shape = numpy_helper.to_array(initializers[reshape.input[1]])
        rows, columns = initializers[gemm.input[1]].dims
        if len(shape) != 3 or axis(gather, 0) not in (1, -2) or shape[2] != columns or shape[1] <= 0 or (shape == 0).any():
            continue  # not a gather of whole output rows
        name = gemm.output[0]
        row_shape = f"{name}_input_rows_shape"
        graph.initializer.append(numpy_helper.from_array(np.array([shape[0], shape[1], rows], dtype=np.int64), row_shape))
        moved = [onnx.helper.make_node("Reshape", [gemm.input[0], row_shape], [f"{name}_input_rows"], f"{name}_input_rows"),
                 onnx.helper.make_node("Gather", [f"{name}_input_rows", gather.input[1]], [f"{name}_input_gathered"], f"{name}_input_gathered", axis=1)]
        gemm.input[0], gemm.output[0] = f"{name}_input_gathered", gather.output[0]
        _replace(graph, [gemm, reshape, gather], [*moved, gemm])
        return True
    return False


def gather_rows_before_integer_gemms(model: onnx.ModelProto) -> int:
    """``Gather(Reshape(MatMulIntegerToFloat(a, B)), rows)`` along the token axis becomes the GEMM of
    the gathered rows of ``a``: each output row depends on its input row alone, so gathering before
    or after gives the same rows, and before moves the 8-bit input instead of the float output. In
    Swin this is each block's window reverse after proj (the gather layout's grid order). Returns how many."""
    return _rewrite_all(model, _gather_rows_before_gemm)


DATA_MOVEMENT_OPS = (*RESHAPING_OPS, "Gather")  # each output element is one input element: they commute with per-element arithmetic


def _scalar_constant(name: str, initializers: dict[str, onnx.TensorProto]) -> bool:
    return name in initializers and int(np.prod(initializers[name].dims)) == 1


def _per_tensor_int8(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """A QuantizeLinear/DequantizeLinear with a scalar scale and an int8 or uint8 scalar zero point
    (onnxruntime moves no FP8 tensor through a Transpose)."""
    return (len(node.input) >= 3 and _scalar_constant(node.input[1], initializers) and _scalar_constant(node.input[2], initializers)
            and initializers[node.input[2]].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))


def _data_input(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> int:
    """Which input of a layout op or a scalar Mul carries the moving tensor."""
    return 1 if node.op_type == "Mul" and _scalar_constant(node.input[0], initializers) else 0


def _rewrite_all(model: onnx.ModelProto, rewrite_one) -> int:
    """Apply ``rewrite_one(graph, index)`` until it finds nothing (it returns False), with a fresh
    index each time, since a rewrite renames and removes tensors. Returns how many it made."""
    count = 0
    while rewrite_one(model.graph, _index(model.graph)):
        count += 1
    return count


def _quantize_before_data_movement(graph: onnx.GraphProto, index: _Index) -> bool:
    initializers, producers, consumers = index
    outputs = _graph_outputs(graph)
    for quantize in graph.node:
        if quantize.op_type != "QuantizeLinear" or not _per_tensor_int8(quantize, initializers):
            continue
        chain, source = [], quantize.input[0]
        while (node := producers.get(source)) is not None and len(consumers.get(source, [])) == 1 and source not in outputs and (
                node.op_type in DATA_MOVEMENT_OPS or (node.op_type == "Mul" and any(_scalar_constant(name, initializers) for name in node.input))):
            chain.insert(0, node)
            source = node.input[_data_input(node, initializers)]
        movement = [node for node in chain if node.op_type in DATA_MOVEMENT_OPS]
        if not any(node.op_type in ("Transpose", "Gather") for node in movement):
            continue  # Reshape and Squeeze move nothing
        final, current = quantize.output[0], source
        reordered = [*(node for node in chain if node.op_type == "Mul"), quantize, *movement]
        for step, node in enumerate(reordered):
            node.input[_data_input(node, initializers)] = current
            current = final if step == len(reordered) - 1 else f"{final}_before_movement_{step}"
            node.output[0] = current
        _replace(graph, [*chain, quantize], reordered)
        return True
    return False


def quantize_before_layout_ops(model: onnx.ModelProto) -> int:
    """``QuantizeLinear(Mul(Transpose/Gather/Squeeze/Reshape(x), scalar))`` with a per-tensor 8-bit
    scale becomes the data movement applied to ``QuantizeLinear(Mul(x, scalar))``: the same values (a
    scalar Mul and a per-tensor quantize act on each element alone, so they commute with moving
    elements), and the moves carry one byte per element instead of four. onnxruntime's transpose
    optimizer does this for k and v but stops at q's attention-scale Mul, leaving a float Transpose
    of q in every block, and moves no Gather (the window partition). Returns how many moved."""
    return _rewrite_all(model, _quantize_before_data_movement)


def _same_constant(a: str, b: str, initializers: dict[str, onnx.TensorProto]) -> bool:
    left, right = (numpy_helper.to_array(initializers[name]) for name in (a, b))
    return left.dtype == right.dtype and np.array_equal(left, right)


def _movement_on_integers(graph: onnx.GraphProto, index: _Index) -> bool:
    initializers, producers, consumers = index
    outputs = _graph_outputs(graph)
    for dequantize in graph.node:
        quantize = producers.get(dequantize.input[0]) if dequantize.op_type == "DequantizeLinear" else None
        if quantize is None or quantize.op_type != "QuantizeLinear" or len(consumers[quantize.output[0]]) != 1:
            continue
        movement, source = [], quantize.input[0]
        while (node := producers.get(source)) is not None and node.op_type in DATA_MOVEMENT_OPS and len(consumers[source]) == 1:
            movement.insert(0, node)
            source = node.input[0]
        first = producers.get(source)
        if (not movement or first is None or first.op_type != "DequantizeLinear" or len(consumers[source]) != 1
                or {source, quantize.output[0], *(node.output[0] for node in movement)} & outputs
                or not all(_per_tensor_int8(node, initializers) for node in (first, quantize, dequantize))
                or not all(_same_constant(a, b, initializers) for a, b in zip(first.input[1:3], quantize.input[1:3]))
                or not all(_same_constant(a, b, initializers) for a, b in zip(first.input[1:3], dequantize.input[1:3]))):
            continue
        movement[0].input[0] = first.input[0]
        dequantize.input[0] = movement[-1].output[0]
        retyped = {node.output[0] for node in movement}  # their element type is now the integers'
        kept = [info for info in graph.value_info if info.name not in retyped]
        del graph.value_info[:]
        graph.value_info.extend(kept)
        graph.node.remove(first)
        graph.node.remove(quantize)
        return True
    return False


def layout_ops_on_integers(model: onnx.ModelProto) -> int:
    """``DequantizeLinear -> Transpose/Reshape/Squeeze... -> QuantizeLinear -> DequantizeLinear`` on
    one per-tensor 8-bit scale and zero point becomes the data movement on the integers, then one
    DequantizeLinear. onnxruntime's Q/DQ propagation writes that pattern around k's transpose
    (k^T for q.k^T); requantizing a dequantized value on its own scale gives back the same integer
    (``round(q * s / s) = q``), so the values are unchanged, and the exact engine loses a float
    transpose and a quantize-dequantize pass over k in every block. Returns how many."""
    return _rewrite_all(model, _movement_on_integers)


def engine_passes(model: onnx.ModelProto, mode: str) -> dict[str, int]:
    """The passes on an engine's graph after onnxruntime's own optimizer (see the module doc), in
    place; how many nodes each changed. Exact gets only those that move values between layouts."""
    integer_gemms = {"biases_in_integer_gemms": fold_bias_into_integer_matmuls(model), "split_integer_gemms": split_integer_gemms(model),
                     "gather_rows_before_integer_gemms": gather_rows_before_integer_gemms(model)} if mode == "fast" else {}
    return {**integer_gemms, "layout_ops_on_integers": layout_ops_on_integers(model),
            "quantize_before_layout_ops": quantize_before_layout_ops(model)}
