"""Stage ``eval``: top-1/top-5 of an FP or fake-quant model on a split, with its config's eval
transform."""

from __future__ import annotations

from pathlib import Path

import torch

from swin_trt.data.datasets import build_dataset
from swin_trt.data.loader import build_loader
from swin_trt.data.transforms import eval_transform
from swin_trt.distributed import DistContext
from swin_trt.loops.evaluate import EvalResult, evaluate


def evaluate_split(
    model: torch.nn.Module,
    data_path: str | Path,
    use_zip: bool,
    batch_size: int,
    context: DistContext,
    workers: int = 2,
    split: str = "val",
    max_batches: int | None = None,
) -> EvalResult:
    """Evaluate ``model`` (FP or fake-quant) on a split with its config's eval transform."""

    config = model.swin_trt_config
    dataset = build_dataset(data_path, split, eval_transform(config.data), use_zip, config.num_classes)
    loader = build_loader(dataset, batch_size, context, workers=workers)
    return evaluate(model.to(context.device), loader, context, max_batches, description=config.name)
