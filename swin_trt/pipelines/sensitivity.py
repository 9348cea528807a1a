"""Stage ``sensitivity``: which images the probes hold in memory (a val prefix, or the held-out
train images after calibration's, for ``calibrate --auto-fallback`` and QAT's model selection),
and the JSON ``swin-trt sensitivity`` reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from swin_trt.data.datasets import build_dataset
from swin_trt.data.transforms import eval_transform
from swin_trt.errors import SwinTrtError
from swin_trt.quantization.sensitivity import GroupSensitivity, SensitivityProbe


def load_images(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of ``dataset`` as two tensors (the probe evaluates them many times)."""
    images, labels = [], []
    for batch, targets in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        images.append(batch)
        labels.append(targets)
    return torch.cat(images).to(device), torch.cat(labels).to(device)


def split_probe(model: nn.Module, data_path: str | Path, use_zip: bool, split: str, images: int | None, batch_size: int,
                workers: int, device: torch.device) -> SensitivityProbe:
    """A probe on the first ``images`` of a split (all of them with None), eval transform."""
    config = model.swin_trt_config
    dataset = build_dataset(data_path, split, eval_transform(config.data), use_zip, config.num_classes)
    subset = Subset(dataset, range(min(images, len(dataset)))) if images else dataset
    return SensitivityProbe(model.to(device), *load_images(subset, batch_size, workers, device), batch_size=batch_size)


def sensitivity_payload(probe: SensitivityProbe, results: list[GroupSensitivity], granularity: str) -> dict[str, Any]:
    """The JSON of ``swin-trt sensitivity``: one flat entry per group (``<group>`` -> its scores),
    the baselines, and the ranking (most sensitive first)."""
    return {
        "fp32_top1": probe.fp32.top1,
        "quant_top1": probe.quantized.top1,
        "quant_kl": probe.quantized.kl,
        "images": len(probe.labels),
        "granularity": granularity,
        "ranking": [result.group.name for result in results],
        **{result.group.name: result.as_json() for result in results},
    }


def held_out_indices(length: int, calibration_images: int, seed: int, count: int, user: str = "--auto-fallback") -> list[int]:
    """Train images the calibration did not see: calibration takes the first ``calibration_images``
    of the seeded permutation (``data.loader.ShardSampler``), these come right after them."""
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = order[calibration_images: calibration_images + count]
    if not held_out:
        raise SwinTrtError(f"{user} needs train images that calibration did not use, and calibration used all {length}: "
                           "lower --num-calib-batch or --calib-batchsz")
    return held_out
