"""Fusion passes for the CPU (swin_trt/onnx/fuse.py): the export passes change no output bit, the
onnxruntime passes fuse what they claim and stay within the gate."""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from swin_trt.api import open_model
from swin_trt.cpu import read_cpu
from swin_trt.io import sidecar_path
from swin_trt.onnx.export import export_onnx, save_onnx
from swin_trt.onnx.fuse import (
    export_fusions,
    fold_bias_into_integer_matmuls,
    gather_rows_before_integer_gemms,
    layout_ops_on_integers,
    onnxruntime_fusions,
    quantize_before_layout_ops,
    split_integer_gemms,
    unsigned_int8_operands,
)
from swin_trt.parity.compare import quantile, relative_errors
from swin_trt.runtimes.onnxruntime import Engine, build, session_options


@pytest.fixture(scope="module")
def graphs(micro_trt, tmp_path_factory):
    """swin_micro, trt recipe: the calibrated checkpoint, its export, and the same export without the fusion passes."""
    out = tmp_path_factory.mktemp("fuse")
    checkpoint, fused = micro_trt.checkpoint, micro_trt.graph
    plain = save_onnx(export_onnx(open_model(checkpoint=checkpoint).model, fusions=False), out / "plain.onnx")
    shutil.copy(sidecar_path(fused["onnx"]), sidecar_path(out / "plain.onnx"))  # the same model: the sidecar's facts hold for both
    return checkpoint, fused, plain


def _images(count: int = 48) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, 3, 32, 32), dtype=np.float32)


def _run(path, mode: str, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), session_options(mode, 2), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def _ops(path) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_export_passes_change_no_output_bit(graphs):
    _, fused, plain = graphs
    fused = fused["onnx"]
    assert _ops(plain)["Pad"] == 2 and _ops(fused)["Pad"] == 0  # swin_micro's 2 merges pad by zero (the gather layout's blocks do not pad)
    assert _ops(plain)["Add"] - _ops(fused)["Add"] == 2  # the two shifted blocks: bias and mask in one add
    images = _images()
    assert np.array_equal(_run(fused, "exact", images), _run(plain, "exact", images))
    again = onnx.load(str(plain))
    assert export_fusions(again) == {"noop_pads": 2, "constant_layout_ops": 0, "attention_biases": 2}  # swin_micro's biases: one constant each
    assert set(export_fusions(again).values()) == {0}


