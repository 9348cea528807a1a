"""The gather layout of shifted windows (swin_trt/onnx/layout.py): the permutation is timm's roll and
window partition, and graphs in either layout compute the same bits on every kind of graph."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from swin_trt.onnx.layout import window_token_order
from swin_trt.pipelines.export import ExportSettings, export_graph, resolve_settings
from swin_trt.runtimes.onnxruntime import session_options


@pytest.mark.parametrize("height, width, window, shift", [(8, 8, (4, 4), (2, 2)), (6, 9, (3, 3), (1, 1)), (4, 4, (2, 2), (0, 0))])
def test_window_token_order_is_the_shifted_partition(height, width, window, shift):
    """Written out from the definition: window (i, j), position (a, b) inside it, reads the token at
    row (i * wh + a + shift_h) mod H, column (j * ww + b + shift_w) mod W, windows row by row."""
    expected = [((i * window[0] + a + shift[0]) % height) * width + (j * window[1] + b + shift[1]) % width
                for i in range(height // window[0]) for j in range(width // window[1])
                for a in range(window[0]) for b in range(window[1])]
    assert window_token_order(height, width, window, shift).tolist() == expected


def _ops(proto) -> collections.Counter:
    return collections.Counter(node.op_type for node in proto.graph.node)


def _run(proto, images: np.ndarray, fp16: bool) -> np.ndarray:
    """onnxruntime in exact mode; an FP16 graph through ONNX's reference evaluator, which keeps every
    float16 tensor float16 as TensorRT's strongly typed engines do. onnxruntime's CPU provider runs
    operators it has no float16 kernel for in float32 and casts around them (InsertCastTransformer),
    so where it rounds to float16 moves with the operators next to them: its outputs of the two
    layouts differ by float16 roundings (measured: up to 0.08 on logits up to 4)."""
    if fp16:
        return ReferenceEvaluator(proto).run(None, {"images": images})[0]
    session = ort.InferenceSession(proto.SerializeToString(), session_options("exact", 2), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.mark.parametrize("kind", ["fp32", "int8", "tensorrt-fp16"])
def test_gather_layout_computes_the_same_bits_as_timms(trained_micro, micro_fp32, micro_trt, kind):
    """swin_micro: 16x16 tokens in windows of 4 (shift 2 in odd blocks), 8x8, and a 4x4 stage whose
    window is the whole map (timm drops the shift there). Every block's roll, partition and reverse
    become two Gathers, with no Transpose, Slice or Concat of their own left. The gather-layout graphs
    are the session's shared exports, made with every default (checked here), so only timm's is
    exported in this test."""
    checkpoint, shared = {"fp32": (trained_micro.checkpoint, micro_fp32), "int8": (micro_trt.checkpoint, micro_trt.graph),
                          "tensorrt-fp16": (micro_trt.checkpoint, micro_trt.trt_graph)}[kind]
    settings = ExportSettings.from_sidecar(shared)
    assert settings == {"fp32": resolve_settings(False), "int8": resolve_settings(True), "tensorrt-fp16": resolve_settings(True, target="tensorrt")}[kind]
    assert settings.layout == "gather"
    gathered = onnx.load(shared["onnx"])
    timm = export_graph(checkpoint, dataclasses.replace(settings, layout="timm")).proto
    ops, timm_ops = _ops(gathered), _ops(timm)
    blocks = 6
    assert ops["Gather"] - timm_ops["Gather"] == 2 * blocks
    assert timm_ops["Transpose"] - ops["Transpose"] == 2 * blocks  # partition and reverse: one 6-D Transpose each
    assert ops["Concat"] < timm_ops["Concat"] and ops["Slice"] < timm_ops["Slice"]  # the two shifted blocks' rolls
    fp16 = kind == "tensorrt-fp16"
    images = np.random.default_rng(1).standard_normal((4 if fp16 else 24, 3, 32, 32), dtype=np.float32)
    assert np.array_equal(_run(gathered, images, fp16), _run(timm, images, fp16))


def test_graphs_from_before_the_layout_setting_are_reexported_in_timms():
    """The gate re-exports the reference as the engine's graph was made: a sidecar written by 0.2
    records ``export`` without ``layout``, and its graph had timm's."""
    old = {"export": {k: v for k, v in resolve_settings(True).as_json().items() if k != "layout"}}
    assert ExportSettings.from_sidecar(old).layout == "timm"
    assert ExportSettings.from_sidecar({"precision": "fp32", "int8_mode": "trt"}).layout == "timm"
    assert ExportSettings.from_sidecar({"export": resolve_settings(True).as_json()}).layout == "gather"
