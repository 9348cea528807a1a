"""Input pipelines of the original Swin release, from the model's :class:`DataConfig`."""

from __future__ import annotations

from timm.data import create_transform
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from swin_trt.models.config import DataConfig


def eval_transform(config: DataConfig) -> T.Compose:
    """Reference evaluation: bicubic resize to int(256/224*S) + centre crop S when ``crop`` is set
    (the 224 configs), otherwise a straight resize to SxS (the 384 configs); ImageNet mean/std."""
    interpolation = InterpolationMode(config.interpolation)
    size = config.img_size
    if config.crop:
        resize = [T.Resize(int(256 / 224 * size), interpolation=interpolation), T.CenterCrop(size)]
    else:
        resize = [T.Resize((size, size), interpolation=interpolation)]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(config.mean, config.std)])


def train_transform(config: DataConfig):
    """Reference training augmentation, built by timm as the original did: RandomResizedCrop,
    flip, RandAugment, colour jitter (only without RandAugment) and random erasing."""
    augment = config.train
    return create_transform(
        input_size=config.img_size,
        is_training=True,
        scale=augment.scale,
        hflip=augment.hflip,
        color_jitter=augment.color_jitter or None,
        auto_augment=augment.auto_augment,
        re_prob=augment.reprob,
        re_mode="pixel",
        re_count=1,
        interpolation=config.interpolation,
        mean=config.mean,
        std=config.std,
    )
