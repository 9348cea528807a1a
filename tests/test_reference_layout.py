"""Checkpoints calibrated by the reference toolkit (pytorch-quantization ``_amax`` buffers under its module
names) load onto swin-trt's quantizers and evaluate exactly like the same amax set calibrated natively."""

from __future__ import annotations

import json
import math

import pytest
import torch
from reference_layout import reference_state_dict

import swin_trt
from swin_trt.api import open_model
from swin_trt.distributed import DistContext
from swin_trt.errors import SwinTrtError
from swin_trt.models.checkpoint import read_checkpoint
from swin_trt.models.zoo import MICRO
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.quantization.model import named_quantizers
from swin_trt.settings import CalibrationRequest


def _calibrate_all(checkpoint, digits_dir, out, per_channel):
    """The union of the amax of native mode-1 and trt-residual calibrations (every quantizer calibrated, as the
    reference's calibration leaves them), saved as native calibrated checkpoints of mode 1 and trt-residual: the same
    amax set, natively."""
    union, metas = {}, {}
    for mode in ("1", "trt-residual"):
        request = CalibrationRequest(int8_mode=mode, per_channel_weights=per_channel)
        state, metas[mode] = read_checkpoint(calibrate_checkpoint(None, None, checkpoint, digits_dir, False, request, out / mode, DistContext(),
                                                                  workers=0).checkpoint)
        for key, value in state.items():
            if key not in union or not torch.isfinite(union[key]).all():
                union[key] = value
    for key in [k for k in union if k.endswith("attn_residual_quantizer.amax")]:
        # the reference calibrates add1_residual_input_quantizer too; no swin-trt recipe enables its counterpart
        assert not torch.isfinite(union[key]).any()
        union[key] = union[key.replace("attn_residual", "mlp_residual")].clone()
    assert all(torch.isfinite(v).all() for k, v in union.items() if k.endswith("amax"))
    natives = {}
    for mode, meta in metas.items():
        natives[mode] = out / f"native_{mode}.pth"
        torch.save({"model": union, "meta": meta}, natives[mode])
    return natives, union


