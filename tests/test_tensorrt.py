"""The TensorRT path: the TensorRT-target export, its lint, the engine-inspector summary, the
backend's pure parts (flags, profiles, compatibility), the CLI without TensorRT, and — marked
``tensorrt``, run only where TensorRT and a GPU are present — real engines."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import swin_trt
from swin_trt.distributed import DistContext
from swin_trt.errors import SwinTrtError
from swin_trt.io import sidecar_path
from swin_trt.lazy import lazy_import
from swin_trt.onnx.graph import unquantized_matmuls
from swin_trt.onnx.tensorrt import hoist_transposes_above_qdq, lint
from swin_trt.parity.localize import perturb_scale
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.quantization.model import named_quantizers, set_scale_dtype
from swin_trt.quantization.quantizer import TensorQuantizer
from swin_trt.runtimes import onnxruntime as ort_runtime
from swin_trt.runtimes import open_engine, source_record
from swin_trt.runtimes import tensorrt as trt_runtime
from swin_trt.runtimes.engine_layers import parse_engine_information, summarize, tensor_precision
from swin_trt.settings import CalibrationRequest

REPO = Path(__file__).resolve().parent.parent
F16 = TensorProto.FLOAT16


# ---------------------------------------------------------------------------------------------
# the TensorRT-target export of swin_micro


@pytest.fixture(scope="module")
def trt_export(micro_trt):
    """swin_micro calibrated with --int8-mode trt and exported with --target tensorrt."""
    return micro_trt.checkpoint, micro_trt.trt_graph


def _val_images(digits_dir, size):
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.transforms import eval_transform
    from swin_trt.models.zoo import MICRO

    dataset = build_dataset(digits_dir, "val", eval_transform(MICRO.data))
    return torch.stack([dataset[i][0] for i in range(size)])


def test_tensorrt_export_is_fp16_with_direct_qdq(trt_export):
    checkpoint, details = trt_export
    assert (details["target"], details["precision"], details["weights"], details["scale_dtype"], details["opset"]) == ("tensorrt", "fp16", "int8", "float16", 19)
    graph = onnx.load(details["onnx"])
    assert lint(graph) == []
    io_types = {v.elem_type for v in (graph.graph.input[0].type.tensor_type, graph.graph.output[0].type.tensor_type)}
    assert io_types == {TensorProto.FLOAT}  # float32 images in, float32 logits out
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Cast") == 2 and "LayerNormalization" in ops  # the two I/O casts only; LayerNorm stays one native op
    assert {init.data_type for init in graph.graph.initializer if init.data_type in (TensorProto.FLOAT, F16)} == {F16}
    model = swin_trt.load_model(checkpoint=checkpoint)
    enabled = sum(q.enabled for _, q in named_quantizers(model))
    assert details["dq_nodes"] == enabled and details["q_nodes"] == enabled - 26  # INT8 weights need no QuantizeLinear
    producers = {o: n for n in graph.graph.node for o in n.output}
    consumers = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {init.name for init in graph.graph.initializer}
    for node in (n for n in graph.graph.node if n.op_type == "DequantizeLinear"):
        kinds = {c.op_type for c in consumers[node.output[0]]}
        assert kinds <= ({"Transpose"} if node.input[0] in weights else {"MatMul", "Add"}), (node.name, kinds)
    softmax_out = [n for n in graph.graph.node if n.op_type == "Softmax"]
    assert softmax_out and all({c.op_type for c in consumers[s.output[0]]} == {"QuantizeLinear"} for s in softmax_out)
    attention = [n for n in graph.graph.node if n.op_type == "MatMul" and all(producers[i].op_type == "DequantizeLinear" and producers[i].input[0] not in weights
                                                                            for i in n.input)]
    assert len(attention) == 12  # q @ k^T and attn @ v in each of the 6 blocks, both inputs straight from a DQ


def test_tensorrt_graph_scales_are_the_references_fp16_scales(trt_export):
    """The graph's scales are exactly what the reference computes with when it models FP16 scales."""
    checkpoint, details = trt_export
    model = swin_trt.load_model(checkpoint=checkpoint)
    set_scale_dtype(model, torch.float16)
    expected = sorted(float(q.scale()) for _, q in named_quantizers(model) if q.enabled and not q.per_channel)
    graph = onnx.load(details["onnx"])
    constants = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    scales = [constants[n.input[1]] for n in graph.graph.node if n.op_type == "DequantizeLinear"]
    assert all(s.dtype == np.float16 for s in scales)
    assert sorted(float(s) for s in scales if s.size == 1) == expected


def _assert_matches_fake_quant(engine, checkpoint, fp_checkpoint, digits_dir) -> None:
    """``engine`` (numpy in, numpy out) at batch 1, 7 and 32 against fake-quant with FP16 scales.

    FP16 activations shift values by up to 2^-11 before each QuantizeLinear, which moves some of
    them across a rounding boundary (one quantization step), so the documented tolerance is
    relative to quantization itself: the mean |logit difference| stays within 1.5x the mean
    difference between fake-quant and FP32 (measured 0.9x on swin_micro with onnxruntime), and
    argmax agrees on >= 95 % of images (measured 99.4 % over the 360 val images)."""
    fake_quant = swin_trt.load_model(checkpoint=checkpoint)
    set_scale_dtype(fake_quant, torch.float16)
    fp32 = swin_trt.load_model(checkpoint=fp_checkpoint)
    images = _val_images(digits_dir, 32)
    with torch.no_grad():
        reference, full = fake_quant(images).numpy(), fp32(images).numpy()
    tolerance = 1.5 * np.abs(reference - full).mean()
    rows, agree = 0, 0
    for size in (1, 7, 32):
        logits = engine(images[:size].numpy())
        assert logits.shape == (size, 10) and logits.dtype == np.float32
        assert np.abs(logits - reference[:size]).mean() <= tolerance
        rows, agree = rows + size, agree + int((logits.argmax(1) == reference[:size].argmax(1)).sum())
    assert agree >= 0.95 * rows


def test_tensorrt_graph_matches_fake_quant_at_batch_1_7_32(trt_export, trained_micro, digits_dir, tmp_path):
    """onnxruntime (CPU, exact mode: Q/DQ explicit) runs the FP16 graph."""
    checkpoint, details = trt_export
    ort_runtime.build(details["onnx"], tmp_path / "engine.onnx", "exact")
    _assert_matches_fake_quant(ort_runtime.Engine(tmp_path / "engine.onnx"), checkpoint, trained_micro.checkpoint, digits_dir)


