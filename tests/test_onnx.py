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
from swin_trt.io import sidecar_path
from swin_trt.onnx.graph import classify_dequantize
from swin_trt.parity.localize import perturb_scale
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.quantization.recipes import RECIPES
from swin_trt.runtimes.onnxruntime import Engine, build
from swin_trt.settings import CalibrationRequest


@pytest.fixture(scope="module")
def exported(trained_micro, micro_trt, micro_fp32, digits_dir, tmp_path_factory):
    """swin_micro calibrated in every recipe and exported (FP32 weights), plus the FP32 graph."""
    out = tmp_path_factory.mktemp("onnx")
    graphs = {"trt": (micro_trt.checkpoint, micro_trt.graph)}
    for mode in sorted(set(RECIPES) - {"trt"}):
        calibrated = calibrate_checkpoint(None, None, trained_micro.checkpoint, digits_dir, False, CalibrationRequest(int8_mode=mode), out / mode, DistContext(), workers=0)
        graphs[mode] = (calibrated.checkpoint, export_checkpoint(calibrated.checkpoint, out / f"micro_{mode}.onnx"))
    graphs["fp32"] = (trained_micro.checkpoint, micro_fp32)
    return graphs


def _expected_roles(mode: str) -> dict[str, int]:
    """swin_micro: 6 blocks, 2 PatchMergings, so 26 quantized Linears; written from the recipes."""
    linears, blocks = 26, 6
    outputs = {"1": linears, "2": 3 * blocks}.get(mode)
    roles = {"gemm_weight": linears, "gemm_input": linears, "attention_matmul": 4 * blocks}
    if outputs:
        roles["gemm_output"] = outputs
    if mode == "trt-residual":
        roles["residual_add"] = blocks  # the MLP residual only (trt before 0.2)
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
    sidecar_path(lying).write_text(json.dumps({**details, "int8_mode": "1"}))
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


def test_qdq_nodes_named_after_their_quantizers(exported):
    from swin_trt.quantization.model import enabled_quantizers

    checkpoint, details = exported["trt"]
    graph = onnx.load(details["onnx"]).graph
    enabled = enabled_quantizers(swin_trt.load_model(checkpoint=checkpoint))
    for op in ("QuantizeLinear", "DequantizeLinear"):
        assert sorted(n.name for n in graph.node if n.op_type == op) == sorted(f"{name}.{op}" for name in enabled)


@pytest.fixture(scope="module")
def engines(exported, tmp_path_factory):
    """Engines of recipes 1 and trt built with the default --ort-mode (auto) through the CLI's build."""
    out = tmp_path_factory.mktemp("engines")
    return {mode: build(exported[mode][1]["onnx"], out / f"micro_{mode}.onnx") for mode in ("1", "trt")}


def _bench(run_cli, reference, engine, digits_dir, json_path, *extra):
    code, out, err = run_cli("bench", "--reference", reference, "--engine", engine, "--data-path", digits_dir, "--workers", "0", "--json", json_path, *extra)
    return code, out, err, (json.loads(json_path.read_text()) if json_path.exists() else None)


def _cpu_flags() -> set[str]:
    """This machine's ISA flags, read here from /proc/cpuinfo (not through swin_trt.cpu)."""
    return set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split(":", 1)[1].split())


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs /proc/cpuinfo (Linux)")
def test_build_auto_mode_records_choice_cpu_and_source(run_cli, exported, tmp_path):
    from swin_trt.cpu import read_cpu

    _, details = exported["1"]
    code, out, err = run_cli("build", "--onnx", details["onnx"], "--output", tmp_path / "e.onnx", "--json", tmp_path / "b.json")
    assert code == 0, err
    # docs/cpu.md's rule, stated here: auto builds an 8-bit graph fast only where int8 products of signed operands accumulate
    # in int32 (VNNI or AMX); elsewhere exact, and the reason names the unsigned (u8u8) fast engine a user may ask for
    int32_signed = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpu_flags())
    mode = "fast" if int32_signed else "exact"
    reason = out.split(f"onnxruntime mode: {mode} (", 1)[1].split("); CPU: ", 1)[0] if f"onnxruntime mode: {mode} (" in out else None
    assert reason, out
    assert ("int32" in reason) if mode == "fast" else ("8-bit signed matmul operands" in reason and "u8u8" in reason)
    result = json.loads((tmp_path / "b.json").read_text())
    assert {key: result[key] for key in ("engine", "backend", "ort_mode")} == {"engine": str(tmp_path / "e.onnx"), "backend": "onnxruntime", "ort_mode": mode}
    assert set(result) == {"engine", "backend", "ort_mode", "backend_reason"}  # build --backend auto (the default) says why onnxruntime
    sidecar = json.loads((tmp_path / "e.onnx.json").read_text())
    assert sidecar["ort_mode_requested"] == "auto" and sidecar["ort_mode_reason"] == reason and sidecar["cpu"] == read_cpu().as_json()
    assert sidecar["unsigned_operands"] is False  # exact keeps the graph's own types; fast with VNNI/AMX needs no rewrite
    assert Path(sidecar["source_onnx"]).is_absolute() and Path(sidecar["source_onnx"]) == Path(details["onnx"]).resolve()