def test_constant_layout_ops_fold_into_one_constant():
    """The chain torch.onnx leaves on the position-bias table of a block with more than three heads (Reshape, Transpose,
    Unsqueeze on a constant) becomes one constant holding numpy's result, and the graph's output does not change."""
    table = np.arange(2 * 3 * 4, dtype=np.float32).reshape(6, 4)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Reshape", ["table", "shape"], ["viewed"]),
         onnx.helper.make_node("Transpose", ["viewed"], ["permuted"], perm=[2, 0, 1]),
         onnx.helper.make_node("Unsqueeze", ["permuted", "axes"], ["bias"]),
         onnx.helper.make_node("Add", ["attn", "bias"], ["out"])],
        "bias", [onnx.helper.make_tensor_value_info("attn", onnx.TensorProto.FLOAT, ["n", 4, 2, 3])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["n", 4, 2, 3])],
        [onnx.numpy_helper.from_array(table, "table"), onnx.numpy_helper.from_array(np.array([2, 3, 4]), "shape"),
         onnx.numpy_helper.from_array(np.array([0]), "axes")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    assert export_fusions(model)["constant_layout_ops"] == 3
    assert [node.op_type for node in model.graph.node] == ["Add"]
    (bias,) = [onnx.numpy_helper.to_array(init) for init in model.graph.initializer]
    assert np.array_equal(bias, table.reshape(2, 3, 4).transpose(2, 0, 1)[None])


def test_fast_engine_fuses_gelu_and_biases_and_matches_reference(graphs, tmp_path):
    checkpoint, fused, plain = graphs
    details = build(fused["onnx"], tmp_path / "fast.onnx", "fast")
    ops = _ops(details["engine"])
    assert ops["BiasGelu"] == 6 and ops["Erf"] == 0  # one per block: fc1's bias add and GELU in one kernel
    engine_graph = onnx.load(details["engine"])
    assert fold_bias_into_integer_matmuls(engine_graph) == 0  # every foldable bias is already inside its integer GEMM
    with_bias = [n for n in engine_graph.graph.node if n.op_type == "MatMulIntegerToFloat" and len(n.input) == 7]
    assert len(with_bias) >= 3 * 6  # qkv, proj, fc2 of every block (fc1's bias is in BiasGelu)
    images = _images()
    loaded = open_model(checkpoint=checkpoint)
    with torch.no_grad():
        fakequant = loaded.model.eval()(torch.from_numpy(images)).numpy()
        fp32 = loaded.fp_model()(torch.from_numpy(images)).numpy()
    logits = Engine(details["engine"])(images)
    errors = relative_errors(logits, fakequant, fp32)
    assert quantile(errors, 0.5) <= 0.5 and quantile(errors, 0.95) <= 1.2  # the default gate's bounds, on every x86 CPU
    sidecar = json.loads(sidecar_path(tmp_path / "fast.onnx").read_text())
    assert sidecar["ort_mode"] == "fast" and sidecar["unsigned_operands"] is not read_cpu().int8_dot_product
    plain_fast = _run(plain, "fast", images)  # onnxruntime's own fusions on the signed graph
    assert (logits.argmax(1) == plain_fast.argmax(1)).mean() >= 0.97
    if not read_cpu().int8_dot_product:  # AVX2 without VNNI: the signed graph's u8s8 pair sums saturate in int16, what the unsigned operands avoid
        assert quantile(relative_errors(plain_fast, fakequant, fp32), 0.5) > 0.5


def test_unsigned_operands_compute_the_same_values(graphs, tmp_path):
    """unsigned_int8_operands changes the storage type of every int8 Q/DQ pair, and no value: the rewritten graph run with
    explicit Q/DQ (exact mode) gives the original's outputs bit for bit, with int8 weights stored in the graph too."""
    _, fused, _ = graphs
    original = onnx.load(fused["onnx"])
    dequantize = sum(node.op_type == "DequantizeLinear" for node in original.graph.node)
    images = _images(8)
    for name, model in (("float weights", original), ("int8 weights", _int8_weights(original))):
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
        assert unsigned_int8_operands(rewritten) == dequantize, name
        types = {init.name: init.data_type for init in rewritten.graph.initializer}
        zero_points = [types[node.input[2]] for node in rewritten.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert set(zero_points) == {onnx.TensorProto.UINT8}, name
        assert onnx.TensorProto.INT8 not in types.values(), name
        onnx.save(model, tmp_path / "a.onnx")
        onnx.save(rewritten, tmp_path / "b.onnx")
        assert np.array_equal(_run(tmp_path / "a.onnx", "exact", images), _run(tmp_path / "b.onnx", "exact", images)), name


def _own_constants(model: onnx.ModelProto, scale_factor: float = 1.0) -> tuple[onnx.ModelProto, int]:
    """A copy whose weight DequantizeLinear nodes read scale and zero point copies of their own (the same values,
    times ``scale_factor`` for the scale), as torch.onnx exports Swin-T's long per-channel weight vectors."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    constants = {init.name: init for init in copy.graph.initializer}
    producers = {out: node for node in copy.graph.node for out in node.output}
    split = 0
    for node in copy.graph.node:
        quantize = producers.get(node.input[0])
        if node.op_type != "DequantizeLinear" or quantize is None or quantize.op_type != "QuantizeLinear" or quantize.input[0] not in constants:
            continue
        for index, factor in ((1, scale_factor), (2, None)):
            values = onnx.numpy_helper.to_array(constants[node.input[index]])
            name = f"{node.input[index]}_own_{split}"
            copy.graph.initializer.append(onnx.numpy_helper.from_array(values if factor is None else (values * factor).astype(values.dtype), name))
            node.input[index] = name
        split += 1
    return copy, split


def test_unsigned_operands_pair_qdq_by_value_not_by_name(graphs, tmp_path):
    """The exporter gives a weight quantizer's Q and DQ constants of their own where its per-channel vectors are long
    (Swin-T 224: stages 3 and 4's qkv and fc1, 16 pairs). Paired by name, those weights stayed int8 and their GEMMs took
    the saturating u8s8 kernels on AVX2; paired by value, every pair goes unsigned and no output changes. A DQ on
    another scale is no pair of its Q and keeps its type."""
    _, fused, _ = graphs
    original = onnx.load(fused["onnx"])
    dequantize = sum(node.op_type == "DequantizeLinear" for node in original.graph.node)
    own, split = _own_constants(original)
    assert split > 0
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(own)
    assert unsigned_int8_operands(rewritten) == dequantize
    types = {init.name: init.data_type for init in rewritten.graph.initializer}
    assert onnx.TensorProto.INT8 not in {types[node.input[2]] for node in rewritten.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    onnx.save(own, tmp_path / "a.onnx")
    onnx.save(rewritten, tmp_path / "b.onnx")
    images = _images(8)
    assert np.array_equal(_run(tmp_path / "a.onnx", "exact", images), _run(tmp_path / "b.onnx", "exact", images))
    rescaled, _ = _own_constants(original, scale_factor=2.0)
    assert unsigned_int8_operands(rescaled) == dequantize - split  # only the activations' pairs


def _int8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with its weights stored as int8 initializers behind their DequantizeLinear (export --weights int8)."""
    from swin_trt.onnx.graph import store_int8_weights

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert store_int8_weights(copy) > 0
    return copy


def test_exact_engine_folds_each_weights_qdq_into_the_float_weight_onnxruntime_computes(graphs, tmp_path):
    """An exact engine stores each weight as the float values its QuantizeLinear/DequantizeLinear give
    (onnxruntime's own kernels at build time), so no call dequantizes weights again; the expected
    values come from running the source graph's weight DequantizeLinear outputs in a session with
    onnxruntime's default Q/DQ handling. Activation Q/DQ stay, no Q/DQ reads a constant."""
    _, fused, _ = graphs
    engine = onnx.load(build(fused["onnx"], tmp_path / "exact.onnx", "exact")["engine"])
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in engine.graph.initializer}
    source = onnx.load(fused["onnx"])
    producers = {out: node for node in source.graph.node for out in node.output}
    # a folded weight keeps the name of the last node folded into it: DequantizeLinear -> Transpose for x @ W^T
    matmul_weights = [node.input[1] for node in engine.graph.node if node.op_type in ("MatMul", "Gemm") and node.input[1] in weights
                      and node.input[1] in producers]
    assert all(producers[producers[name].input[0]].op_type == "DequantizeLinear" for name in matmul_weights)
    assert len(matmul_weights) == 6 * 4 + 2  # qkv, proj, fc1, fc2 of 6 blocks and the 2 merges: every quantized weight
    del source.graph.output[:]
    source.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in matmul_weights)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    runtime = ort.InferenceSession(source.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(matmul_weights, {"images": _images(1)})
    for name, values in zip(matmul_weights, runtime):
        assert np.array_equal(weights[name], values), name
    qdq = [node for node in engine.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and not [node.name for node in qdq if node.input[0] in weights]  # activations only: nothing left to fold


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_engine_passes_change_no_output_bit(graphs, tmp_path, mode):
    """The passes on the optimized graph (split qkv GEMMs, head transposes on 8-bit integers) change no output bit: the
    engine gives what a session optimizing the same source in memory gives (where none of them runs), and they did run."""
    _, fused, _ = graphs
    details = build(fused["onnx"], tmp_path / f"{mode}.onnx", mode)
    source = onnx.load(fused["onnx"])
    if mode == "fast":
        if details["unsigned_operands"]:
            unsigned_int8_operands(source)
        source = onnxruntime_fusions(source)
    images = _images()
    in_memory = ort.InferenceSession(source.SerializeToString(), session_options(mode, 2), providers=["CPUExecutionProvider"])
    assert np.array_equal(Engine(details["engine"])(images), in_memory.run(None, {"images": images})[0])
    passes, ops = details["engine_passes"], _ops(details["engine"])
    if mode == "fast":  # swin_micro has 6 blocks: one qkv Split each, gone; q's head transpose after its quantize
        assert passes["split_integer_gemms"] == 6 and ops["Split"] == 0 and passes["quantize_before_layout_ops"] >= 6
        assert passes["gather_rows_before_integer_gemms"] > 0  # window reverses after proj, now on the quantized input
    else:  # k's transpose between its Q/DQ instead of around onnxruntime's propagated pair, q's and v's after their quantize
        assert passes["layout_ops_on_integers"] == 6 and passes["quantize_before_layout_ops"] >= 12
        assert set(passes) == {"layout_ops_on_integers", "quantize_before_layout_ops"}  # no integer GEMM in exact


def _graph(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs, [onnx.numpy_helper.from_array(value, name) for name, value in initializers.items()])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19), onnx.helper.make_opsetid("com.microsoft", 1)])


