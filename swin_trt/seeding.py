"""Seeding for reproducible augmentation: timm's random-resized crop draws from Python's
``random`` and torchvision's transforms from torch, so both are seeded."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
