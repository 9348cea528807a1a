"""benchmarks/fast_drift.py's graph surgery on the trt recipe's export: it finds every quantized matmul
by what it multiplies, and its integer rewrite computes what the graph computes, up to float rounding
(a wrong operand, zero point, transpose or scale would move the logits by whole classes); and
benchmarks/integer_kernels.py's check reads the model's own integers and names a wrong sum."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from swin_trt.api import open_model
from swin_trt.cpu import read_cpu
from swin_trt.onnx import fuse
from swin_trt.quantization.modules import QuantLinear

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def fast_drift():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its siblings (machine, parity_pairings) as top-level modules
    try:
        spec = importlib.util.spec_from_file_location("benchmark_fast_drift", BENCHMARKS / "fast_drift.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_families_are_the_models_quantized_linears_and_two_attention_matmuls_per_block(fast_drift, micro_trt):
    model = open_model(checkpoint=micro_trt.checkpoint).model
    quantized_linears = sum(isinstance(m, QuantLinear) and m.weight_quantizer.enabled for m in model.modules())
    blocks = sum(model.swin_trt_config.depths)
    found = fast_drift.matmul_families(onnx.load(micro_trt.graph["onnx"]))
    assert {family: len(nodes) for family, nodes in found.items()} == {"linear": quantized_linears, "q.k": blocks, "attn.v": blocks}


def test_integer_rewrite_computes_the_graphs_values(fast_drift, micro_trt):
    graph = onnx.load(micro_trt.graph["onnx"])
    unsigned = copy.deepcopy(graph)
    fuse.unsigned_int8_operands(unsigned)
    channels, height, width = (d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim[1:])
    images = torch.randn(16, channels, height, width, generator=torch.Generator().manual_seed(0))
    exact = fast_drift.session_runner(graph, "exact")(images)
    matmuls = [n.op_type for n in graph.graph.node].count("MatMul")
    for family, nodes in fast_drift.matmul_families(unsigned).items():
        rewritten = fast_drift.integer_matmuls(unsigned, family)
        ops = [n.op_type for n in rewritten.graph.node]
        assert (ops.count("MatMulInteger"), ops.count("MatMul")) == (len(nodes), matmuls - len(nodes)), family
        integer = fast_drift.session_runner(rewritten, "exact")(images)
        # float rounding flips a few quantizer levels; a wrong operand, zero point, transpose or scale moves every logit
        assert np.median(np.abs(integer - exact)) < 1e-3 * np.abs(exact).mean(), family


@pytest.fixture(scope="module")
def integer_kernels(fast_drift):  # imports fast_drift from benchmarks/, which the fast_drift fixture puts on sys.path
    spec = importlib.util.spec_from_file_location("benchmark_integer_kernels", BENCHMARKS / "integer_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("form", ["signed", "unsigned"])
def test_kernel_check_reads_each_linear_layers_integers(integer_kernels, micro_trt, form):
    """The integers checked are the model's: each layer's levels, dequantized with its scales and zero
    points, are one quantized Linear's fake-quant weights (transposed), one layer per Linear."""
    model = open_model(checkpoint=micro_trt.checkpoint).model
    expected = {name: module.weight_quantizer(module.weight).detach().numpy().T for name, module in model.named_modules()
                if isinstance(module, QuantLinear) and module.weight_quantizer.enabled}
    graph = integer_kernels.integer_forms(onnx.load(micro_trt.graph["onnx"]))[form]
    matched = []
    for layer in integer_kernels.quantized_linears(graph):
        assert layer["weight"].dtype == (np.uint8 if form == "unsigned" else np.int8) and layer["input_zero"].dtype == np.uint8
        dequantized = (layer["weight"].astype(np.int64) - layer["weight_zero"].astype(np.int64)) * layer["weight_scale"]
        matched += [name for name, weights in expected.items() if weights.shape == dequantized.shape and np.allclose(weights, dequantized, rtol=1e-6, atol=1e-7)]
    assert sorted(matched) == sorted(expected)


def test_kernel_check_names_a_wrong_sum(integer_kernels, micro_trt, monkeypatch):
    graph = integer_kernels.integer_forms(onnx.load(micro_trt.graph["onnx"]))["unsigned"]
    result = integer_kernels.check(graph, rows=8, seed=0)
    assert result["layers"] == 26
    if read_cpu().int8_dot_product:  # measured: VNNI's int32 accumulation is exact (docs/cpu.md)
        assert result["inexact"] == []
    kernel = integer_kernels.matmul_integer
    monkeypatch.setattr(integer_kernels, "matmul_integer", lambda a, layer, prepack: kernel(a, layer, prepack) + (np.arange(a.shape[0]) == 3)[:, None])
    wrong = integer_kernels.check(graph, rows=8, seed=0)["inexact"]
    assert len(wrong) == 26 and all(w["max_abs_error"] == 1 and w["share_wrong"] == 1 / 8 for w in wrong)