def _session_run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _tensor(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, elem_type, shape)


def test_quantize_moves_above_transposes_and_scalar_muls_only():
    """q's path, Transpose -> Squeeze -> Mul(scale) -> QuantizeLinear, becomes Mul -> QuantizeLinear -> Transpose ->
    Squeeze: the same int8 values (numpy's), the transpose on int8. A per-channel Mul does not commute with the transpose and
    a per-channel quantize neither: those chains stay as they are."""
    x = np.random.default_rng(0).standard_normal((4, 5, 1, 3, 2)).astype(np.float32)
    scale = np.float32(0.125)

    def model(mul_by: np.ndarray) -> onnx.ModelProto:
        return _graph([onnx.helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 3, 1, 4]),
                       onnx.helper.make_node("Squeeze", ["t", "zero"], ["s"]),
                       onnx.helper.make_node("Mul", ["s", "by"], ["m"]),
                       onnx.helper.make_node("QuantizeLinear", ["m", "scale", "zp"], ["q"])],
                      [_tensor("x", onnx.TensorProto.FLOAT, x.shape)], [_tensor("q", onnx.TensorProto.INT8, None)],
                      {"zero": np.array([0]), "by": mul_by, "scale": np.array(0.05, np.float32), "zp": np.array(3, np.int8)})

    moved = model(np.array(scale))
    assert quantize_before_layout_ops(moved) == 1
    assert [node.op_type for node in moved.graph.node] == ["Mul", "QuantizeLinear", "Transpose", "Squeeze"]
    expected = np.clip(np.rint(x.transpose(2, 0, 3, 1, 4)[0] * scale / np.float32(0.05)) + 3, -128, 127).astype(np.int8)
    assert np.array_equal(_session_run(moved, {"x": x}), expected)
    per_channel = model(np.array([1.0, 2.0], np.float32))
    assert quantize_before_layout_ops(per_channel) == 0 and per_channel.graph.node[0].op_type == "Transpose"
    exposed = model(np.array(scale))  # a tensor of the chain read outside the graph keeps its values and name
    exposed.graph.output.append(_tensor("t", onnx.TensorProto.FLOAT, None))
    assert quantize_before_layout_ops(exposed) == 0


