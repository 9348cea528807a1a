"""The model zoo: the original Swin release's checkpoints by file name, plus ``swin_micro``,
``swin_micro_fashion`` and ``swin_tiny_fashion``.

Each entry is a :class:`ModelConfig` (configs as data, as timm's ``default_cfgs``). A name is the
checkpoint's file name without ``.pth``, so ``--model swin_tiny_patch4_window7_224`` goes with
``--resume swin_tiny_patch4_window7_224.pth``.
"""

from __future__ import annotations

from swin_trt.errors import ConfigError
from swin_trt.models.config import DataConfig, ModelConfig, TrainAugment

IN22K_CLASSES = 21841

_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))

# swin_micro: a real Swin (shifted windows, relative position bias, PatchMerging) that trains
# from scratch on 2 CPU cores in minutes. Digits are small and centred, so training keeps the
# whole image (scale 0.7-1) and never mirrors it (a mirrored 2 is not a 2).
MICRO = ModelConfig(
    name="swin_micro",
    num_classes=10,
    patch_size=2,
    embed_dim=32,
    depths=(2, 2, 2),
    num_heads=(2, 4, 8),
    window_size=4,
    drop_path_rate=0.05,
    data=DataConfig(
        img_size=32,
        crop=False,
        train=TrainAugment(scale=(0.7, 1.0), hflip=0.0, auto_augment=None, color_jitter=0.0, reprob=0.0),
    ),
)

# swin_micro_fashion: the same network for Fashion-MNIST (`swin-trt data fashion-mnist`). A
# mirrored shoe or shirt is still one, so training flips; crops keep most of the centred item.
MICRO_FASHION = MICRO.replace(
    name="swin_micro_fashion",
    data=DataConfig(
        img_size=32,
        crop=False,
        train=TrainAugment(scale=(0.7, 1.0), hflip=0.5, auto_augment=None, color_jitter=0.0, reprob=0.0),
    ),
)


# swin_tiny_fashion: Swin-T's structure (four stages, depths 2-2-6-2, heads 3-6-12-24, three
# PatchMergings, shifted windows) at a width and input that train on all 60,000 Fashion-MNIST
# images on 2 CPU cores in about half an hour (6.9 M parameters, 352 s per epoch measured idle).
# Width 48 keeps Swin-T's head layout with 16 channels per head, a size TensorRT's fused INT8
# attention takes; the last stage (2x2 tokens) is smaller than the window, so it runs unshifted
# over the whole map, as Swin-T's last stage does at 224.
TINY_FASHION = MICRO_FASHION.replace(
    name="swin_tiny_fashion",
    embed_dim=48,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    drop_path_rate=0.1,
)


def _zoo() -> dict[str, ModelConfig]:
    zoo = {
        "swin_tiny_patch4_window7_224": ModelConfig("swin_tiny_patch4_window7_224", drop_path_rate=0.2, **_TINY),
        "swin_small_patch4_window7_224": ModelConfig("swin_small_patch4_window7_224", drop_path_rate=0.3, **_SMALL),
        MICRO.name: MICRO,
        MICRO_FASHION.name: MICRO_FASHION,
        TINY_FASHION.name: TINY_FASHION,
    }
    for family, arch, drop_path in (("base", _BASE, 0.5), ("large", _LARGE, 0.2)):
        for window, size in ((7, 224), (12, 384)):
            stem = f"swin_{family}_patch4_window{window}_{size}"
            data = DataConfig(img_size=size, crop=size < 384)
            common = dict(window_size=window, drop_path_rate=drop_path, data=data, **arch)
            zoo[stem] = ModelConfig(stem, **common)
            zoo[f"{stem}_22kto1k"] = ModelConfig(f"{stem}_22kto1k", **common)
            zoo[f"{stem}_22k"] = ModelConfig(f"{stem}_22k", num_classes=IN22K_CLASSES, **common)
    return zoo


ZOO: dict[str, ModelConfig] = _zoo()


def list_models() -> list[str]:
    return sorted(ZOO)


def get_config(name: str) -> ModelConfig:
    """The zoo entry called ``name`` (a trailing ``.pth`` is accepted)."""
    key = name.removesuffix(".pth")
    if key not in ZOO:
        close = [n for n in ZOO if key.split("_")[1:2] and key.split("_")[1] in n] or list_models()
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(close))}")
    return ZOO[key]
