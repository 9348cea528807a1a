"""Zoo entries, the shipped YAMLs and the original-format YAML parser agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from swin_trt.errors import ConfigError
from swin_trt.models.config import ModelConfig, config_from_yaml
from swin_trt.models.zoo import ZOO, get_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_shipped_yaml_equals_zoo_entry(name):
    assert config_from_yaml(CONFIGS / f"{name}.yaml") == ZOO[name]


def test_zoo_geometry_of_the_release():
    tiny, large384 = get_config("swin_tiny_patch4_window7_224.pth"), get_config("swin_large_patch4_window12_384_22k")
    assert (tiny.embed_dim, tiny.depths, tiny.num_heads, tiny.window_size, tiny.data.crop) == (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, True)
    assert (large384.embed_dim, large384.window_size, large384.img_size, large384.num_classes, large384.data.crop) == (192, 12, 384, 21841, False)


def test_original_repository_yaml_with_base(tmp_path):
    """The original repo's files: BASE inheritance, training-only sections ignored, defaults filled."""
    (tmp_path / "base.yaml").write_text("DATA:\n  IMG_SIZE: 384\nTRAIN:\n  EPOCHS: 30\n")
    (tmp_path / "swin_base_patch4_window12_384_finetune.yaml").write_text(
        "BASE: ['base.yaml']\nMODEL:\n  TYPE: swin\n  NAME: swin_base_patch4_window12_384\n  DROP_PATH_RATE: 0.5\n"
        "  SWIN:\n    EMBED_DIM: 128\n    DEPTHS: [ 2, 2, 18, 2 ]\n    NUM_HEADS: [ 4, 8, 16, 32 ]\n    WINDOW_SIZE: 12\n"
        "TRAIN:\n  BASE_LR: 2e-05\n"
    )
    config = config_from_yaml(tmp_path / "swin_base_patch4_window12_384_finetune.yaml")
    assert config.architecture() == ZOO["swin_base_patch4_window12_384"].architecture()
    assert config.data.crop is False  # 384 configs resize straight to 384x384


def test_config_round_trips_through_dict():
    for config in ZOO.values():
        assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "text, message",
    [
        ("MODEL:\n  SWIN:\n    EMBED_DIMS: 96\n", "unknown MODEL.SWIN keys \\['EMBED_DIMS'\\]"),
        ("MODEL:\n  TYPE: swinv2\n", "MODEL.TYPE 'swinv2' is not supported"),
        ("MODEL:\n  SWIN:\n    APE: true\n", "APE=True is not supported"),
        ("MODEL:\n  SWIN:\n    DEPTHS: [2, 2]\n", "DEPTHS has 2 stages but NUM_HEADS has 4"),
        ("MODEL: [unclosed\n", "line 2: not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_yaml_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_from_yaml(path)


def test_unknown_model_name_lists_choices():
    with pytest.raises(ConfigError, match="unknown model 'swin_tiny'.*swin_tiny_patch4_window7_224"):
        get_config("swin_tiny")
