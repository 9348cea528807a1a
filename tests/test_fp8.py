"""FP8 (E4M3): the fake quantizer against ONNX FP8 Q/DQ as onnxruntime runs it, the format followed from
calibration to the gate, and the refusals (wrong format, bit widths, GPUs without FP8, OpenVINO)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from reference_layout import reference_state_dict

from swin_trt.distributed import DistContext
from swin_trt.errors import SwinTrtError
from swin_trt.models.checkpoint import read_checkpoint, save_checkpoint
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import MICRO
from swin_trt.onnx import tensorrt as onnx_tensorrt
from swin_trt.onnx.graph import qdq_formats, tensor_types
from swin_trt.parity.gate import BY_PRECISION, bound_family
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.export import ExportSettings, export_checkpoint, export_graph
from swin_trt.quantization.calibrators import Histogram, fp8_mse_errors
from swin_trt.quantization.model import named_quantizers, quantize_model
from swin_trt.quantization.quantizer import TensorQuantizer
from swin_trt.quantization.recipes import get_recipe
from swin_trt.runtimes import tensorrt as trt_runtime
from swin_trt.settings import CalibrationRequest

ort = pytest.importorskip("onnxruntime")

E4M3_MAX = 448.0  # written here from the format (1.75 * 2**8), not read from the code under test


def _qdq_session(scale: np.ndarray, axis: int = 0):
    """An opset-19 FP8 QuantizeLinear -> DequantizeLinear graph (saturate defaults to 1), as onnxruntime runs it."""
    shape = [] if scale.ndim == 0 else [scale.size]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis)]
    initializers = [numpy_helper.from_array(scale.astype(np.float32), "s"),
                    helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, shape, [0.0] * max(1, scale.size))]
    graph = helper.make_graph(nodes, "fp8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _hard_tensor(rows: int = 4, columns: int = 20000) -> torch.Tensor:
    """Random values over many binades per row, plus NaN, infinities and values far beyond +-448 steps."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, columns, generator=generator) * torch.logspace(-3, 2, rows)[:, None]
    x[0, :6] = torch.tensor([math.nan, math.inf, -math.inf, 1e6, -1e6, 0.0])
    return x


@pytest.mark.parametrize("per_channel", [False, True])
def test_fp8_fake_quant_equals_onnxruntime_qdq_bit_for_bit(per_channel):
    x = _hard_tensor()
    if per_channel:
        quantizer = TensorQuantizer(x.shape[0], axis=0)
        quantizer.quant_format = "fp8"
        quantizer.set_amax(torch.tensor([0.5, 3.0, 0.02, 40.0]))
    else:
        quantizer = TensorQuantizer()
        quantizer.quant_format = "fp8"
        quantizer.set_amax(3.0)
    quantizer.enabled = True
    scale = quantizer.scale().detach().numpy()
    scaled = (x / torch.from_numpy(scale).reshape(-1, 1)).numpy() if per_channel else x.numpy() / scale
    finite = np.isfinite(scaled)
    # the tensor exercises what the ONNX spec defines: saturation beyond +-448, subnormals (below 2**-6), NaN
    assert (np.abs(scaled[finite]) > E4M3_MAX).sum() > 100
    assert ((np.abs(scaled[finite]) < 2.0**-6) & (scaled[finite] != 0)).sum() > 100
    assert np.isnan(scaled).any()
    expected = _qdq_session(scale).run(None, {"x": x.numpy()})[0]
    got = quantizer(x).numpy()
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.nanmax(np.abs(got)) == pytest.approx(E4M3_MAX * float(np.max(scale)), rel=1e-6)  # saturated, not NaN or inf


