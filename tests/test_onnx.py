"""ONNX Q/DQ export, inspection, the onnxruntime backend and the parity gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import swin_trt
from swin_trt.distributed import DistContext
from swin_trt.onnx.graph import classify_dequantize
from swin_trt.quantization.recipes import RECIPES
from swin_trt.runtimes.onnxruntime import Engine, build
from swin_trt.settings import CalibrationRequest
from swin_trt.workflows import calibrate_checkpoint, export_checkpoint


@pytest.fixture(scope="module")
def exported(trained_micro, digits_dir, tmp_path_factory):
    """swin_micro calibrated in every recipe and exported (FP32 weights), plus the FP32 graph."""
    out = tmp_path_factory.mktemp("onnx")
    graphs = {}
    for mode in sorted(RECIPES):
        calibrated = calibrate_checkpoint(None, None, trained_micro.checkpoint, digits_dir, False, CalibrationRequest(int8_mode=mode), out / mode, DistContext(), workers=0)
        graphs[mode] = (calibrated.checkpoint, export_checkpoint(calibrated.checkpoint, out / f"micro_{mode}.onnx"))
    graphs["fp32"] = (trained_micro.checkpoint, export_checkpoint(trained_micro.checkpoint, out / "micro_fp32.onnx"))
    return graphs


def _expected_roles(mode: str) -> dict[str, int]:
    """swin_micro: 6 blocks, 2 PatchMergings, so 26 quantized Linears; written from the recipes."""
    linears, blocks = 26, 6
    outputs = {"1": linears, "2": 3 * blocks}.get(mode)
    roles = {"gemm_weight": linears, "gemm_input": linears, "attention_matmul": 4 * blocks}
    if outputs:
        roles["gemm_output"] = outputs
    if mode == "trt":
        roles["residual_add"] = blocks  # the MLP residual only
    return roles


@pytest.mark.parametrize("mode", sorted(RECIPES))
def test_one_qdq_pair_per_enabled_quantizer(exported, mode):
    checkpoint, details = exported[mode]
    model = swin_trt.load_model(checkpoint=checkpoint)
    from swin_trt.quantization.model import enabled_quantizers

    assert details["q_nodes"] == details["dq_nodes"] == len(enabled_quantizers(model))
    graph = onnx.load(details["onnx"])
    assert classify_dequantize(graph) == _expected_roles(mode)
    assert details["opset"] == 19 and details["int8_mode"] == mode and details["source_sha256"]
    onnx.checker.check_model(graph, full_check=True)
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    per_channel = [n for n in graph.graph.node if n.op_type == "QuantizeLinear" and constants[n.input[1]].size > 1]
    assert len(per_channel) == 26 and all(n.input[0] in constants for n in per_channel)  # exactly the weights
    assert all(int(constants[n.input[2]].max(initial=0)) == 0 for n in graph.graph.node if n.op_type == "QuantizeLinear")


def test_inspect_checks_placement_against_recipe(run_cli, exported, tmp_path):
    _, details = exported["trt"]
    code, out, err = run_cli("inspect", details["onnx"], "--json", tmp_path / "i.json")
    assert code == 0, err
    assert "matches" in out and json.loads((tmp_path / "i.json").read_text())["recipe_check"] == "passed"
    # the same graph claimed as mode 1 does not match
    lying = tmp_path / "lying.onnx"
    lying.write_bytes(Path(details["onnx"]).read_bytes())
    lying.with_suffix(".json").write_text(json.dumps({**details, "int8_mode": "1"}))
    code, _, err = run_cli("inspect", lying)
    assert code == 2 and "placement does not match its recipe" in err


def test_fp32_export_has_no_qdq_and_lists_all_matmuls(run_cli, exported):
    _, details = exported["fp32"]
    assert details["q_nodes"] == details["dq_nodes"] == 0 and details["int8_mode"] is None
    code, out, _ = run_cli("inspect", details["onnx"])
    assert code == 0 and "without Q/DQ on both inputs: 39" in out  # 26 linears + 12 attention matmuls + head


def _val_batch(digits_dir, size):
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.transforms import eval_transform
    from swin_trt.models.zoo import MICRO

    dataset = build_dataset(digits_dir, "val", eval_transform(MICRO.data))
    return torch.stack([dataset[i][0] for i in range(size)])


@pytest.mark.parametrize("mode", sorted(RECIPES))
def test_dynamic_batch_matches_pytorch(exported, digits_dir, tmp_path, mode):
    checkpoint, details = exported[mode]
    model = swin_trt.load_model(checkpoint=checkpoint)
    build(details["onnx"], tmp_path / "engine.onnx", "exact")
    engine = Engine(tmp_path / "engine.onnx")
    images = _val_batch(digits_dir, 32)
    for size in (1, 7, 32):
        with torch.no_grad():
            reference = model(images[:size]).numpy()
        logits = engine(images[:size].numpy())
        assert logits.shape == (size, 10)
        assert (logits.argmax(1) == reference.argmax(1)).all()
        # same arithmetic; only float GEMM summation order differs, which can flip a value at a rounding tie
        assert np.abs(logits - reference).max() < 0.1


def test_int8_weights_same_outputs_smaller_file(exported, digits_dir, tmp_path):
    checkpoint, details = exported["1"]
    int8 = export_checkpoint(checkpoint, tmp_path / "w8.onnx", weights="int8")
    assert int8["dq_nodes"] == details["dq_nodes"] and int8["q_nodes"] == details["q_nodes"] - 26
    assert int8["bytes"] <= 0.35 * details["bytes"]  # swin_micro's FP parts (norms, bias tables, head) weigh more than Swin-T's
    images = _val_batch(digits_dir, 7).numpy()
    build(details["onnx"], tmp_path / "a.onnx", "exact")
    build(int8["onnx"], tmp_path / "b.onnx", "exact")
    assert np.array_equal(Engine(tmp_path / "a.onnx")(images), Engine(tmp_path / "b.onnx")(images))


def test_fp16_export_keeps_qdq_and_predictions(exported, digits_dir, tmp_path):
    checkpoint, details = exported["2"]
    half = export_checkpoint(checkpoint, tmp_path / "fp16.onnx", precision="fp16")
    assert half["precision"] == "fp16" and half["q_nodes"] == details["q_nodes"] and half["bytes"] < 0.6 * details["bytes"]
    graph = onnx.load(half["onnx"])
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in, float32 out
    assert sum(n.op_type == "Cast" for n in graph.graph.node) <= 4  # no casts around the Q/DQ pairs
    images = _val_batch(digits_dir, 32).numpy()
    build(details["onnx"], tmp_path / "a.onnx", "exact")
    build(half["onnx"], tmp_path / "b.onnx", "exact")
    full, reduced = Engine(tmp_path / "a.onnx")(images), Engine(tmp_path / "b.onnx")(images)
    assert reduced.dtype == np.float32 and (full.argmax(1) == reduced.argmax(1)).mean() >= 31 / 32
    assert np.abs(full - reduced).max() < 0.5


def test_build_and_bench_gate(run_cli, exported, digits_dir, tmp_path):
    checkpoint, details = exported["1"]
    code, _, err = run_cli("build", "--onnx", details["onnx"], "--output", tmp_path / "e.onnx", "--json", tmp_path / "b.json")
    assert code == 0, err
    assert json.loads((tmp_path / "b.json").read_text()) == {"engine": str(tmp_path / "e.onnx"), "backend": "onnxruntime"}
    code, out, err = run_cli("bench", "--reference", checkpoint, "--engine", tmp_path / "e.onnx", "--data-path", digits_dir,
                             "--min-agreement", "99", "--max-top1-drop", "0.5", "--workers", "0", "--json", tmp_path / "bench.json")
    assert code == 0, err
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["passed"] and result["agreement"] >= 99.0 and abs(result["engine_top1"] - result["fakequant_top1"]) <= 0.5
    assert set(result) >= {"fp32_top1", "fakequant_top1", "engine_top1", "agreement", "max_abs_diff", "images_per_s", "passed"}


def test_gate_fails_on_a_broken_engine(run_cli, exported, digits_dir, tmp_path):
    """An engine whose activation scales are 8x too small (clipping everything) must fail."""
    checkpoint, details = exported["1"]
    graph = onnx.load(details["onnx"])
    from onnx import numpy_helper

    for initializer in graph.graph.initializer:
        consumers = [n for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[1] == initializer.name and not n.input[0].endswith("weight")]
        if consumers:
            initializer.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializer) / 8, initializer.name))
    onnx.save(graph, tmp_path / "broken.onnx")
    build(tmp_path / "broken.onnx", tmp_path / "broken_engine.onnx", "exact")
    code, _, err = run_cli("bench", "--reference", checkpoint, "--engine", tmp_path / "broken_engine.onnx", "--data-path", digits_dir,
                           "--min-agreement", "99", "--workers", "0", "--json", tmp_path / "bench.json")
    assert code == 1 and "gate failed: argmax agreement" in err
    assert json.loads((tmp_path / "bench.json").read_text())["passed"] is False


def test_export_refuses_uncalibrated_and_missing(run_cli, trained_micro, tmp_path):
    code, _, err = run_cli("export", "--resume", trained_micro.checkpoint, "--weights", "int8", "--output", tmp_path / "x.onnx")
    assert code == 2 and "--weights int8 needs quantized weights" in err and not (tmp_path / "x.onnx").exists()
    code, _, err = run_cli("build", "--onnx", tmp_path / "missing.onnx")
    assert code == 2 and "ONNX file not found" in err
