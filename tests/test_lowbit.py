"""Low-bit PTQ methods (``calibrate --ptq-method``): every FP rewrite is exact before
quantization, every method lowers the quantized model's block-output error against plain
rounding, and the checkpoints reload bit for bit, export conformant graphs and go through the
fallback and sensitivity tools."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from swin_trt.api import open_model
from swin_trt.distributed import DistContext
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import MICRO
from swin_trt.onnx.tensorrt import ERROR, lint
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.pipelines.sensitivity import split_probe
from swin_trt.quantization.ptq import layernorm, smooth
from swin_trt.quantization.ptq.apply import ordered, rewrite_fp
from swin_trt.quantization.ptq.statistics import channel_statistics
from swin_trt.settings import PTQ_METHODS, CalibrationRequest, FallbackRequest

CPU = torch.device("cpu")
BITS = {"weight_bits": 4, "activation_bits": 4}
CALIBRATION = {"num_calib_batch": 4, "calib_batchsz": 16, "ptq_iters": 30, "calibrator": "max"}


def outlier_model(seed: int = 0) -> torch.nn.Module:
    """A random swin_micro whose LayerNorms have the spread affine parameters of a trained one
    (a few channels far wider or offset), which is what the rewrites are for, and non-zero biases
    (timm starts them at zero, where a fold that forgets a bias would go unnoticed)."""
    torch.manual_seed(seed)
    model = build_model(MICRO).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(torch.randn_like(module.weight).mul(0.8).exp())
                module.bias.copy_(torch.randn_like(module.bias))
            elif isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.randn_like(module.bias).mul(0.1))
    return model


def images(count: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_layernorm_fold_is_exact_for_any_shift_and_ratio():
    model, x = outlier_model(), images()
    with torch.no_grad():
        expected = model(x)
        generator = torch.Generator().manual_seed(2)
        for norm, linear, can_shift in layernorm.layernorm_sites(model).values():
            channels = norm.weight.numel()
            offset = torch.randn(channels, generator=generator) if can_shift else torch.zeros(channels)
            layernorm.fold(norm, linear, offset, torch.randn(channels, generator=generator).exp())
        got = model(x)
    assert not torch.equal(got, expected)  # the arithmetic did change
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_attention_smoothing_fold_is_exact():
    model, x = outlier_model(), images()
    with torch.no_grad():
        expected = model(x)
        for block in smooth.blocks(model).values():
            smooth.fold_attention(block, torch.randn(block.attn.proj.in_features).exp())
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_ln_reparam_chooses_real_rewrites_and_stays_exact():
    """The chosen (alpha, shift) per LayerNorm lowers the site's quantized GEMM error and leaves FP32 alone."""
    model, x = outlier_model(), images(32)
    with torch.no_grad():
        expected = model(x)
    report = rewrite_fp(model, x, ("ln-reparam",), 4, 4, True)["ln-reparam"]["sites"]
    assert any(site["alpha"] > 0 or site["shift"] for site in report.values())
    assert all(site["error"] <= site["error_before"] for site in report.values())
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_smoothquant_reports_its_only_inexact_site():
    """Attention-output smoothing is exact; the GELU site's FP32 change is what the report says."""
    model, x = outlier_model(), images(32)
    statistics = channel_statistics(model, x, smooth.statistics_sites(model))
    report = smooth.smooth(model, statistics, 4, 4, True)
    assert all(site["error"] <= site["error_before"] for site in report.values())
    assert any(site["alpha"] is not None for name, site in report.items() if name.endswith("proj"))


def test_methods_are_ordered_and_named():
    assert ordered(["qwt", "smoothquant", "qwt"]) == ("smoothquant", "qwt")
    assert set(ordered(list(PTQ_METHODS))) == set(PTQ_METHODS)