def test_fp16_baseline_is_the_same_graph_without_qdq(trained_micro, tmp_path):
    details = export_checkpoint(trained_micro.checkpoint, tmp_path / "fp16.onnx", target="tensorrt")
    graph = onnx.load(details["onnx"])
    assert details["precision"] == "fp16" and details["q_nodes"] == details["dq_nodes"] == 0 and details["scale_dtype"] == "float32"
    assert lint(graph) == []


def test_tensorrt_target_refuses_gemm_output_recipes(run_cli, trained_micro, digits_dir, tmp_path):
    calibrated = calibrate_checkpoint(None, None, trained_micro.checkpoint, digits_dir, False, CalibrationRequest(int8_mode="1", num_calib_batch=2),
                                      tmp_path, DistContext(), workers=0)
    code, _, err = run_cli("export", "--resume", calibrated.checkpoint, "--target", "tensorrt", "--output", tmp_path / "x.onnx")
    last = err.strip().splitlines()[-1]  # lines before it are the calibration's own log (stderr is not a terminal)
    assert code == 2 and last.startswith("swin-trt export: error: --target tensorrt needs --int8-mode trt") and "Traceback" not in err
    assert not list(tmp_path.glob("x.*"))


def test_fp16_scale_rounding_in_the_quantizer():
    quantizer = TensorQuantizer(3, axis=0)
    quantizer.enabled = True
    quantizer.set_amax(torch.tensor([1.0, 1e-6, 0.3]))
    exact = quantizer.scale()
    quantizer.scale_dtype = torch.float16
    rounded = quantizer.scale()
    assert torch.equal(rounded, rounded.half().float())  # representable in float16
    assert rounded[1] == torch.finfo(torch.float16).tiny  # no subnormal scale: kernels may flush it to zero
    assert torch.allclose(rounded[[0, 2]], exact[[0, 2]], rtol=2 ** -11)
    x = torch.linspace(-1, 1, 30).reshape(3, 10)
    expected = torch.clamp(torch.round(x / rounded[:, None]), -128, 127) * rounded[:, None]
    assert torch.equal(quantizer(x), expected)


# ---------------------------------------------------------------------------------------------
# lint rules, one small graph breaking each


def _model(nodes, inputs, outputs, initializers, opset=19):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _scale(name, value, dtype=np.float16):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _weight(axis=1, rows=8, cols=4):
    """An int8 MatMul weight [K=rows, N=cols] and its per-channel DequantizeLinear along ``axis``."""
    channels = cols if axis == 1 else rows
    inits = [numpy_helper.from_array(np.ones((rows, cols), np.int8), "w"), _scale("w_scale", np.full(channels, 0.01)),
             numpy_helper.from_array(np.zeros(channels, np.int8), "w_zero")]
    return [helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_dq"], name="dq_w", axis=axis)], inits


def _qdq(source, name, zero=0, zero_dtype=np.int8):
    inits = [_scale(f"{name}_scale", 0.05), numpy_helper.from_array(np.asarray(zero, zero_dtype), f"{name}_zero")]
    nodes = [helper.make_node("QuantizeLinear", [source, f"{name}_scale", f"{name}_zero"], [f"{name}_q"], name=f"q_{name}"),
             helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"], [f"{name}_dq"], name=f"dq_{name}")]
    return nodes, inits


def _linear(quantize_output=False, detour=False, weight_axis=1, zero=0, zero_dtype=np.int8):
    """x -> Q/DQ -> MatMul(W) [-> Q/DQ] -> Add(bias): a quantized linear layer, FP16."""
    act, act_inits = _qdq("x", "x", zero, zero_dtype)
    weight, weight_inits = _weight(weight_axis)
    nodes = act + weight
    source = "x_dq"
    if detour:
        nodes.append(helper.make_node("Reshape", ["x_dq", "shape"], ["x_reshaped"], name="reshape"))
        source = "x_reshaped"
    nodes.append(helper.make_node("MatMul", [source, "w_dq"], ["mm"], name="matmul"))
    gemm_out = "mm"
    if quantize_output:
        out, out_inits = _qdq("mm", "mm")
        nodes, act_inits, gemm_out = nodes + out, act_inits + out_inits, "mm_dq"
    nodes.append(helper.make_node("Add", [gemm_out, "bias"], ["y"], name="bias_add"))
    inits = act_inits + weight_inits + [_scale("bias", np.zeros(4)), numpy_helper.from_array(np.array([2, 16, 8], np.int64), "shape")]
    return _model(nodes, [("x", F16, [2, 16, 8])], [("y", F16, [2, 16, 4])], inits)


def _layernorm_of_dequantized():
    act, inits = _qdq("x", "x")
    nodes = act + [helper.make_node("LayerNormalization", ["x_dq", "gamma", "beta"], ["y"], name="norm", axis=-1)]
    return _model(nodes, [("x", F16, [2, 16, 8])], [("y", F16, [2, 16, 8])], inits + [_scale("gamma", np.ones(8)), _scale("beta", np.zeros(8))])


def _fp32_island():
    nodes = [helper.make_node("Cast", ["x"], ["x32"], name="up", to=TensorProto.FLOAT), helper.make_node("Relu", ["x32"], ["r"], name="relu32"),
             helper.make_node("Cast", ["r"], ["r16"], name="down", to=F16), helper.make_node("Relu", ["r16"], ["y"], name="relu16")]
    return _model(nodes, [("x", F16, [2, 8])], [("y", F16, [2, 8])], [])


def _fp32_graph():
    return _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [("x", TensorProto.FLOAT, [2, 8])], [("y", TensorProto.FLOAT, [2, 8])], [])


def _per_channel_activation():
    inits = [_scale("s", np.full(8, 0.05)), numpy_helper.from_array(np.zeros(8, np.int8), "z")]
    weight, weight_inits = _weight()
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_x", axis=2),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq_x", axis=2), *weight,
             helper.make_node("MatMul", ["xdq", "w_dq"], ["y"], name="matmul")]
    return _model(nodes, [("x", F16, [2, 16, 8])], [("y", F16, [2, 16, 4])], inits + weight_inits)


