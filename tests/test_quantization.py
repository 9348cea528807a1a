"""Quantizer placement, calibrated checkpoints, int8-mode rules and PTQ accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import swin_trt
from swin_trt.distributed import DistContext
from swin_trt.errors import SwinTrtError
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import MICRO
from swin_trt.pipelines.evaluate import evaluate_split
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.model import enabled_quantizers, named_quantizers, quantize_model
from swin_trt.quantization.quantizer import UncalibratedError
from swin_trt.quantization.recipes import CALIBRATORS, RECIPES, get_recipe
from swin_trt.seeding import seed_all

REPO = Path(__file__).resolve().parent.parent


def _expected_enabled(recipe: str) -> set[str]:
    """Written from the recipe definitions in the design notes, for swin_micro's 3 stages of 2
    blocks (timm names: PatchMerging sits at the start of stages 1 and 2)."""
    names = set()
    for stage in range(3):
        for block in range(2):
            prefix = f"layers.{stage}.blocks.{block}."
            for linear in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
                names |= {f"{prefix}{linear}.input_quantizer", f"{prefix}{linear}.weight_quantizer"}
                if recipe == "1" or (recipe == "2" and linear != "mlp.fc2"):
                    names.add(f"{prefix}{linear}.output_quantizer")
            names |= {f"{prefix}attn.{q}_quantizer" for q in ("q", "k", "v", "softmax")}
            if recipe == "trt-residual":
                names.add(f"{prefix}mlp_residual_quantizer")  # trt before 0.2; never the attention residual: see recipes.py
        if stage:
            names |= {f"layers.{stage}.downsample.reduction.{q}_quantizer" for q in ("input", "weight")}
            if recipe == "1":
                names.add(f"layers.{stage}.downsample.reduction.output_quantizer")
    return names


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_placement_is_exactly_the_recipe(recipe):
    model = quantize_model(build_model(MICRO), get_recipe(recipe))
    assert set(enabled_quantizers(model)) == _expected_enabled(recipe)
    assert not any(n.startswith(("patch_embed", "head", "norm.")) for n, _ in named_quantizers(model))


def test_weights_per_channel_by_default():
    model = quantize_model(build_model(MICRO), get_recipe("1"))
    assert model.layers[0].blocks[0].attn.qkv.weight_quantizer.amax.shape == (3 * 32,)
    reference = quantize_model(build_model(MICRO), get_recipe("1"), per_channel_weights=False)
    assert reference.layers[0].blocks[0].attn.qkv.weight_quantizer.amax.shape == ()


def test_uncalibrated_model_refuses_to_run():
    model = quantize_model(build_model(MICRO), get_recipe("1")).eval()
    with pytest.raises(UncalibratedError, match="layers.0.blocks.0.attn.qkv.input_quantizer is enabled but has no amax"):
        model(torch.randn(1, 3, 32, 32))


def test_fp_checkpoint_with_int8_mode_is_refused(run_cli, trained_micro, digits_dir):
    code, _, err = run_cli("eval", "--resume", trained_micro.checkpoint, "--int8-mode", "1", "--data-path", digits_dir)
    assert code == 2 and "not a calibrated checkpoint" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def calibrated(trained_micro, digits_dir, tmp_path_factory):
    """Mode-1 and mode-2 calibrations through the CLI, with their JSON results."""
    out = tmp_path_factory.mktemp("calib")
    results = {}
    for mode in ("1", "2"):
        args = ["calibrate", "--resume", trained_micro.checkpoint, "--data-path", digits_dir, "--int8-mode", mode,
                "--num-calib-batch", "10", "--calib-batchsz", "8", "--calib-output-path", out / mode, "--json", out / f"{mode}.json", "--workers", "0"]
        assert swin_trt.cli.main([str(a) for a in args]) == 0
        results[mode] = json.loads((out / f"{mode}.json").read_text())
    return results


def test_calibrate_json_and_exact_batch_count(calibrated):
    result = calibrated["1"]
    assert set(result) == {"checkpoint", "int8_mode", "calibrator", "images", "top1", "weight_bits", "activation_bits", "ptq_methods", "format"}
    assert result["format"] == "int8"
    assert result["images"] == 80  # exactly 10 batches of 8, not 11
    assert result["int8_mode"] == "1" and result["calibrator"] == "percentile"
    assert Path(result["checkpoint"]).name == "swin_micro_calib.pth"


def test_calibrated_checkpoint_round_trip(calibrated):
    from swin_trt.models.checkpoint import read_checkpoint

    path = calibrated["1"]["checkpoint"]
    state, meta = read_checkpoint(path)
    quant = meta["quantization"]
    assert quant["int8_mode"] == "1" and quant["per_channel_weights"] and quant["images"] == 80
    assert quant["calibrator"] == "percentile" and quant["percentile"] == 99.99 and len(quant["data_fingerprint"]) == 16
    first, second = swin_trt.load_model(checkpoint=path), swin_trt.load_model(checkpoint=path)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    amax = dict(named_quantizers(first))["layers.0.blocks.0.attn.q_quantizer"].amax
    assert torch.equal(amax, state["layers.0.blocks.0.attn.q_quantizer.amax"])


def test_int8_mode_coverage_rules(calibrated):
    from swin_trt.api import open_model

    loaded = open_model(checkpoint=calibrated["1"]["checkpoint"], int8_mode="2")
    assert "covers mode 2" in loaded.notice
    assert set(enabled_quantizers(loaded.model)) == _expected_enabled("2")
    with pytest.raises(SwinTrtError, match="calibrated for --int8-mode 2, whose amax do not cover --int8-mode 1"):
        open_model(checkpoint=calibrated["2"]["checkpoint"], int8_mode="1")
    # trt quantizes GEMM inputs and the attention matmuls only: a subset of mode 1 (amax do not depend on which others are on)
    loaded = open_model(checkpoint=calibrated["1"]["checkpoint"], int8_mode="trt")
    assert "covers mode trt" in loaded.notice and set(enabled_quantizers(loaded.model)) == _expected_enabled("trt")
    with pytest.raises(SwinTrtError, match="do not cover --int8-mode trt-residual"):
        open_model(checkpoint=calibrated["1"]["checkpoint"], int8_mode="trt-residual")


def test_a_trt_checkpoint_from_before_0_2_keeps_its_mlp_residual_quantizers(trained_micro, micro_trt, digits_dir, tmp_path):
    """Before 0.2 the trt recipe also quantized the MLP residual's skip operand: a checkpoint of
    then says ``trt`` and holds calibrated amax for those quantizers. It must load as it was
    calibrated (its engines' graphs have those Q/DQ; the gate compares them with a fresh export),
    while today's trt calibration leaves them off and uncalibrated."""
    from swin_trt.models.checkpoint import read_checkpoint
    from swin_trt.pipelines.calibrate import calibrate_checkpoint
    from swin_trt.pipelines.export import export_checkpoint
    from swin_trt.settings import CalibrationRequest

    residual_calibration = calibrate_checkpoint(None, None, trained_micro.checkpoint, digits_dir, False,
                                                CalibrationRequest(int8_mode="trt-residual", num_calib_batch=2, calib_batchsz=8), tmp_path, DistContext(), workers=0)
    residual = [f"layers.{s}.blocks.{b}.mlp_residual_quantizer" for s in range(3) for b in range(2)]
    state, meta = read_checkpoint(micro_trt.checkpoint)
    assert meta["quantization"]["int8_mode"] == "trt" and all(state[f"{name}.amax"].isnan().all() for name in residual)
    assert not set(residual) & set(enabled_quantizers(swin_trt.load_model(checkpoint=micro_trt.checkpoint)))

    state, meta = read_checkpoint(residual_calibration.checkpoint)
    assert all(torch.isfinite(state[f"{name}.amax"]).all() for name in residual)
    meta["quantization"]["int8_mode"] = "trt"  # what 0.1 wrote for this calibration
    torch.save({"model": state, "meta": meta}, tmp_path / "legacy.pth")
    legacy = swin_trt.load_model(checkpoint=tmp_path / "legacy.pth")
    assert legacy.quant_recipe.name == "trt-residual" and set(residual) <= set(enabled_quantizers(legacy))
    graph = export_checkpoint(tmp_path / "legacy.pth", tmp_path / "legacy.onnx")
    assert graph["int8_mode"] == "trt-residual" and graph["dq_nodes"] == micro_trt.graph["dq_nodes"] + 6


def test_eval_compare_fp(run_cli, calibrated, digits_dir, trained_micro, tmp_path):
    code, out, err = run_cli("eval", "--resume", calibrated["1"]["checkpoint"], "--int8-mode", "1", "--compare-fp",
                             "--data-path", digits_dir, "--json", tmp_path / "e.json", "--workers", "0")
    assert code == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["fp_top1"] == pytest.approx(trained_micro.result.top1)
    assert result["top1"] == pytest.approx(calibrated["1"]["top1"])
    assert "top-1 delta" in out


def test_quant_summary(run_cli, calibrated, tmp_path):
    code, out, _ = run_cli("quant-summary", "--resume", calibrated["2"]["checkpoint"], "--json", tmp_path / "q.json")
    assert code == 0
    amax = json.loads((tmp_path / "q.json").read_text())
    assert amax["layers.0.blocks.0.mlp.fc2.output_quantizer"] is None  # mode 2 leaves it off
    assert amax["layers.0.blocks.0.mlp.fc1.output_quantizer"] > 0
    assert len(amax["layers.0.blocks.0.mlp.fc1.weight_quantizer"]) == 128


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_distributed_calibration_equals_single_process(trained_micro, digits_dir, tmp_path):
    """2 gloo ranks x 2 batches of 8 and one process x 4 batches of 8 see the same 32 images."""
    common = ["--resume", str(trained_micro.checkpoint), "--data-path", str(digits_dir), "--calib-transform", "eval",
              "--calib-batchsz", "8", "--skip-eval", "--workers", "0", "--calibrator", "entropy"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "swin_trt", "calibrate",
                          *common, "--num-calib-batch", "2", "--calib-output-path", str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = swin_trt.cli.main(["calibrate", *common, "--num-calib-batch", "4", "--calib-output-path", str(tmp_path / "one")])
    assert single == 0
    from swin_trt.models.checkpoint import read_checkpoint

    ddp_state, ddp_meta = read_checkpoint(tmp_path / "ddp" / "swin_micro_calib.pth")
    one_state, one_meta = read_checkpoint(tmp_path / "one" / "swin_micro_calib.pth")
    assert ddp_meta["quantization"]["images"] == one_meta["quantization"]["images"] == 32
    amax_keys = [k for k in one_state if k.endswith("amax")]
    assert amax_keys and all(_same(ddp_state[k], one_state[k]) for k in amax_keys)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN (uncalibrated) matching NaN."""
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.slow  # a subprocess / torchrun run: make test-slow
def test_ptq_accuracy_every_recipe_and_calibrator(trained_micro, digits_dir):
    """Targets: every recipe x calibrator within 1.0 pt of FP32 top-1; percentile mode 1 within 0.5."""
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.loader import build_loader
    from swin_trt.data.transforms import train_transform

    context = DistContext()
    fp_top1 = trained_micro.result.top1
    dataset = build_dataset(digits_dir, "train", train_transform(MICRO.data))
    table = {}
    for recipe in sorted(RECIPES):
        model = quantize_model(swin_trt.load_model(checkpoint=trained_micro.checkpoint), get_recipe(recipe))
        seed_all(0)
        loader = build_loader(dataset, 8, context, workers=0, seed=0, shuffle_once=True)
        histograms, images = collect_statistics(model, loader, 10, context)
        assert images == 80
        for calibrator in CALIBRATORS:
            load_calib_amax(model, histograms, calibrator)
            table[recipe, calibrator] = evaluate_split(model, digits_dir, False, 180, context, workers=0).top1
    print("\nFP32", fp_top1, "\n" + "\n".join(f"{r} {c}: {t:.2f}" for (r, c), t in table.items()))
    for (recipe, calibrator), top1 in table.items():
        assert top1 >= fp_top1 - 1.0, (recipe, calibrator, top1, fp_top1)
    assert table["1", "percentile"] >= fp_top1 - 0.5