def test_layout_ops_move_onto_the_integers_between_equal_qdq():
    """DequantizeLinear -> Transpose -> QuantizeLinear -> DequantizeLinear on one scale becomes the Transpose on the int8
    values and one DequantizeLinear, with numpy's values; on two different scales the requantization changes values and
    the pattern stays."""
    levels = np.random.default_rng(0).integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)

    def model(second_scale: float) -> onnx.ModelProto:
        return _graph([onnx.helper.make_node("DequantizeLinear", ["k", "scale", "zp"], ["d"]),
                       onnx.helper.make_node("Transpose", ["d"], ["t"], perm=[0, 1, 3, 2]),
                       onnx.helper.make_node("QuantizeLinear", ["t", "scale2", "zp"], ["q"]),
                       onnx.helper.make_node("DequantizeLinear", ["q", "scale2", "zp"], ["out"])],
                      [_tensor("k", onnx.TensorProto.INT8, levels.shape)], [_tensor("out", onnx.TensorProto.FLOAT, None)],
                      {"scale": np.array(0.07, np.float32), "scale2": np.array(second_scale, np.float32), "zp": np.array(-2, np.int8)})

    same = model(0.07)
    assert layout_ops_on_integers(same) == 1
    assert [node.op_type for node in same.graph.node] == ["Transpose", "DequantizeLinear"]
    expected = (levels.transpose(0, 1, 3, 2).astype(np.float32) + 2) * np.float32(0.07)
    assert np.array_equal(_session_run(same, {"k": levels}), expected)
    assert layout_ops_on_integers(model(0.09)) == 0