def _attention(quantize_k=True, head=16, tokens=16):
    """q @ k^T -> Softmax -> Q/DQ -> @ v, with q, k, v graph inputs [batch, heads, tokens, head];
    k is transposed before its Q/DQ, as swin-trt's TensorRT export writes it."""
    shape = [2, 2, tokens, head]
    nodes = [helper.make_node("Transpose", ["k"], ["k_t"], name="k_transpose", perm=[0, 1, 3, 2])]
    inits = []
    for source, name in (("q", "q"), ("k_t", "k"), ("v", "v")) if quantize_k else (("q", "q"), ("v", "v")):
        more_nodes, more_inits = _qdq(source, name)
        nodes, inits = nodes + more_nodes, inits + more_inits
    softmax_qdq, softmax_inits = _qdq("p", "p")
    nodes += [helper.make_node("MatMul", ["q_dq", "k_dq" if quantize_k else "k_t"], ["s"], name="qk"),
              helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1), *softmax_qdq,
              helper.make_node("MatMul", ["p_dq", "v_dq"], ["y"], name="av")]
    return _model(nodes, [(n, F16, shape) for n in ("q", "k", "v")], [("y", F16, shape)], inits + softmax_inits)


BROKEN = {
    "dq-not-direct": lambda: _linear(detour=True),
    "qdq-on-gemm-output": lambda: _linear(quantize_output=True),
    "quantized-layernorm-input": _layernorm_of_dequantized,
    "fp32-island": _fp32_island,
    "fp32-graph": _fp32_graph,
    "per-channel-axis": lambda: _linear(weight_axis=0),
    "zero-point": lambda: _linear(zero=3),
    "attention-not-quantized": lambda: _attention(quantize_k=False),
    "fused-mha-limits": lambda: _attention(head=48),
}


def test_clean_graphs_pass_the_lint():
    assert lint(_linear()) == [] and lint(_attention()) == []


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_catches_its_graph(rule):
    findings = lint(BROKEN[rule]())
    assert {f.rule for f in findings} == {rule}
    assert all(f.nodes and f.line().startswith(f"{f.severity} [{rule}] ") for f in findings)


def test_lint_names_the_nodes_and_also_catches_the_variants():
    assert [f.nodes for f in lint(_linear(quantize_output=True))] == [("matmul", "q_mm")]
    assert [f.nodes for f in lint(_linear(detour=True))] == [("dq_x", "reshape")]
    assert {f.rule for f in lint(_linear(zero=0, zero_dtype=np.uint8))} == {"zero-point"}
    assert {f.rule for f in lint(_per_channel_activation())} == {"per-channel-axis"}
    assert {f.rule for f in lint(_attention(tokens=576))} == {"fused-mha-limits"}


def test_inspect_target_tensorrt_prints_findings_and_fails(run_cli, tmp_path):
    onnx.save(_linear(quantize_output=True), tmp_path / "bad.onnx")
    code, out, err = run_cli("inspect", tmp_path / "bad.onnx", "--target", "tensorrt", "--json", tmp_path / "lint.json")
    assert code == 2 and "1 TensorRT rule violation(s)" in err
    assert "error [qdq-on-gemm-output] matmul, q_mm: MatMul output quantized before its bias/residual add" in out.splitlines()
    assert json.loads((tmp_path / "lint.json").read_text())["tensorrt_lint"][0]["nodes"] == ["matmul", "q_mm"]
    onnx.save(_fp32_graph(), tmp_path / "fp32.onnx")  # a warning alone does not fail
    code, out, _ = run_cli("inspect", tmp_path / "fp32.onnx", "--target", "tensorrt")
    assert code == 0 and "warning [fp32-graph]" in out


def test_transpose_hoisting_is_exact(tmp_path):
    """Q -> DQ -> Transpose -> MatMul becomes Transpose -> Q -> DQ -> MatMul with the same outputs."""
    act, inits = _qdq("k", "k")
    nodes = act + [helper.make_node("Transpose", ["k_dq"], ["k_t"], name="t", perm=[0, 2, 1]), helper.make_node("MatMul", ["x", "k_t"], ["y"], name="mm")]
    model = _model(nodes, [("x", TensorProto.FLOAT, [2, 4, 8]), ("k", TensorProto.FLOAT, [2, 4, 8])], [("y", TensorProto.FLOAT, [2, 4, 4])],
                   [_scale(i.name, numpy_helper.to_array(i), np.float32) if i.name.endswith("scale") else i for i in inits])
    onnx.save(model, tmp_path / "before.onnx")
    assert {f.rule for f in lint(model)} >= {"dq-not-direct"}
    assert hoist_transposes_above_qdq(model) == {"dq_k": [0, 2, 1]}  # keyed by the DequantizeLinear (export names it after its quantizer)
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(model, strict_mode=True), full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "QuantizeLinear", "DequantizeLinear", "MatMul"]
    onnx.save(model, tmp_path / "after.onnx")
    feeds = {"x": np.random.RandomState(0).randn(2, 4, 8).astype(np.float32), "k": np.random.RandomState(1).randn(2, 4, 8).astype(np.float32)}
    ort = lazy_import("onnxruntime")
    before, after = (ort.InferenceSession(str(tmp_path / f"{n}.onnx")).run(None, feeds)[0] for n in ("before", "after"))
    assert np.array_equal(before, after)


# ---------------------------------------------------------------------------------------------
# engine inspector summary, on hand-written inspector JSON in the format TensorRT's docs show
# (fixtures, not real engines: no engine is built on a machine without TensorRT)


def _roles_graph():
    """A tiny graph whose node names the fixtures' layer metadata refer to: two linear-layer
    MatMuls (mm_qkv, mm_fc2), two attention MatMuls (mm_qk, mm_av), a Q/DQ pair (q_fc2, dq_fc2)."""
    weight, inits = _weight(rows=8, cols=8)
    act, act_inits = _qdq("x", "x")
    out, out_inits = _qdq("h", "fc2")
    nodes = act + weight + [
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["t"], name="mm_qkv"),
        helper.make_node("Transpose", ["t"], ["t_t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["t", "t_t"], ["s"], name="mm_qk"),
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "t"], ["a"], name="mm_av"),
        helper.make_node("MatMul", ["a", "w_dq"], ["h"], name="mm_fc2"), *out]
    return _model(nodes, [("x", F16, [2, 4, 8])], [("fc2_dq", F16, [2, 4, 8])], inits + act_inits + out_inits)