def test_fp8_straight_through_gradient_is_clipped_at_amax():
    quantizer = TensorQuantizer()
    quantizer.quant_format = "fp8"
    quantizer.set_amax(2.0)
    quantizer.enabled = True
    x = torch.tensor([-3.0, -2.0, -0.3, 0.0, 1.7, 2.0, 2.5], requires_grad=True)
    quantizer(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_fp8_learned_amax_gets_a_gradient():
    quantizer = TensorQuantizer()
    quantizer.quant_format = "fp8"
    quantizer.set_amax(1.0)
    quantizer.enabled = True
    quantizer.set_learn_amax(True)
    x = torch.randn(256, generator=torch.Generator().manual_seed(1)) * 2
    (quantizer(x) ** 2).sum().backward()
    assert quantizer.amax.grad is not None and torch.isfinite(quantizer.amax.grad).all() and quantizer.amax.grad != 0


def test_fp8_mse_calibrator_matches_a_brute_force_search():
    """FP8 MSE's analytic error model against fake-quantizing the samples themselves at every candidate. (int8's
    model, one uniform step for every value, picks a clip here that costs several times the best FP8 error.)"""
    generator = torch.Generator().manual_seed(2)
    samples = torch.cat([torch.randn(200000, generator=generator), torch.randn(20, generator=generator) * 60]).abs()
    counts = torch.histc(samples, bins=2048, min=0, max=float(samples.max())).double()
    hist = Histogram(counts, float(samples.max()) / 2048, float(samples.max()))
    candidates, errors = fp8_mse_errors(hist)
    chosen = float(candidates[int(torch.argmin(errors))])

    def brute(amax: float) -> float:
        scale = amax / E4M3_MAX
        levels = (samples / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * scale
        return float(((levels - samples) ** 2).mean())

    grid = candidates[:: max(1, len(candidates) // 200)]
    best = min(brute(float(a)) for a in grid)
    assert brute(chosen) <= best * 1.05


@pytest.fixture(scope="module")
def random_fp8(digits_dir, tmp_path_factory):
    """A randomly initialised swin_micro, calibrated for FP8 on one digits batch (fast; for graph and refusal tests)."""
    out = tmp_path_factory.mktemp("fp8")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(out / "random.pth", build_model(MICRO), {"config": MICRO.to_dict()})
    request = CalibrationRequest(int8_mode="trt", format="fp8", calibrator="max", num_calib_batch=1, calib_batchsz=8)
    calibrated = calibrate_checkpoint(None, None, checkpoint, digits_dir, False, request, out, DistContext(), workers=0).checkpoint
    graph = out / "fp8.onnx"
    export_checkpoint(calibrated, graph)
    return out, checkpoint, calibrated, graph


def test_fp8_export_has_fp8_qdq_and_fp8_weights(random_fp8, tmp_path, run_cli):
    _, _, calibrated, graph = random_fp8
    assert read_checkpoint(calibrated)[1]["quantization"]["format"] == "fp8"
    model = onnx.load(str(graph))
    zero_points = {init.data_type for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                   for init in model.graph.initializer if init.name == node.input[2]}
    assert zero_points == {TensorProto.FLOAT8E4M3FN}
    assert model.opset_import[0].version == 19
    stored = tmp_path / "w8.onnx"
    details = export_checkpoint(calibrated, stored, weights="fp8")
    weights = [init for init in onnx.load(str(stored)).graph.initializer if init.name.endswith("_fp8")]
    assert weights and all(init.data_type == TensorProto.FLOAT8E4M3FN for init in weights)
    assert details["format"] == "fp8" and details["q_nodes"] == details["dq_nodes"] - len(weights)
    images = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": images})[0] for p in (graph, stored)]
    assert np.array_equal(run[0], run[1])  # FP8-stored weights are the values QuantizeLinear computes
    code, out, err = run_cli("inspect", stored)
    assert code == 0, err
    assert "format in the graph (zero-point types): fp8" in out


def test_inspect_refuses_a_graph_whose_format_is_not_its_sidecars(random_fp8, tmp_path, run_cli):
    _, _, _, graph = random_fp8
    copy = tmp_path / "g.onnx"
    copy.write_bytes(graph.read_bytes())
    sidecar = json.loads((graph.parent / "fp8.onnx.json").read_text())
    (tmp_path / "g.onnx.json").write_text(json.dumps({**sidecar, "format": "int8"}))
    code, _, err = run_cli("inspect", copy)
    assert code == 2
    assert "Q/DQ are fp8, the sidecar says format int8" in err and len(err.strip().splitlines()) == 1


def test_tensorrt_target_fp8_graph_and_lint(random_fp8, tmp_path):
    _, _, calibrated, _ = random_fp8
    path = tmp_path / "trt.onnx"
    details = export_checkpoint(calibrated, path, target="tensorrt")
    assert details["weights"] == "fp8" and details["precision"] == "fp16"
    findings = onnx_tensorrt.lint(onnx.load(str(path)))
    assert not [f for f in findings if f.severity == onnx_tensorrt.ERROR]
    rules = {f.rule for f in findings}
    assert "zero-point" not in rules  # float8e4m3fn zeros are what TensorRT takes
    assert "fp8-outside-gemm" not in rules  # trt (since 0.2) quantizes GEMM and attention-matmul inputs only

    # trt-residual (trt before 0.2) also quantizes each block's MLP residual operand: FP8 feeding an Add, 1 per block
    state, meta = read_checkpoint(calibrated)
    for key in [k for k in state if k.endswith("mlp_residual_quantizer.amax")]:
        state[key] = torch.tensor(4.0)
    torch.save({"model": state, "meta": {**meta, "quantization": {**meta["quantization"], "int8_mode": "trt-residual"}}}, tmp_path / "residual.pth")
    export_checkpoint(tmp_path / "residual.pth", tmp_path / "residual.onnx", target="tensorrt")
    findings = onnx_tensorrt.lint(onnx.load(str(tmp_path / "residual.onnx")))
    assert sum(f.rule == "fp8-outside-gemm" for f in findings) == sum(MICRO.depths)


def test_fp8_refuses_narrow_bit_widths_entropy_and_an_int8_checkpoint(random_fp8, digits_dir, tmp_path, run_cli):
    out, checkpoint, _, _ = random_fp8
    for extra, phrase in ((("--wprec", "6"), "--wprec/--aprec apply to --format int8 only"),
                          (("--calibrator", "entropy"), "--calibrator entropy does not apply to --format fp8"),
                          (("--ptq-method", "adaround"), "--ptq-method works on the integer grid")):
        code, _, err = run_cli("calibrate", "--resume", checkpoint, "--data-path", digits_dir, "--format", "fp8", *extra,
                               "--calib-output-path", tmp_path, "--workers", "0")
        assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("calibrate", "--resume", checkpoint, "--data-path", digits_dir, "--format", "fp16", "--calib-output-path", tmp_path)
    assert code == 2 and "invalid choice" in err


def test_reference_toolkit_checkpoint_refused_for_fp8_qat(digits_dir, tmp_path, run_cli):
    """The reference toolkit's checkpoints hold int8 amax (scale amax/127): QAT with --format fp8 refuses one in one line."""
    torch.manual_seed(0)
    native = quantize_model(build_model(MICRO), get_recipe("1"), per_channel_weights=False)
    for _, quantizer in named_quantizers(native):
        quantizer.set_amax(torch.ones_like(quantizer.amax))
    path = tmp_path / "reference_calib.pth"
    torch.save(reference_state_dict(MICRO, native.state_dict()), path)
    code, _, err = run_cli("qat", "--model", "swin_micro", "--resume", path, "--int8-mode", "1", "--format", "fp8", "--data-path", digits_dir,
                           "--output", tmp_path / "qat", "--workers", "0", "--device", "cpu")
    assert code == 2, err
    assert "reference-toolkit checkpoint (int8 only), not --format fp8" in err and len(err.strip().splitlines()) == 1


def test_fp8_checkpoint_refused_for_int8_qat(random_fp8, digits_dir, tmp_path, run_cli):
    _, _, calibrated, _ = random_fp8
    code, _, err = run_cli("qat", "--resume", calibrated, "--format", "int8", "--data-path", digits_dir, "--output", tmp_path, "--workers", "0",
                           "--device", "cpu")
    assert code == 2 and "calibrated for fp8, not --format int8" in err and len(err.strip().splitlines()) == 1


def test_tensorrt_build_refuses_fp8_below_compute_capability_8_9(random_fp8, micro_trt, tmp_path, monkeypatch):
    """The GPU is faked at the function boundary (require_tensorrt, require_cuda): the refusal comes before any build."""
    _, _, calibrated, graph = random_fp8
    monkeypatch.setattr(trt_runtime, "require_tensorrt", lambda: object())
    monkeypatch.setattr(trt_runtime, "require_cuda", lambda: ("NVIDIA A100-SXM4-80GB", "8.0"))
    with pytest.raises(SwinTrtError, match=r"FP8 Q/DQ, and NVIDIA A100-SXM4-80GB \(compute capability 8.0\) has no FP8 tensor cores"):
        trt_runtime.build(graph, tmp_path / "e.plan")
    assert not (tmp_path / "e.plan").exists()
    # an INT8 graph on the same GPU and the FP8 graph on Ada / Hopper pass this check
    trt_runtime.check_fp8_capability(micro_trt.graph["onnx"], "NVIDIA A100-SXM4-80GB", "8.0")
    for capability in ("8.9", "9.0", "10.0"):
        trt_runtime.check_fp8_capability(graph, "GPU", capability)


@pytest.mark.parametrize("flags", [{"avx2"}, {"avx2", "avx512f", "avx512_vnni"}, {"avx2", "amx_tile", "amx_int8"}], ids=["avx2", "vnni", "amx"])
def test_auto_builds_fp8_graphs_exact_on_every_cpu_kind(random_fp8, monkeypatch, flags):
    """Found on the Zen 5 VNNI EPYC: the int8 units' shortcut answered before the FP8 check, so auto built FP8 graphs fast there."""
    from swin_trt.cpu import CpuInfo
    from swin_trt.runtimes import onnxruntime as ort_runtime

    monkeypatch.setattr(ort_runtime, "read_cpu", lambda: CpuInfo("test CPU", frozenset(flags)))
    plan = ort_runtime.resolve_mode(random_fp8[3], "auto")
    assert plan.mode == "exact" and "FP8 Q/DQ" in plan.reason and not plan.unsigned


def test_openvino_refuses_fp8_graphs(random_fp8, tmp_path):
    pytest.importorskip("openvino")
    from swin_trt.runtimes import openvino as ov_runtime

    with pytest.raises(SwinTrtError, match="FP8 Q/DQ, which OpenVINO .* does not round as ONNX QuantizeLinear defines"):
        ov_runtime.build(random_fp8[3], tmp_path / "e.blob")
    assert not (tmp_path / "e.blob").exists()


def test_gate_bound_family_comes_from_the_graphs_types(random_fp8):
    graph = onnx.load(str(random_fp8[3]))
    assert qdq_formats(graph) == {"fp8"}
    assert bound_family(*tensor_types(graph)) == "fp8" and "fp8" in BY_PRECISION
    assert bound_family({"float32"}, {"int8"}) == "fp32" and bound_family({"float16"}, {"float8_e4m3fn"}) == "fp16"


def test_fp8_is_an_export_setting_the_graph_checks_fresh_export_reproduces(random_fp8):
    """The sidecar's ``export`` records the FP8 format, a fresh in-memory export with those settings
    is the saved graph to the byte, and int8 settings on an FP8 checkpoint are refused (not exported
    as something else)."""
    _, _, calibrated, graph = random_fp8
    settings = ExportSettings.from_sidecar(json.loads(graph.with_name(graph.name + ".json").read_text()))
    assert settings.format == "fp8"
    fresh = export_graph(calibrated, settings).proto
    assert qdq_formats(fresh) == {"fp8"} and fresh.SerializeToString() == onnx.load(str(graph)).SerializeToString()
    with pytest.raises(SwinTrtError, match="is calibrated for fp8, the settings ask for int8 Q/DQ"):
        export_graph(calibrated, ExportSettings())


def test_fp8_export_build_bench_gate_on_the_trained_micro_model(trained_micro, micro_trt, digits_dir, tmp_path, run_cli):
    """calibrate --format fp8 -> export -> build (onnxruntime) -> bench: the right engine passes the FP8 gate,
    the INT8 engine of the same recipe benched against the FP8 reference fails it."""
    paths = {}
    code, _, err = run_cli("calibrate", "--resume", trained_micro.checkpoint, "--data-path", digits_dir, "--format", "fp8", "--int8-mode", "trt",
                           "--calib-output-path", tmp_path / "fp8", "--skip-eval", "--workers", "0", "--device", "cpu")
    assert code == 0, err
    calibrated = tmp_path / "fp8" / "swin_micro_calib.pth"
    assert run_cli("export", "--resume", calibrated, "--output", tmp_path / "fp8.onnx")[0] == 0
    # the INT8 graph of the same recipe (the session's shared calibration, --format int8 being the default)
    for fmt, checkpoint, graph in (("fp8", calibrated, tmp_path / "fp8.onnx"), ("int8", micro_trt.checkpoint, micro_trt.graph["onnx"])):
        engine = tmp_path / f"{fmt}.ort.onnx"
        code, out, err = run_cli("build", "--onnx", graph, "--output", engine)
        assert code == 0, err
        paths[fmt] = (checkpoint, graph, engine)
    assert "FP8 Q/DQ" in json.loads((tmp_path / "fp8.ort.onnx.json").read_text())["ort_mode_reason"]
    reference, _, engine = paths["fp8"]
    code, out, err = run_cli("bench", "--reference", reference, "--engine", engine, "--data-path", digits_dir, "--workers", "0", "--device", "cpu",
                             "--json", tmp_path / "right.json")
    right = json.loads((tmp_path / "right.json").read_text())
    assert code == 0 and right["passed"] is True, err
    assert right["engine_precision"] == "fp8" and right["graph_mismatches"] == []
    code, out, err = run_cli("bench", "--reference", reference, "--engine", paths["int8"][2], "--data-path", digits_dir, "--workers", "0",
                             "--device", "cpu", "--allow-foreign-engine", "--json", tmp_path / "wrong.json")
    wrong = json.loads((tmp_path / "wrong.json").read_text())
    assert code != 0 and wrong["passed"] is False
    assert len(wrong["graph_mismatches"]) > 0