@pytest.mark.parametrize("unsigned", [False, True], ids=["int8 weights", "uint8 weights, per-column zero points"])
def test_split_integer_gemm_computes_each_part_over_its_columns(unsigned):
    """MatMulIntegerToFloat(a, B) -> Reshape -> Split becomes one GEMM per part over its block of B's columns, its per-column
    scales (zero points: the unsigned operands of CPUs without VNNI) and bias; each output equals numpy's int64 sums scaled,
    and equals the unsplit graph's bit for bit."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 4)).astype(np.uint8)
    zero_points = rng.integers(120, 136, 12) if unsigned else np.zeros(12, np.int64)
    weights = rng.integers(0, 256, (4, 12)).astype(np.uint8) if unsigned else rng.integers(-128, 128, (4, 12)).astype(np.int8)
    levels = weights.astype(np.int64) - zero_points
    b_scale, bias = rng.uniform(0.01, 0.1, 12).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    constants = {"w": weights, "a_scale": np.array(0.02, np.float32), "b_scale": b_scale, "a_zp": np.array(128, np.uint8), "bias": bias,
                 "shape": np.array([7, 3, 2, 2]), "sizes": np.array([1, 1, 1])}
    if unsigned:
        constants["b_zp"] = zero_points.astype(np.uint8)
    model = _graph([onnx.helper.make_node("MatMulIntegerToFloat", ["a", "w", "a_scale", "b_scale", "a_zp", "b_zp" if unsigned else "", "bias"], ["y"],
                                          domain="com.microsoft"),
                    onnx.helper.make_node("Reshape", ["y", "shape"], ["r"]),
                    onnx.helper.make_node("Split", ["r", "sizes"], ["p0", "p1", "p2"], axis=1)],
                   [_tensor("a", onnx.TensorProto.UINT8, a.shape)], [_tensor(f"p{i}", onnx.TensorProto.FLOAT, None) for i in range(3)], constants)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    whole = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"a": a})
    assert split_integer_gemms(model) == 1
    assert [node.op_type for node in model.graph.node] == ["MatMulIntegerToFloat", "Reshape"] * 3
    parts = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"a": a})
    sums = (a.astype(np.int64) - 128) @ levels
    expected = (sums * (np.float32(0.02) * b_scale) + bias).reshape(7, 3, 2, 2)
    for index, (part, unsplit) in enumerate(zip(parts, whole)):
        assert np.array_equal(part, unsplit)
        assert np.allclose(part, expected[:, index:index + 1], rtol=1e-6, atol=1e-6)


def test_gather_of_gemm_output_rows_moves_onto_the_gemm_input():
    """A window reverse after proj, Gather(Reshape(MatMulIntegerToFloat(a, B)), rows, axis=1), becomes the GEMM of a's
    gathered rows: numpy's row-permuted result, bit for bit the unmoved graph's. A gather along the channels is left alone."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2 * 6, 4)).astype(np.uint8)  # 2 images x 6 tokens, 4 input channels
    weights = rng.integers(-128, 128, (4, 5)).astype(np.int8)
    order = rng.permutation(6)

    def model(axis: int, indices: np.ndarray) -> onnx.ModelProto:
        return _graph([onnx.helper.make_node("MatMulIntegerToFloat", ["a", "w", "a_scale", "b_scale", "a_zp"], ["y"], domain="com.microsoft"),
                       onnx.helper.make_node("Reshape", ["y", "shape"], ["r"]),
                       onnx.helper.make_node("Gather", ["r", "order"], ["out"], axis=axis)],
                      [_tensor("a", onnx.TensorProto.UINT8, a.shape)], [_tensor("out", onnx.TensorProto.FLOAT, None)],
                      {"w": weights, "a_scale": np.array(0.02, np.float32), "b_scale": np.array(0.03, np.float32), "a_zp": np.array(128, np.uint8),
                       "shape": np.array([-1, 6, 5]), "order": indices})

    moved = model(1, order)
    before = _session_run(moved, {"a": a})
    assert gather_rows_before_integer_gemms(moved) == 1
    assert [node.op_type for node in moved.graph.node] == ["Reshape", "Gather", "MatMulIntegerToFloat"]
    after = _session_run(moved, {"a": a})
    expected = ((a.astype(np.int64) - 128) @ weights.astype(np.int64)).reshape(2, 6, 5)[:, order] * (np.float32(0.02) * np.float32(0.03))
    assert np.array_equal(after, before) and np.allclose(after, expected, rtol=1e-6)
    assert gather_rows_before_integer_gemms(model(2, np.array([4, 0, 1]))) == 0