def _fixture_layers(trt11: bool):
    def tensor(name, dims, kind):
        if trt11:
            return {"Name": name, "Dimensions": dims, "Format": "Row major linear", "Datatype": kind}
        words = {"Int8": "Row major Int8 format", "Half": "Row major linear FP16 format (kLINEAR)", "Float": "Row major linear FP32 format (kLINEAR)"}
        return {"Name": name, "Dimensions": dims, "Format/Datatype": words[kind]}

    layers = [
        {"Name": "patch_embed conv", "LayerType": "CaskConvolution", "Inputs": [tensor("images", [32, 3, 224, 224], "Float")],
         "Outputs": [tensor("conv", [32, 96, 56, 56], "Half")], "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16", "Metadata": "[ONNX Layer: node_conv2d]"},
        {"Name": "mm_qkv_myl0_1", "LayerType": "gemm", "Inputs": [tensor("x_q", [25088, 96], "Int8"), tensor("w", [96, 288], "Int8"),
                                                                     tensor("alpha", [1], "Float")],
         "Outputs": [tensor("t", [25088, 288], "Half")], "TacticName": "sm80_xmma_gemm_i8i8_i8i32_f32_tn_n_tilesize128x128x64",
         "Metadata": "[ONNX Layer: q_x]\x1e[ONNX Layer: dq_x]\x1e[ONNX Layer: mm_qkv]"},
        {"Name": "fmha_myl0_2", "LayerType": "kgen", "Inputs": [tensor("q", [512, 3, 49, 32], "Int8"), tensor("k", [512, 3, 49, 32], "Int8")],
         "Outputs": [tensor("a", [512, 3, 49, 32], "Int8")], "TacticName": "_gemm_mha_v2_i8",
         "Metadata": "[ONNX Layer: mm_qk]\x1e[ONNX Layer: softmax]\x1e[ONNX Layer: mm_av]"},
        {"Name": "mm_fc2_myl0_3", "LayerType": "gemm", "Inputs": [tensor("a", [25088, 384], "Half"), tensor("w2", [384, 96], "Half")],
         "Outputs": [tensor("h", [25088, 96], "Half")], "TacticName": "sm80_xmma_gemm_f16f16_f16f32_f32_tn_n", "Metadata": "[ONNX Layer: mm_fc2]"},
        {"Name": "q_fc2_myl0_4", "LayerType": "kgen", "Inputs": [tensor("h", [25088, 96], "Half")], "Outputs": [tensor("h_q", [25088, 96], "Int8")],
         "TacticName": "__myl_Quantize", "Metadata": "[ONNX Layer: q_fc2]"},
    ]
    return {"Layers": layers, ("I/O Tensors" if trt11 else "Bindings"): []}


@pytest.mark.parametrize("trt11", [False, True], ids=["trt10-format", "trt11-format"])
def test_engine_summary_counts_int8_and_names_fallbacks(trt11):
    layers = parse_engine_information(_fixture_layers(trt11))
    assert [layer.gemm_precision for layer in layers] == ["FP32", "INT8", "INT8", "FP16", "FP16"]
    summary = summarize(layers, _roles_graph())
    assert dict(summary.counts["gemm"]) == {"INT8": 1, "FP16": 1} and dict(summary.counts["attention"]) == {"INT8": 2}
    assert [(f.role, f.onnx_node, f.precision) for f in summary.fallbacks] == [("gemm", "mm_fc2", "FP16")]
    assert summary.standalone_qdq == ("q_fc2_myl0_4",) and summary.unmatched == ()
    flat = summary.as_dict()
    assert (flat["gemm_int8"], flat["gemm_fp16"], flat["attention_int8"], flat["attention_fp32"]) == (1, 1, 2, 0)


def test_engine_summary_without_the_graph_uses_kernel_names():
    summary = summarize(parse_engine_information(_fixture_layers(False)))
    assert dict(summary.counts["gemm"]) == {"INT8": 1, "FP16": 1} and dict(summary.counts["attention"]) == {"INT8": 1}  # one fused MHA layer


