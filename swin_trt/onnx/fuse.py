"""Graph passes that cut the non-GEMM time of a Swin Q/DQ graph on the CPU (issue 10).

Two kinds, because the exported graph is shared by every backend while some fusions exist only
as onnxruntime contrib operators:

- export passes (standard ONNX, any backend): :func:`drop_noop_pads` (timm pads every block's
  input to a multiple of the window, a zero-width Pad at every block of Swin-T 224) and
  :func:`combine_attention_biases` (the relative position bias and the shift mask added as one
  constant per shifted block instead of two broadcast adds over every attention map);
- onnxruntime passes for a ``fast`` engine (:func:`onnxruntime_fusions`): onnxruntime's own
  transformer optimizer turns fc1's bias add + the erf GELU into one ``BiasGelu`` (onnxruntime's
  graph optimizer does not match the exporter's GELU form), and after onnxruntime has fused the
  Q/DQ GEMMs, :func:`fold_bias_into_integer_matmuls` moves each remaining bias add into its
  ``MatMulIntegerToFloat`` (whose epilogue adds a bias; onnxruntime's QDQ selectors leave it out);
  on CPUs without VNNI/AMX, :func:`unsigned_int8_operands` stores the graph's int8 Q/DQ as uint8 so
  that the fused GEMMs take MLAS's exact u8u8 kernels instead of the saturating u8s8 ones.

Measured against the graph without them in ``docs/cpu.md``; the tests check each pass against
onnxruntime's outputs on the unmodified graph.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import onnx
from onnx import numpy_helper

from swin_trt.lazy import lazy_import
from swin_trt.onnx.graph import consumer_map, producer_map, prune_initializers, rename_input

transformers_optimizer = lazy_import("onnxruntime.transformers.optimizer")
fusion_options = lazy_import("onnxruntime.transformers.fusion_options")


class _Index(NamedTuple):
    """Who makes and who reads each tensor of a graph, and its constants, as a pass starts."""

    initializers: dict[str, onnx.TensorProto]
    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]


def _index(graph: onnx.GraphProto) -> _Index:
    return _Index({init.name: init for init in graph.initializer}, producer_map(graph), consumer_map(graph))


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
    return {"noop_pads": drop_noop_pads(model), "attention_biases": combine_attention_biases(model)}


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
                c.op_type == "DequantizeLinear" and list(c.input[1:]) == list(node.input[1:]) for c in consumers[node.output[0]]):
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
