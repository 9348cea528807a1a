"""Top-1 / top-5 evaluation, single-process or sharded over torchrun ranks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn
from torch.utils.data import DataLoader

from swin_trt.console import progress
from swin_trt.distributed import DistContext, all_reduce_sum
from swin_trt.float32 import exact_float32


@dataclass(frozen=True)
class EvalResult:
    top1: float
    top5: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, float | int]:
        return {"top1": self.top1, "top5": self.top5, "images": self.images, "images_per_s": self.images_per_s}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    context: DistContext,
    max_batches: int | None = None,
    description: str = "eval",
) -> EvalResult:
    """Accuracy over the loader's images (all ranks' shards together) and the forward throughput.

    Counts are summed across ranks, so a sharded run reports exactly the single-process figures.
    ``images_per_s`` covers data loading and forward passes of all ranks together. Runs in exact
    float32 on CUDA (TF32 off, :mod:`swin_trt.float32`): a fake-quant top-1 on the GPU is the CPU's.
    """
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=context.device)  # correct@1, correct@5, images
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    start = time.perf_counter()
    bar = progress(islice(loader, total), total=total, desc=description, unit="batch", show=context.is_main)  # islice: no batch loaded past the last
    with exact_float32():
        for images, targets in bar:
            logits = model(images.to(context.device, non_blocking=True))
            targets = targets.to(logits.device)
            topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = topk.eq(targets[:, None])
            counts[0] += hits[:, 0].sum()
            counts[1] += hits.any(dim=1).sum()
            counts[2] += len(targets)
    bar.close()
    all_reduce_sum(counts, context)
    seconds = time.perf_counter() - start
    correct1, correct5, images = counts.tolist()
    images = int(images)
    if images == 0:
        return EvalResult(0.0, 0.0, 0, seconds)
    return EvalResult(100.0 * correct1 / images, 100.0 * correct5 / images, images, seconds)