def test_engine_information_needs_detailed_verbosity():
    with pytest.raises(SwinTrtError, match="ProfilingVerbosity.DETAILED"):
        parse_engine_information({"Layers": ["a", "b"]})
    with pytest.raises(SwinTrtError, match="not TensorRT engine-inspector JSON"):
        parse_engine_information({"engine": "x"})
    assert tensor_precision({"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}) == "INT8"
    assert tensor_precision({"Format": "Row major linear", "Datatype": "Half"}) == "FP16"


def test_inspect_layer_info_json(run_cli, tmp_path):
    (tmp_path / "layers.json").write_text(json.dumps(_fixture_layers(True)))
    onnx.save(_roles_graph(), tmp_path / "g.onnx")
    code, out, err = run_cli("inspect", tmp_path / "layers.json", "--graph", tmp_path / "g.onnx", "--layers", "--json", tmp_path / "s.json")
    assert code == 0, err
    assert "not INT8: gemm mm_fc2 runs FP16 in layer mm_fc2_myl0_3" in out and "q_fc2_myl0_4" in out
    result = json.loads((tmp_path / "s.json").read_text())
    assert (result["layers"], result["gemm_int8"], result["attention_int8"], result["fallbacks"]) == (5, 1, 2, ["gemm mm_fc2 in mm_fc2_myl0_3: FP16"])


# ---------------------------------------------------------------------------------------------
# the backend's pure parts and the CLI without TensorRT


def _fake_trt(version, *flags):
    """A stand-in for the ``tensorrt`` module with only what :func:`network_flags` reads."""
    return SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=SimpleNamespace(**{f: object() for f in flags}))


def test_network_flags_are_looked_up_not_assumed():
    assert trt_runtime.network_flags(_fake_trt("11.1.0", "STRONGLY_TYPED", "PREFER_JIT_PYTHON_PLUGINS")) == {"strongly_typed": True, "explicit_batch": False}
    assert trt_runtime.network_flags(_fake_trt("10.13.0", "EXPLICIT_BATCH", "STRONGLY_TYPED")) == {"strongly_typed": True, "explicit_batch": False}
    assert trt_runtime.network_flags(_fake_trt("9.3.0", "EXPLICIT_BATCH", "STRONGLY_TYPED")) == {"strongly_typed": True, "explicit_batch": True}
    assert trt_runtime.network_flags(_fake_trt("12.0.0")) == {"strongly_typed": False, "explicit_batch": False}  # flag retired: always strong


def test_profile_shapes():
    assert trt_runtime.profile_shapes([None, 3, 224, 224]) == ((1, 3, 224, 224), (32, 3, 224, 224), (128, 3, 224, 224))
    assert trt_runtime.profile_shapes([None, 3, 32, 32], max_batch=16) == ((1, 3, 32, 32), (16, 3, 32, 32), (16, 3, 32, 32))
    assert trt_runtime.profile_shapes([None, 3, 32, 32], 2, 4, 8)[1] == (4, 3, 32, 32)
    assert trt_runtime.profile_shapes([8, 3, 32, 32]) == ((8, 3, 32, 32),) * 3
    for dims, batches, message in (([None, 3, 32, 32], (8, 4, 16), "min-batch <= --opt-batch"), ([None, 3, None, 32], (), "only the batch axis"),
                                   ([8, 3, 32, 32], (1, None, None), "fixed at 8")):
        with pytest.raises(SwinTrtError, match=message):
            trt_runtime.profile_shapes(dims, *batches)


def test_engine_compatibility_checks():
    details = {"tensorrt_version": "10.13.0", "gpu": {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}}
    assert trt_runtime.check_compatible(details, "10.13.0", "NVIDIA A100-SXM4-80GB", "8.0", "e.plan") is None
    assert "built on NVIDIA A100" in trt_runtime.check_compatible(details, "10.13.0", "NVIDIA A30", "8.0", "e.plan")
    with pytest.raises(SwinTrtError, match=r"built by TensorRT 10.13.0, this is TensorRT 11.1.0: rebuild"):
        trt_runtime.check_compatible(details, "11.1.0", "NVIDIA A100-SXM4-80GB", "8.0", "e.plan")
    with pytest.raises(SwinTrtError, match=r"compute capability 8.0\), this GPU is NVIDIA H100 \(compute capability 9.0\)"):
        trt_runtime.check_compatible(details, "10.13.0", "NVIDIA H100", "9.0", "e.plan")
    with pytest.raises(SwinTrtError, match="too old"):
        trt_runtime.check_version("8.6.1")
    with pytest.raises(SwinTrtError, match=r"batch 129 is outside e.plan's profile \(1 to 128\)"):
        trt_runtime.check_batch(129, 1, 128, "e.plan")
    assert trt_runtime.torch_dtype("DataType.HALF") == torch.float16 and trt_runtime.torch_dtype("DataType.FLOAT") == torch.float32


@pytest.fixture
def no_tensorrt(monkeypatch):
    """TensorRT absent, wherever the tests run."""
    monkeypatch.setattr(trt_runtime, "tensorrt", lazy_import("swin_trt_tests_no_such_module"))


def test_cli_without_tensorrt_says_how_to_get_it(run_cli, no_tensorrt, tmp_path):
    onnx.save(_fp32_graph(), tmp_path / "g.onnx")
    code, _, err = run_cli("build", "--backend", "tensorrt", "--onnx", tmp_path / "g.onnx", "--output", tmp_path / "g.plan")
    assert code == 2 and err.strip() == f"swin-trt build: error: {trt_runtime.MISSING}" and not list(tmp_path.glob("*.plan*"))
    (tmp_path / "e.plan").write_bytes(b"plan")
    (tmp_path / "e.json").write_text(json.dumps({"backend": "tensorrt"}))
    code, _, err = run_cli("inspect", tmp_path / "e.plan")
    assert code == 2 and "TensorRT is not installed: install swin-trt[tensorrt] or use the NGC container" in err
    with pytest.raises(SwinTrtError, match="TensorRT is not installed"):
        open_engine(tmp_path / "e.plan")  # the registry dispatches on the sidecar's backend


class _Recorder:
    """Stand-ins for Polygraphy's TensorRT loaders that record what the builder passes them."""

    def __init__(self, fail: bool = False):
        self.calls: dict[str, object] = {}
        self.fail = fail

    def NetworkFromOnnxPath(self, path, strongly_typed):  # noqa: N802 (Polygraphy's name)
        self.calls["network"] = (path, strongly_typed)
        return "network"

    def Profile(self):  # noqa: N802
        recorder = self

        class Profile(dict):
            def add(self, name, min, opt, max):  # noqa: A002 (Polygraphy's keywords)
                recorder.calls["profile"] = (name, min, opt, max)
                return self

        return Profile()

    def ModifyNetworkOutputs(self, network, outputs):  # noqa: N802
        self.calls["modify_outputs"] = outputs
        return network

    def CreateConfig(self, **options):  # noqa: N802
        self.calls["config"] = options
        return "config"

    def EngineBytesFromNetwork(self, network, config, save_timing_cache):  # noqa: N802
        self.calls["build"] = (network, config, save_timing_cache)
        if self.fail:
            raise lazy_import("polygraphy.exception").PolygraphyException("[E] parser: node_x: unsupported\nInvalid Engine")
        return lambda: b"serialized engine"


@pytest.fixture
def stand_in_tensorrt(monkeypatch):
    """The builder's plumbing with stand-ins for TensorRT, Polygraphy's loaders and the GPU:
    checks what is passed and written, not that TensorRT builds anything (the ``tensorrt``-marked
    tests do that where TensorRT exists)."""
    fake = SimpleNamespace(__version__="11.1.0", NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0),
                           ProfilingVerbosity=SimpleNamespace(DETAILED="DETAILED"), MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
                           Logger=type("Logger", (), {"ERROR": 3, "__init__": lambda self, severity: None}),
                           Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda plan: None))  # a plan it cannot read
    recorder = _Recorder()
    monkeypatch.setattr(trt_runtime, "tensorrt", fake)
    monkeypatch.setattr(trt_runtime, "polygraphy_trt", recorder)
    monkeypatch.setattr(trt_runtime, "require_cuda", lambda: ("Stand-in GPU", "9.0"))
    return recorder