@pytest.mark.parametrize("mode", ["1", "trt"])
def test_right_pairing_passes_the_default_gate(run_cli, exported, engines, digits_dir, tmp_path, mode):
    code, out, err, result = _bench(run_cli, exported[mode][0], engines[mode]["engine"], digits_dir, tmp_path / "bench.json")
    assert code == 0, err
    assert "gate passed" in out and result["passed"] is True and result["failed"] == [] and result["provenance"] == "verified"
    assert result["rel_error_median"] <= result["max_rel_error"] == 0.5 and result["rel_error_p95"] <= result["max_rel_error_p95"]
    assert result["engine_mode"] == engines[mode]["ort_mode"] and result["images"] == 360
    assert set(result) >= {"fp32_top1", "fakequant_top1", "engine_top1", "agreement", "max_abs_diff", "images_per_s", "passed",
                           "min_agreement", "max_top1_drop"}


@pytest.mark.parametrize(("engine_mode", "reference_mode"), [("1", "trt"), ("trt", "1")])
def test_wrong_recipe_fails_the_default_gate(run_cli, exported, engines, digits_dir, tmp_path, engine_mode, reference_mode):
    """Argmax agreement cannot tell these apart on digits (99+ %); the relative logit error can."""
    code, _, err, result = _bench(run_cli, exported[reference_mode][0], engines[engine_mode]["engine"], digits_dir, tmp_path / "bench.json",
                                  "--allow-foreign-engine")
    assert code == 1 and "swin-trt bench: gate failed: median relative logit error" in err
    assert result["passed"] is False and "max_rel_error" in result["failed"] and result["rel_error_median"] > 0.5
    assert result["provenance"].startswith("foreign: ") and "not from --reference" in result["provenance"]


def test_foreign_engine_refused_in_one_line(run_cli, exported, engines, digits_dir, tmp_path):
    code, _, err, result = _bench(run_cli, exported["trt"][0], engines["1"]["engine"], digits_dir, tmp_path / "bench.json")
    assert code == 2 and result is None
    assert err.count("\n") == 1 and err.startswith("swin-trt bench: error: foreign engine: ") and "exported from" in err
    bare = tmp_path / "bare.onnx"  # an engine without its sidecar
    bare.write_bytes(Path(engines["1"]["engine"]).read_bytes())
    code, _, err, _ = _bench(run_cli, exported["1"][0], bare, digits_dir, tmp_path / "bench.json")
    assert code == 2 and "has no sidecar" in err


def test_no_gate_reports_without_passing(run_cli, exported, engines, digits_dir, tmp_path):
    code, out, err, result = _bench(run_cli, exported["1"][0], engines["1"]["engine"], digits_dir, tmp_path / "bench.json", "--no-gate", "--max-batches", "1")
    assert code == 0, err
    assert result["passed"] is None and result["max_rel_error"] is None and "not gated" in out
    assert result["images"] == 64 and result["rel_error_median"] >= 0


def test_localize_names_the_perturbed_layer_first(run_cli, exported, digits_dir, tmp_path):
    checkpoint, details = exported["1"]
    broken = "layers.1.blocks.0.mlp.fc1.input_quantizer"
    perturb_scale(details["onnx"], tmp_path / "broken.onnx", broken, 2.0)
    build(tmp_path / "broken.onnx", tmp_path / "broken_engine.onnx")
    code, out, err, result = _bench(run_cli, checkpoint, tmp_path / "broken_engine.onnx", digits_dir, tmp_path / "bench.json",
                                    "--localize", "--localize-images", "8", "--localize-plot", tmp_path / "where.png")
    assert result["provenance"] == "verified"  # the chain holds: only the numbers can tell
    assert code == 1 and result["passed"] is False
    assert result["localize_first_outside"] == broken and f"first above the bound: {broken}" in out
    layers = result["localize"]
    first = [layer["name"] for layer in layers].index(broken)
    assert first > 0 and all(layer["rel_error"] <= 0.5 for layer in layers[:first]) and layers[first]["rel_error"] > 1
    assert layers[-1]["name"] == "logits (engine)" and len(layers) == details["dq_nodes"] + 1
    assert (tmp_path / "where.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exposed_qdq_tensors_are_not_fused(exported, tmp_path):
    """Why --localize measures the graph, not onnxruntime's fused int8 kernels (docs/parity.md)."""
    import onnxruntime as ort

    from swin_trt.runtimes.onnxruntime import session_options

    def fused(model: onnx.ModelProto) -> int:
        options = session_options("fast")
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return sum(n.op_type in ("QLinearMatMul", "MatMulIntegerToFloat") for n in onnx.load(tmp_path / "optimized.onnx").graph.node)

    graph = onnx.load(exported["1"][1]["onnx"])
    assert fused(graph) > 0
    typed = {info.name: info for info in onnx.shape_inference.infer_shapes(graph).graph.value_info}
    graph.graph.output.extend(typed[n.output[0]] for n in graph.graph.node if n.op_type == "DequantizeLinear")
    assert fused(graph) == 0


def test_localize_of_a_right_engine_stays_within_the_bound(run_cli, exported, engines, digits_dir, tmp_path):
    code, out, err, result = _bench(run_cli, exported["trt"][0], engines["trt"]["engine"], digits_dir, tmp_path / "bench.json",
                                    "--localize", "--max-batches", "1")
    assert code == 0, err
    assert result["localize_first_outside"] is None and "within r <= 0.5" in out


def test_export_refuses_uncalibrated_and_missing(run_cli, trained_micro, tmp_path):
    code, _, err = run_cli("export", "--resume", trained_micro.checkpoint, "--weights", "int8", "--output", tmp_path / "x.onnx")
    assert code == 2 and "--weights int8 needs quantized weights" in err and not (tmp_path / "x.onnx").exists()
    code, _, err = run_cli("build", "--onnx", tmp_path / "missing.onnx")
    assert code == 2 and "ONNX file not found" in err
