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
from swin_trt.onnx.fuse import export_fusions, fold_bias_into_integer_matmuls, unsigned_int8_operands
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
    assert export_fusions(again) == {"noop_pads": 2, "attention_biases": 2} and export_fusions(again) == {"noop_pads": 0, "attention_biases": 0}


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