def test_build_plumbing_with_stand_ins(stand_in_tensorrt, tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(_model([helper.make_node("Relu", ["images"], ["logits"])], [("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                     [("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])], []), source)
    sidecar_path(source).write_text(json.dumps({"model": "swin_micro", "int8_mode": "trt", "precision": "fp16"}))
    details = trt_runtime.build(source, tmp_path / "out" / "m.plan", max_batch=16, timing_cache=tmp_path / "t.cache", workspace_mib=512)
    calls = stand_in_tensorrt.calls
    assert calls["network"] == (str(source), True)
    assert calls["profile"] == ("images", (1, 3, 8, 8), (16, 3, 8, 8), (16, 3, 8, 8))
    assert calls["config"]["profiling_verbosity"] == "DETAILED" and calls["config"]["load_timing_cache"] == str(tmp_path / "t.cache")
    assert calls["config"]["memory_pool_limits"] == {"WORKSPACE": 512 << 20} and calls["build"][2] == str(tmp_path / "t.cache")
    assert (tmp_path / "out" / "m.plan").read_bytes() == b"serialized engine"
    written = json.loads(sidecar_path(tmp_path / "out" / "m.plan").read_text())
    assert written == {**details, "sha256": hashlib.sha256(b"serialized engine").hexdigest(), "bytes": len(b"serialized engine")}
    assert (details["backend"], details["model"], details["int8_mode"], details["precision"], details["tensorrt_version"], details["gpu"]) == (
        "tensorrt", "swin_micro", "trt", "fp16", "11.1.0", {"name": "Stand-in GPU", "compute_capability": "9.0"})
    assert details["build"]["strongly_typed"] and not details["build"]["explicit_batch"]
    assert {k: details[k] for k in source_record(source)} == source_record(source)  # the provenance chain's link, as every backend writes it
    assert details["source_onnx"] == str(source.resolve())


