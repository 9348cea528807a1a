"""The evaluation pipeline split in two: resize and crop in the DataLoader's workers, ending in
uint8 tensors; scaling and ImageNet normalisation on the device the model runs on.

Why: a float32 batch is 4x the bytes of its uint8 pixels, and on a GPU the host-to-device copy
and the workers' per-pixel float math are what an engine waits for at large batches. The device
half repeats torchvision's ``ToTensor`` + ``Normalize`` operation for operation (``/ 255``, then
``- mean``, then ``/ std``, each IEEE-rounded float32), so the input is bit-identical to
:func:`swin_trt.data.transforms.eval_transform`'s on every device (tested).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import transforms as T

from swin_trt.data.transforms import eval_transform
from swin_trt.models.config import DataConfig


def uint8_eval_transform(config: DataConfig) -> T.Compose:
    """:func:`eval_transform` up to its crop, then the pixels as a uint8 CHW tensor."""
    geometric = [t for t in eval_transform(config).transforms if not isinstance(t, (T.ToTensor, T.Normalize))]
    return T.Compose([*geometric, T.PILToTensor()])


class Normalize(nn.Module):
    """uint8 NCHW batch -> the model's float32 input, on whatever device the batch is."""

    def __init__(self, config: DataConfig):
        super().__init__()
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(torch.float32).div_(255).sub_(self.mean.to(pixels.device)).div_(self.std.to(pixels.device))