@pytest.fixture(scope="module")
def fp_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("lowbit") / "outliers.pth"
    torch.save({"model": outlier_model().state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def calibrated(fp_checkpoint, digits_dir, tmp_path_factory):
    """One W4A4 trt-recipe calibration per method set, cached for the module."""
    found = {}

    def calibrate(methods: tuple[str, ...], fallback: FallbackRequest | None = None):
        key = (methods, fallback)
        if key not in found:
            request = CalibrationRequest(int8_mode="trt", ptq_methods=methods, **BITS, **CALIBRATION)
            output = tmp_path_factory.mktemp("_".join(methods) or "plain")
            found[key] = calibrate_checkpoint("swin_micro", None, fp_checkpoint, digits_dir, False, request, output, DistContext(), workers=0, fallback=fallback)
        return found[key]

    return calibrate


def block_output_error(model: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean squared error of the last Swin block's output against the FP model's."""
    with torch.no_grad():
        return float((model.layers(model.patch_embed(x)) - reference.layers(reference.patch_embed(x))).pow(2).mean())


@pytest.mark.parametrize("method", PTQ_METHODS)
def test_each_method_lowers_the_block_output_error(method, calibrated, fp_checkpoint, digits_dir):
    reference = open_model("swin_micro", None, fp_checkpoint).model
    probe = split_probe(reference, digits_dir, False, "val", 64, 64, 0, CPU)
    x = torch.cat(probe.batches)
    plain = block_output_error(calibrated(()).model, reference, x)
    improved = block_output_error(calibrated((method,)).model, reference, x)
    assert improved < plain, f"{method}: {improved:.4g} vs plain rounding {plain:.4g}"


def test_combined_checkpoint_reloads_bit_identically_and_exports_conformant(calibrated, digits_dir, run_cli, tmp_path):
    from swin_trt.parity.conformance import mismatches

    outcome = calibrated(tuple(PTQ_METHODS))
    stored = outcome.meta["quantization"]
    assert stored["ptq_methods"] == list(PTQ_METHODS) and set(stored["ptq"]["seconds"]) >= {"adaround", "qwt", "bias-correction"}
    reloaded = open_model(checkpoint=outcome.checkpoint).model
    original = outcome.model.state_dict()
    assert reloaded.state_dict().keys() == original.keys()
    for key, value in reloaded.state_dict().items():  # disabled quantizers hold NaN amax
        torch.testing.assert_close(value, original[key], rtol=0, atol=0, equal_nan=True, msg=key)
    x = images(4)
    with torch.no_grad():
        assert torch.equal(reloaded(x), outcome.model(x))
    graph = export_checkpoint(outcome.checkpoint, tmp_path / "lowbit.onnx")
    assert mismatches(reloaded, graph["onnx"]) == []
    code, out, err = run_cli("inspect", graph["onnx"], "--json", tmp_path / "inspect.json")
    assert code == 0, err
    assert json.loads((tmp_path / "inspect.json").read_text())["recipe_check"] == "passed"
    trt = export_checkpoint(outcome.checkpoint, tmp_path / "lowbit_trt.onnx", target="tensorrt")  # export lints it and raises on an error
    assert not [f for f in lint(onnx.load(trt["onnx"])) if f.severity == ERROR]


@pytest.mark.slow  # an export per method (about 13 s each): the fast suite exports the checkpoint of all five combined, above
@pytest.mark.parametrize("method", PTQ_METHODS)
def test_every_method_exports_a_conformant_graph(method, calibrated, tmp_path):
    from swin_trt.parity.conformance import mismatches

    outcome = calibrated((method,))
    graph = export_checkpoint(outcome.checkpoint, tmp_path / f"{method}.onnx")
    assert mismatches(open_model(checkpoint=outcome.checkpoint).model, graph["onnx"]) == []


def test_fallback_and_sensitivity_accept_the_new_checkpoints(calibrated, digits_dir, run_cli, tmp_path):
    outcome = calibrated(("ln-reparam", "bias-correction"), FallbackRequest(max_drop=0.0, images=100, ranking_images=50, granularity="block"))
    assert outcome.fallback is not None and outcome.fallback.drop <= 0.0
    assert outcome.meta["quantization"]["disabled"] == outcome.fallback.disabled
    code, out, err = run_cli("sensitivity", "--resume", outcome.checkpoint, "--data-path", digits_dir, "--max-batches", "1", "--batch-size", "64",
                             "--granularity", "block", "--json", tmp_path / "s.json")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["images"] == 64


def test_cli_lists_and_records_the_methods(fp_checkpoint, digits_dir, run_cli, tmp_path):
    code, out, _ = run_cli("calibrate", "--help")
    assert "{" + ",".join(PTQ_METHODS) + "}" in out.replace("\n", "").replace(" ", "")
    code, _, err = run_cli("calibrate", "--model", "swin_micro", "--resume", fp_checkpoint, "--data-path", digits_dir, "--ptq-method", "nope")
    assert code == 2 and "invalid choice" in err
    code, out, err = run_cli("calibrate", "--model", "swin_micro", "--resume", fp_checkpoint, "--data-path", digits_dir, "--num-calib-batch", "2",
                             "--calib-batchsz", "8", "--ptq-method", "qwt", "--ptq-method", "ln-reparam", "--skip-eval",
                             "--calib-output-path", tmp_path, "--json", tmp_path / "c.json")
    assert code == 0, err
    assert json.loads((tmp_path / "c.json").read_text())["ptq_methods"] == ["ln-reparam", "qwt"]
    assert open_model(checkpoint=tmp_path / "swin_micro_calib.pth").meta["quantization"]["ptq_methods"] == ["ln-reparam", "qwt"]