def test_debug_engine_marks_the_exposed_tensors_and_keeps_the_logits(stand_in_tensorrt, monkeypatch, tmp_path):
    """``bench --localize`` on TensorRT: which tensors the debug engine marks, the profile it is
    built with, and the runner's dict. Stand-ins for TensorRT, Polygraphy's loaders and the
    deserialized debug engine (``_StandInExecution``): nothing here runs TensorRT."""
    assert trt_runtime.outputs_to_mark(["a", "b", "a"], ["logits", "b"]) == ["a", "b", "logits"]
    source = tmp_path / "m.onnx"
    onnx.save(_model([helper.make_node("Relu", ["images"], ["a"]), helper.make_node("Neg", ["a"], ["b"]), helper.make_node("Abs", ["b"], ["logits"])],
                     [("images", TensorProto.FLOAT, ["batch", 3, 8, 8])], [("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])], []), source)

    class _StandInExecution:
        """Stands for a deserialized debug engine: returns each output as the FP16 CUDA tensor
        TensorRT would (here on the CPU), shaped like the input."""

        def __init__(self, plan, label):
            assert plan == b"serialized engine" and "debug engine" in str(label)

        def run(self, images):
            return {name: (images * k).half() for k, name in enumerate(("logits", "b", "a"), start=1)}

    monkeypatch.setattr(trt_runtime, "Execution", _StandInExecution)
    details = {"build": {"max_shape": [16, 3, 8, 8], "timing_cache": str(tmp_path / "t.cache"), "builder_optimization_level": 3, "workspace_mib": None}}
    runner = trt_runtime.intermediate_outputs(source, ["b", "a"], details)
    calls = stand_in_tensorrt.calls
    assert calls["modify_outputs"] == ["b", "a", "logits"] and calls["network"] == (str(source), True)
    assert calls["profile"] == ("images", (1, 3, 8, 8), (16, 3, 8, 8), (16, 3, 8, 8))  # from batch 1 to the engine's own maximum
    assert calls["config"]["builder_optimization_level"] == 3 and calls["config"]["load_timing_cache"] == str(tmp_path / "t.cache")
    images = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    exposed = runner(images)
    assert list(exposed) == ["b", "a"]  # the names asked for, in that order, without the logits
    assert all(v.dtype == np.float32 and v.shape == images.shape for v in exposed.values())
    assert np.array_equal(exposed["a"], (torch.from_numpy(images) * 3).half().float().numpy())


class _StandInContext:
    """Stands for ``IExecutionContext`` on CPU tensors: resolves each output's shape from the
    input shape, records the bound addresses, and on ``execute_async_v3`` writes input x (k + 1)
    into the k-th output through its address (as the engine writes device memory)."""

    def __init__(self, accept_shape=True, enqueue=True):
        self.accept_shape, self.enqueue, self.addresses, self.shape, self.stream = accept_shape, enqueue, {}, None, None

    def set_input_shape(self, name, shape):
        self.shape = shape
        return self.accept_shape

    def get_tensor_shape(self, name):
        return (self.shape[0], 10) if name == "logits" else self.shape

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        import ctypes

        self.stream = stream
        count = int(np.prod(self.shape))
        source = np.ctypeslib.as_array((ctypes.c_float * count).from_address(self.addresses["images"]))
        for k, name in enumerate(n for n in self.addresses if n != "images"):
            size = self.shape[0] * 10 if name == "logits" else count
            target = np.ctypeslib.as_array((ctypes.c_float * size).from_address(self.addresses[name]))
            target[:] = source[:size] * (k + 1)
        return self.enqueue


def test_execute_binds_inputs_and_outputs_by_address():
    """The I/O binding of the runner with a stand-in context (``_StandInContext``, not TensorRT):
    outputs are allocated per the context's shapes on the input's device, bound by address, and
    written in place; a refused shape or enqueue is one line."""
    context = _StandInContext()
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    outputs = trt_runtime.execute(context, "images", images, {"exposed": torch.float32, "logits": torch.float32}, stream=7)
    assert context.stream == 7 and context.addresses["images"] == images.data_ptr()
    assert outputs["exposed"].shape == images.shape and outputs["logits"].shape == (2, 10)
    assert torch.equal(outputs["exposed"], images) and torch.equal(outputs["logits"], 2 * images.flatten()[:20].reshape(2, 10))
    with pytest.raises(SwinTrtError, match="does not fit the engine's optimisation profile"):
        trt_runtime.execute(_StandInContext(accept_shape=False), "images", images, {"logits": torch.float32}, stream=0)
    with pytest.raises(SwinTrtError, match="could not enqueue"):
        trt_runtime.execute(_StandInContext(enqueue=False), "images", images, {"logits": torch.float32}, stream=0)


def test_failed_build_is_one_line_and_leaves_no_file(stand_in_tensorrt, run_cli, tmp_path):
    stand_in_tensorrt.fail = True
    onnx.save(_fp32_graph(), tmp_path / "g.onnx")
    code, _, err = run_cli("build", "--backend", "tensorrt", "--onnx", tmp_path / "g.onnx", "--output", tmp_path / "g.plan")
    assert code == 2 and "TensorRT 11.1.0 could not build an engine (Invalid Engine)" in err
    assert not list(tmp_path.glob("*.plan*")) and not (tmp_path / "g.json").exists()


def test_engine_load_refuses_other_versions_and_unreadable_plans(stand_in_tensorrt, tmp_path):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"plan")
    sidecar_path(plan).write_text(json.dumps({"backend": "tensorrt", "tensorrt_version": "10.13.3", "gpu": {"compute_capability": "9.0"}}))
    with pytest.raises(SwinTrtError, match=r"e.plan was built by TensorRT 10.13.3, this is TensorRT 11.1.0: rebuild it"):
        open_engine(plan)
    sidecar_path(plan).unlink()  # no sidecar: the .plan suffix still picks TensorRT, which cannot read it
    with pytest.raises(SwinTrtError, match="TensorRT 11.1.0 cannot deserialize it on Stand-in GPU"):
        open_engine(plan)


def test_build_rejects_tensorrt_options_for_onnxruntime(run_cli, tmp_path):
    onnx.save(_fp32_graph(), tmp_path / "g.onnx")
    code, _, err = run_cli("build", "--onnx", tmp_path / "g.onnx", "--max-batch", "4", "--timing-cache", tmp_path / "cache")
    assert code == 2 and "--max-batch, --timing-cache: TensorRT options, given with --backend auto" in err


# ---------------------------------------------------------------------------------------------
# the gate on the FP16 TensorRT graph, run by onnxruntime on the CPU


@pytest.fixture(scope="module")
def fp16_engine(trt_export, tmp_path_factory):
    """The FP16 TensorRT-target graph built for onnxruntime (exact mode: its Q/DQ stay explicit)."""
    return ort_runtime.build(trt_export[1]["onnx"], tmp_path_factory.mktemp("fp16_engine") / "micro_fp16.onnx", "exact")


def _bench_json(run_cli, reference, engine, digits_dir, json_path, *extra):
    code, out, err = run_cli("bench", "--reference", reference, "--engine", engine, "--data-path", digits_dir, "--workers", "0", "--json", json_path, *extra)
    return code, out, err, (json.loads(json_path.read_text()) if json_path.exists() else None)


def test_fp16_right_pairing_passes_the_default_gate(run_cli, trt_export, fp16_engine, digits_dir, tmp_path):
    """The FP16 graph's own reference: its logits redraw most of the quantization noise (r ~0.9,
    docs/parity.md), so the bounds are those measured for FP16 graphs; the graph check is exact."""
    code, out, err, result = _bench_json(run_cli, trt_export[0], fp16_engine["engine"], digits_dir, tmp_path / "bench.json")
    assert code == 0, err
    assert result["engine_precision"] == "fp16" and result["passed"] is True and result["graph_mismatches"] == []
    assert (result["max_rel_error"], result["max_rel_error_p95"], result["max_graph_mismatches"]) == (1.5, 3.0, 0)
    assert 0.3 < result["rel_error_median"] <= 1.5  # far above an FP32 graph's ~1e-5: the float16 rounding, not a fault
    assert "bounds for fp16 graphs" in out


def test_fp16_wrong_calibration_and_changed_scale_fail_on_the_graph_check(run_cli, trained_micro, trt_export, fp16_engine, digits_dir, tmp_path):
    """Another calibration of the same recipe and one scale doubled in the right graph: the logit
    error of an FP16 engine cannot tell them from the right model; the graph check names them."""
    other = calibrate_checkpoint(None, None, trained_micro.checkpoint, digits_dir, False, CalibrationRequest(int8_mode="trt", calibrator="max", num_calib_batch=2),
                                 tmp_path / "max", DistContext(), workers=0)
    code, _, err, result = _bench_json(run_cli, other.checkpoint, fp16_engine["engine"], digits_dir, tmp_path / "wrong.json", "--allow-foreign-engine",
                                       "--max-batches", "1")
    assert code == 1 and "max_graph_mismatches" in result["failed"] and len(result["graph_mismatches"]) > 10
    assert "differences between the engine's graph and a fresh export of the reference (first: " in err
    broken = "layers.1.blocks.0.mlp.fc1.input_quantizer"
    perturb_scale(trt_export[1]["onnx"], tmp_path / "broken.onnx", broken, 2.0)
    ort_runtime.build(tmp_path / "broken.onnx", tmp_path / "broken_engine.onnx", "exact")
    code, out, err, result = _bench_json(run_cli, trt_export[0], tmp_path / "broken_engine.onnx", digits_dir, tmp_path / "fault.json", "--max-batches", "1")
    assert result["provenance"] == "verified" and code == 1 and "max_graph_mismatches" in result["failed"]  # the logit bounds may or may not see it
    scale = _scale_of(trt_export[1]["onnx"], broken)
    assert result["graph_mismatches"] == [f"{broken}.perturbed_scale (scale of QuantizeLinear '{broken}.QuantizeLinear'): {2 * scale:.6g} in the graph, "
                                          f"{scale:.6g} in the reference export"]
    assert f"graph vs a fresh export of the reference: 1 differences:\n  {broken}.perturbed_scale (scale of" in out


def _scale_of(graph_path, quantizer) -> float:
    from swin_trt.parity.conformance import graph_quantizers

    return float(graph_quantizers(graph_path)[quantizer].scale)


def test_bench_sweep_beside_a_baseline_engine(run_cli, trt_export, fp16_engine, digits_dir, tmp_path):
    """``bench --sweep`` times the engine and the FP16 baseline of the same model (no Q/DQ, exported
    from the same checkpoint, so its provenance verifies too); speed is not asserted."""
    baseline = export_checkpoint(trt_export[0], tmp_path / "baseline.onnx", no_quant=True, target="tensorrt")
    assert baseline["q_nodes"] == 0
    ort_runtime.build(baseline["onnx"], tmp_path / "baseline_engine.onnx", "exact")
    code, out, err, result = _bench_json(run_cli, trt_export[0], fp16_engine["engine"], digits_dir, tmp_path / "bench.json", "--no-gate", "--max-batches", "1",
                                         "--sweep", "1", "3", "--baseline-engine", tmp_path / "baseline_engine.onnx")
    assert code == 0, err
    assert [row["batch"] for row in result["sweep"]] == [1, 3]
    assert all(row["p50_ms"] <= row["p99_ms"] and row["speedup"] == pytest.approx(row["images_per_s"] / row["baseline_images_per_s"]) for row in result["sweep"])
    assert "engine / baseline" in out
    code, _, err = run_cli("bench", "--reference", trt_export[0], "--engine", fp16_engine["engine"], "--data-path", digits_dir,
                           "--baseline-engine", tmp_path / "baseline_engine.onnx")
    assert code == 2 and "--baseline-engine is timed by --sweep" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_references_hold_the_gate(run_cli, trt_export, fp16_engine, digits_dir, tmp_path):
    """The CUDA evaluator's references (uint8 normalised on the GPU, FP32 without TF32) against the
    CPU engine: the same verdict as with CPU references. Needs a GPU, not TensorRT."""
    code, _, err, result = _bench_json(run_cli, trt_export[0], fp16_engine["engine"], digits_dir, tmp_path / "bench.json", "--device", "cuda")
    assert code == 0, err
    assert result["device"].startswith("cuda") and result["passed"] is True and result["images"] == 360


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_parity_gate_script_on_cpu(trained_micro, digits_dir, tmp_path):
    """scripts/parity-gate.sh end to end with the onnxruntime backend (what our CI can run)."""
    env = {**os.environ, "SWIN_TRT": f"{sys.executable} -m swin_trt", "PYTHONPATH": str(REPO)}
    result = subprocess.run(["bash", str(REPO / "scripts" / "parity-gate.sh"), "--checkpoint", str(trained_micro.checkpoint), "--data-path", str(digits_dir),
                             "--workdir", str(tmp_path / "gate"), "--num-calib-batch", "2", "--calib-batchsz", "16", "--max-batches", "2", "--workers", "0"],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    bench = json.loads((tmp_path / "gate" / "bench.json").read_text())
    assert bench["passed"] is True and bench["agreement"] >= 99
    assert json.loads((tmp_path / "gate" / "inspect.json").read_text())["recipe_check"] == "passed"


# ---------------------------------------------------------------------------------------------
# real engines: only where TensorRT imports and a GPU is present


@pytest.fixture(scope="module")
def trt_engine(trt_export, tmp_path_factory):
    _, details = trt_export
    out = tmp_path_factory.mktemp("engine")
    built = trt_runtime.build(details["onnx"], out / "micro.plan", min_batch=1, opt_batch=8, max_batch=32, timing_cache=out / "timing.cache")
    return built


@pytest.mark.tensorrt
def test_engine_sidecar_and_timing_cache(trt_engine, trt_export):
    _, graph = trt_export
    assert {"engine", "backend", "source_onnx", "source_onnx_sha256", "model", "int8_mode", "versions", "tensorrt_version", "gpu", "build"} <= set(trt_engine)
    assert trt_engine["backend"] == "tensorrt" and Path(trt_engine["source_onnx"]) == Path(graph["onnx"]).resolve() and trt_engine["gpu"]["compute_capability"]
    assert trt_engine["build"]["strongly_typed"] and Path(trt_engine["build"]["timing_cache"]).stat().st_size > 0
    assert json.loads(sidecar_path(trt_engine["engine"]).read_text()) == trt_engine


@pytest.mark.tensorrt
def test_engine_matches_fake_quant_at_batch_1_7_32(trt_engine, trt_export, trained_micro, digits_dir):
    checkpoint, _ = trt_export
    engine = open_engine(trt_engine["engine"])
    _assert_matches_fake_quant(engine, checkpoint, trained_micro.checkpoint, digits_dir)
    on_gpu = engine.run(_val_images(digits_dir, 7).cuda())
    assert on_gpu.is_cuda and on_gpu.shape == (7, 10)
    with pytest.raises(SwinTrtError, match="outside"):
        engine.run(torch.zeros(33, 3, 32, 32))


@pytest.mark.tensorrt
def test_engine_layers_run_int8(trt_engine, trt_export, run_cli, tmp_path):
    """Every quantized GEMM and attention matmul runs INT8; only the unquantized head may not."""
    _, graph = trt_export
    engine = open_engine(trt_engine["engine"])
    model = onnx.load(graph["onnx"])
    summary = summarize(parse_engine_information(engine.layer_information()), model)
    assert not summary.unmatched
    assert {f.onnx_node for f in summary.fallbacks} <= set(unquantized_matmuls(model)), summary.fallbacks
    code, out, err = run_cli("inspect", trt_engine["engine"], "--json", tmp_path / "s.json")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["attention_int8"] == 12


@pytest.mark.tensorrt
def test_engine_from_another_tensorrt_is_refused(trt_engine, tmp_path):
    engine = Path(trt_engine["engine"])
    copy = tmp_path / "old.plan"
    copy.write_bytes(engine.read_bytes())
    sidecar_path(copy).write_text(json.dumps({**trt_engine, "tensorrt_version": "10.0.0.6"}))
    with pytest.raises(SwinTrtError, match="was built by TensorRT 10.0.0.6"):
        open_engine(copy)


@pytest.mark.tensorrt
def test_cuda_evaluator_gates_localizes_and_sweeps_a_tensorrt_engine(run_cli, trt_engine, trt_export, digits_dir, tmp_path):
    """``bench`` with a .plan: references on the GPU, the default gate for FP16 graphs, the debug
    engine of --localize, and the sweep beside the FP16 engine of the same model."""
    checkpoint, _ = trt_export
    baseline = export_checkpoint(checkpoint, tmp_path / "fp16.onnx", no_quant=True, target="tensorrt")
    trt_runtime.build(baseline["onnx"], tmp_path / "fp16.plan", min_batch=1, opt_batch=8, max_batch=32)
    code, out, err, result = _bench_json(run_cli, checkpoint, trt_engine["engine"], digits_dir, tmp_path / "bench.json", "--localize",
                                         "--sweep", "1", "8", "32", "--baseline-engine", tmp_path / "fp16.plan")
    assert code == 0, err
    assert result["device"].startswith("cuda") and result["engine_backend"] == "tensorrt" and result["engine_precision"] == "fp16"
    assert result["passed"] is True and result["graph_mismatches"] == []
    assert len(result["localize"]) == trt_export[1]["dq_nodes"] + 1
    assert [row["batch"] for row in result["sweep"]] == [1, 8, 32] and all(row["speedup"] > 0 for row in result["sweep"])
    with pytest.raises(SwinTrtError, match="--sweep batch 64 is outside"):
        from swin_trt.pipelines.deploy import bench_engine

        bench_engine(checkpoint, trt_engine["engine"], digits_dir, workers=0, max_batches=1, sweep_batches=(1, 64))
