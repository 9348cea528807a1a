"""``swin-trt build --backend auto``: which backend, why, and the chosen engine left whole where it belongs."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from swin_trt.io import sidecar_path
from swin_trt.parity.provenance import check_engine_bytes
from swin_trt.runtimes.select import candidates

OPENVINO = importlib.util.find_spec("openvino") is not None


def _float_graph(path) -> None:
    """A small graph without Q/DQ (a 1x1 convolution, pooling and a linear head), batch dynamic like an export's."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "h"], ["logits"])]
    weights = [numpy_helper.from_array(rng.standard_normal((64, 3, 1, 1)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "h")]
    graph = helper.make_graph(nodes, "float", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], initializer=weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_quantized_graphs_go_to_onnxruntime_only(micro_trt, tmp_path):
    graph = micro_trt.graph["onnx"]
    assert candidates(graph, openvino_installed=True).backends == ("onnxruntime",)
    assert "OpenVINO's int8 kernels" in candidates(graph, openvino_installed=True).excluded
    assert candidates(graph, openvino_installed=False).excluded == "OpenVINO is not installed"
    _float_graph(tmp_path / "f.onnx")
    assert candidates(tmp_path / "f.onnx", True).backends == ("onnxruntime", "openvino")
    assert candidates(tmp_path / "f.onnx", False).backends == ("onnxruntime",)


def test_auto_is_the_default_and_says_why(run_cli, micro_trt, tmp_path):
    code, out, err = run_cli("build", "--onnx", micro_trt.graph["onnx"], "--output", tmp_path / "e.onnx", "--json", tmp_path / "b.json")
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    sidecar = json.loads(sidecar_path(tmp_path / "e.onnx").read_text())
    assert result["backend"] == sidecar["backend"] == "onnxruntime" and sidecar["backend_requested"] == "auto"
    assert result["backend_reason"] == sidecar["backend_reason"] and "the only candidate" in result["backend_reason"]
    assert f"backend: {result['backend_reason']}" in out
    assert check_engine_bytes(tmp_path / "e.onnx", sidecar) is None  # the rewritten sidecar still describes the engine's bytes


@pytest.mark.skipif(not OPENVINO, reason="OpenVINO is not installed: nothing to choose between")
def test_auto_measures_both_candidates_and_keeps_the_faster(run_cli, tmp_path, monkeypatch):
    _float_graph(tmp_path / "f.onnx")
    monkeypatch.chdir(tmp_path)  # the default engine path is engines/ under the working folder
    code, out, err = run_cli("build", "--onnx", tmp_path / "f.onnx", "--json", tmp_path / "b.json")
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    rates = {name: float(rate) for name, rate in re.findall(r"(onnxruntime|openvino) ([0-9.]+)", result["backend_reason"])}
    assert set(rates) == {"onnxruntime", "openvino"} and all(rate > 0 for rate in rates.values())
    assert result["backend"] == max(rates, key=rates.get)  # the faster of the figures it reports
    expected = "engines/f.ort-fast.onnx" if result["backend"] == "onnxruntime" else "engines/f.openvino.blob"
    assert result["engine"] == expected
    files = sorted(p.name for p in (tmp_path / "engines").iterdir())
    assert files == sorted([expected.split("/")[1], expected.split("/")[1] + ".json"])  # the other candidate and the scratch folder are gone
    sidecar = json.loads(sidecar_path(tmp_path / expected).read_text())
    assert sidecar["engine"] == expected and sidecar["backend_reason"] == result["backend_reason"]
    assert check_engine_bytes(tmp_path / expected, sidecar) is None
