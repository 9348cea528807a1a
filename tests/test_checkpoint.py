"""Checkpoint formats load to identical logits; every mismatch is one clear error."""

from __future__ import annotations

import pytest
import torch
from original_layout import original_state_dict

from swin_trt.api import load_model
from swin_trt.errors import CheckpointError
from swin_trt.models.checkpoint import load_state_dict, read_checkpoint, save_checkpoint
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import MICRO


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(1)
    return build_model(MICRO).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, MICRO.img_size, MICRO.img_size, generator=torch.Generator().manual_seed(0))


def _logits(model, images):
    with torch.no_grad():
        return model(images)


def _fresh():
    torch.manual_seed(99)  # weights differ from source_model until loaded
    return build_model(MICRO).eval()


def test_original_release_layout_round_trip(tmp_path, source_model, images):
    original = original_state_dict(MICRO, source_model.state_dict())
    assert "layers.0.downsample.reduction.weight" in original and "head.weight" in original
    assert any(k.endswith("attn_mask") for k in original), "micro has shifted blocks: the release stores their masks"
    path = tmp_path / "swin_micro.pth"
    torch.save({"model": original}, path)
    loaded = load_model(model="swin_micro", checkpoint=path)
    assert torch.equal(_logits(loaded, images), _logits(source_model, images))
    assert not loaded.training


def test_zoo_geometry_matches_original_buffers():
    """Swin-T's timm buffers equal the original's (index and -100 shift masks) at every block."""
    config_model = build_model(__import__("swin_trt").get_config("swin_tiny_patch4_window7_224"))
    state = {k: v for k, v in config_model.state_dict().items()}
    original = original_state_dict(config_model.swin_trt_config, state)
    fresh_state = dict(original)
    load_state_dict(config_model, fresh_state)  # raises if any buffer differs


def test_timm_layout_and_safetensors_and_ddp_prefix(tmp_path, source_model, images):
    from safetensors.torch import save_file

    expected = _logits(source_model, images)
    state = source_model.state_dict()
    torch.save(state, tmp_path / "timm.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    for name in ("timm.pth", "w.safetensors", "ddp.pth"):
        assert torch.equal(_logits(load_model(model="swin_micro", checkpoint=tmp_path / name), images), expected), name


def test_swin_trt_checkpoint_carries_its_config(tmp_path, source_model, images):
    path = save_checkpoint(tmp_path / "m.pth", source_model, {"config": MICRO.to_dict()})
    assert not list(tmp_path.glob(".*partial"))
    loaded = load_model(checkpoint=path)  # no --model needed
    assert loaded.swin_trt_config == MICRO
    assert torch.equal(_logits(loaded, images), _logits(source_model, images))
    with pytest.raises(CheckpointError, match="was made for swin_micro.*pass --model swin_micro"):
        load_model(model="swin_tiny_patch4_window7_224", checkpoint=path)


def test_22k_head_on_1k_model_names_the_cause(tmp_path, source_model):
    state = dict(source_model.state_dict())
    state["head.fc.weight"] = torch.zeros(21841, state["head.fc.weight"].shape[1])
    state["head.fc.bias"] = torch.zeros(21841)
    torch.save({"model": state}, tmp_path / "m22k.pth")
    with pytest.raises(CheckpointError, match=r"wrong shape 2: head.fc.weight \[21841, 128\] vs model \[10, 128\].*ImageNet-22K head"):
        load_model(model="swin_micro", checkpoint=tmp_path / "m22k.pth")


def test_wrong_window_size_names_the_cause(tmp_path, source_model):
    state = dict(source_model.state_dict())
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    state[key] = torch.zeros((2 * 7 - 1) ** 2, 2)
    torch.save(state, tmp_path / "w7.pth")
    with pytest.raises(CheckpointError, match="window size differs \\(checkpoint 7, model 4\\)"):
        load_model(model="swin_micro", checkpoint=tmp_path / "w7.pth")


def test_missing_and_unexpected_keys_are_listed(tmp_path, source_model):
    state = dict(source_model.state_dict())
    del state["norm.weight"]
    state["layers.2.blocks.9.norm1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as error:
        load_model(model="swin_micro", checkpoint=tmp_path / "bad.pth")
    message = str(error.value)
    assert "missing 1: norm.weight" in message and "unexpected 1: layers.2.blocks.9.norm1.weight" in message
    assert "\n" not in message


def test_wrong_shift_mask_is_refused(tmp_path, source_model):
    original = original_state_dict(MICRO, source_model.state_dict())
    key = next(k for k in original if k.endswith("attn_mask"))
    original[key] = torch.zeros_like(original[key])
    torch.save({"model": original}, tmp_path / "mask.pth")
    with pytest.raises(CheckpointError, match="wrong buffers 1"):
        load_model(model="swin_micro", checkpoint=tmp_path / "mask.pth")


class TrainingConfig:
    """Stands in for the yacs config the original training script pickled into checkpoints."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": {}, "config": TrainingConfig()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_checkpoint(tmp_path / "pickled.pth")


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "absent.pth")
