"""build --backend openvino: the same sidecar, provenance chain and gate as onnxruntime engines
(skipped where OpenVINO is not installed: it is an optional dependency, swin-trt[openvino])."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swin_trt.cpu import read_cpu
from swin_trt.io import sidecar_path

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def graph(micro_trt):
    return micro_trt.checkpoint, micro_trt.graph


def test_openvino_engine_passes_the_default_gate_and_localizes(run_cli, graph, digits_dir, tmp_path):
    checkpoint, details = graph
    engine = tmp_path / "micro.openvino.blob"
    code, out, err = run_cli("build", "--onnx", details["onnx"], "--backend", "openvino", "--output", engine, "--json", tmp_path / "b.json")
    assert code == 0, err
    assert json.loads((tmp_path / "b.json").read_text()) == {"engine": str(engine), "backend": "openvino"}
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["inference_precision"] == "f32" and Path(sidecar["source_onnx"]) == Path(details["onnx"]).resolve() and sidecar["cpu"]["model"]
    code, out, err = run_cli("bench", "--reference", checkpoint, "--engine", engine, "--data-path", digits_dir, "--workers", "0",
                             "--localize", "--localize-images", "4", "--json", tmp_path / "bench.json")
    # OpenVINO's INT8 kernels hold the gate where int8 dot products accumulate in int32 (VNNI/AMX: r median 0.05-0.29 on
    # an AVX-512 EPYC); on AVX2 without VNNI they fail it (r median 4.28, p95 9.58 on digits), which the gate must say
    holds = read_cpu().int8_dot_product
    assert code == (0 if holds else 1), err
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["passed"] is holds and result["engine_backend"] == "openvino" and result["provenance"] == "verified"
    assert result["localize"][-1]["name"] == "logits (engine)" and len(result["localize"]) == details["dq_nodes"] + 1


def test_openvino_refuses_what_it_cannot_build(run_cli, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    code, _, err = run_cli("build", "--onnx", broken, "--backend", "openvino", "--output", tmp_path / "e.blob")
    assert code == 2 and err.strip().splitlines()[-1].startswith("swin-trt build: error:") and not (tmp_path / "e.blob").exists()