@pytest.fixture(scope="module")
def reference(trained_micro, digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    natives, union = _calibrate_all(trained_micro.checkpoint, digits_dir, out, per_channel=False)
    path = out / "swin_micro_calib.pth"
    torch.save(reference_state_dict(MICRO, union), path)  # the reference saves model.state_dict() bare
    return natives, union, path


def _batch(digits_dir):
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.transforms import eval_transform

    dataset = build_dataset(digits_dir, "val", eval_transform(MICRO.data))
    return torch.stack([dataset[i][0] for i in range(48)])


@pytest.mark.parametrize("mode", ["1", "2", "trt"])
def test_reference_checkpoint_equals_native(reference, digits_dir, mode):
    natives, _, path = reference
    loaded = open_model(model="swin_micro", checkpoint=path, int8_mode=mode)
    native = swin_trt.load_model(checkpoint=natives["trt-residual" if mode == "trt" else "1"], int8_mode=mode)
    assert loaded.quantized and loaded.meta["quantization"]["int8_mode"] == mode
    assert loaded.meta["quantization"]["per_channel_weights"] is False and loaded.meta["quantization"]["ignored_amax"] == 6 * 5
    theirs, ours = dict(named_quantizers(loaded.model)), dict(named_quantizers(native))
    assert theirs.keys() == ours.keys()
    for name, quantizer in ours.items():
        assert theirs[name].enabled == quantizer.enabled and theirs[name].per_channel == quantizer.per_channel
        if quantizer.enabled:
            assert torch.equal(theirs[name].amax, quantizer.amax), name
    images = _batch(digits_dir)
    with torch.no_grad():
        assert torch.equal(loaded.model(images), native(images))
        assert torch.equal(loaded.fp_model()(images), open_model(checkpoint=natives["1"]).fp_model()(images))


def test_eval_cli_takes_a_reference_checkpoint(reference, run_cli, digits_dir, tmp_path):
    natives, _, path = reference
    code, out, err = run_cli("eval", "--model", "swin_micro", "--resume", path, "--int8-mode", "1", "--data-path", digits_dir,
                             "--max-batches", "2", "--batch-size", "64", "--workers", "0", "--json", tmp_path / "ref.json")
    assert code == 0, err
    assert "reference-toolkit checkpoint" in out and "int8 mode 1 (--int8-mode), per-tensor weights" in out
    code, _, err = run_cli("eval", "--resume", natives["1"], "--data-path", digits_dir, "--max-batches", "2", "--batch-size", "64",
                           "--workers", "0", "--json", tmp_path / "native.json")
    assert code == 0, err
    assert json.loads((tmp_path / "ref.json").read_text())["top1"] == json.loads((tmp_path / "native.json").read_text())["top1"]


def test_per_channel_weight_amax_is_inferred(reference, digits_dir, tmp_path):
    """Activation statistics are collected with FP weights, so a per-channel calibration differs only in the weight amax
    (max |W| per output row): the per-tensor set with those is the per-channel set."""
    natives, union, _ = reference
    per_channel = {k: (union[k.replace("weight_quantizer.amax", "weight")].abs().amax(dim=1) if k.endswith("weight_quantizer.amax") else v)
                   for k, v in union.items()}
    state = reference_state_dict(MICRO, per_channel, per_channel=True)
    assert state["layers.0.blocks.0.mlp.fc1._weight_quantizer._amax"].shape == (128, 1)
    loaded = open_model(model="swin_micro", checkpoint=_save(state, tmp_path / "ref.pth"), int8_mode="trt")
    assert loaded.meta["quantization"]["per_channel_weights"] is True
    _, meta = read_checkpoint(natives["trt-residual"])
    native = tmp_path / "native.pth"
    torch.save({"model": per_channel, "meta": {**meta, "quantization": {**meta["quantization"], "per_channel_weights": True}}}, native)
    images = _batch(digits_dir)
    with torch.no_grad():
        assert torch.equal(loaded.model(images), swin_trt.load_model(checkpoint=native, int8_mode="trt")(images))


def test_int8_mode_inferred_only_when_unambiguous(reference, tmp_path):
    _, union, _ = reference
    state = reference_state_dict(MICRO, union)
    with pytest.raises(SwinTrtError, match=r"does not record its int8 mode, and its amax cover int8 modes 1, 2: pass --int8-mode"):
        open_model(model="swin_micro", checkpoint=_save(state, tmp_path / "full.pth"))
    # without the fc2 / reduction GEMM outputs and the residual operands only mode 2 is calibrated
    mode2 = {k: v for k, v in state.items() if not (("fc2._aftergemm" in k) or ("reduction._aftergemm" in k) or ("_residual_input" in k))}
    loaded = open_model(model="swin_micro", checkpoint=_save(mode2, tmp_path / "mode2.pth"))
    assert loaded.model.quant_recipe.name == "2" and "the only mode its amax cover" in loaded.notice
    with pytest.raises(SwinTrtError, match=r"lacks amax for quantizers of --int8-mode 1 \(its amax cover int8 modes: 2, trt\)"):
        open_model(model="swin_micro", checkpoint=tmp_path / "mode2.pth", int8_mode="1")


def test_every_quantizer_key_is_accounted_for(reference, run_cli, digits_dir, tmp_path):
    _, union, _ = reference
    state = reference_state_dict(MICRO, union)
    state["layers.0.blocks.0.mlp.fc1._input_quantizer.clip.clip_value_max"] = torch.tensor(2.0)  # a learned-amax parameter
    state["layers.1.blocks.1.attn.matmul_x_input_quantizer._amax"] = torch.tensor(1.0)
    code, _, err = run_cli("eval", "--model", "swin_micro", "--resume", _save(state, tmp_path / "odd.pth"), "--int8-mode", "1",
                           "--data-path", digits_dir, "--workers", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "2 quantizer entries have no swin-trt counterpart: layers.0.blocks.0.mlp.fc1._input_quantizer.clip.clip_value_max, " \
           "layers.1.blocks.1.attn.matmul_x_input_quantizer._amax" in err


def test_reference_checkpoint_needs_a_config_and_valid_amax(reference, tmp_path):
    _, union, path = reference
    with pytest.raises(SwinTrtError, match=r"stores no model config: pass its --cfg YAML \(or --model NAME\)"):
        open_model(checkpoint=path, int8_mode="1")
    state = reference_state_dict(MICRO, union)
    state["layers.0.blocks.0.attn.qkv._input_quantizer._amax"] = torch.tensor(math.nan)
    with pytest.raises(SwinTrtError, match=r"lacks amax for quantizers of --int8-mode 1 \(its amax cover int8 modes: none\)"):
        open_model(model="swin_micro", checkpoint=_save(state, tmp_path / "nan.pth"), int8_mode="1")
    state = reference_state_dict(MICRO, union)
    state["layers.0.blocks.0.attn.qkv._weight_quantizer._amax"] = torch.ones(96, 1)
    with pytest.raises(SwinTrtError, match=r"weight amax mix per-tensor and per-channel shapes"):
        open_model(model="swin_micro", checkpoint=_save(state, tmp_path / "mixed.pth"), int8_mode="1")


def _save(state, path):
    torch.save(state, path)
    return path
