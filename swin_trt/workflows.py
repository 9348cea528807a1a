"""Pipelines that chain the library's pieces; the CLI subcommands and the demo call these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from swin_trt.distributed import DistContext, barrier
from swin_trt.engine.evaluate import EvalResult
from swin_trt.engine.train import TrainRecipe
from swin_trt.models.config import ModelConfig


@dataclass(frozen=True)
class TrainOutcome:
    config: ModelConfig
    checkpoint: Path
    losses: list[float]
    result: EvalResult


def train_reference(
    model: str | None,
    cfg: str | Path | None,
    init_checkpoint: str | Path | None,
    data_path: str | Path,
    use_zip: bool,
    output_dir: str | Path,
    recipe: TrainRecipe,
    context: DistContext,
    workers: int = 2,
) -> TrainOutcome:
    """Train in FP32, evaluate on val, and save ``<output_dir>/<name>.pth`` (rank 0, atomically).

    The checkpoint's metadata records the config, the recipe, the data fingerprint and the
    package versions, so it can be loaded without ``--model`` and traced to what made it.
    """
    from swin_trt.api import check_architecture, resolve_config
    from swin_trt.data.datasets import build_dataset, fingerprint
    from swin_trt.data.loader import build_loader
    from swin_trt.data.transforms import eval_transform, train_transform
    from swin_trt.engine.evaluate import evaluate
    from swin_trt.engine.train import fit
    from swin_trt.models.checkpoint import load_state_dict, read_checkpoint, save_checkpoint
    from swin_trt.models.swin import build_model
    from swin_trt.provenance import package_versions

    state, meta = read_checkpoint(init_checkpoint) if init_checkpoint else ({}, {})
    config = resolve_config(model, cfg, meta)
    train_set = build_dataset(data_path, "train", train_transform(config.data), use_zip, config.num_classes)
    val_set = build_dataset(data_path, "val", eval_transform(config.data), use_zip, config.num_classes)

    torch.manual_seed(recipe.seed)
    network = build_model(config)
    if init_checkpoint:
        check_architecture(config, meta, str(init_checkpoint))
        load_state_dict(network, state, source=str(init_checkpoint))
    torch.manual_seed(recipe.seed + context.rank)  # augmentation and drop-path differ per rank
    train_loader = build_loader(train_set, recipe.batch_size, context, train=True, workers=workers, seed=recipe.seed)
    losses = fit(network, train_loader, recipe, context)
    val_loader = build_loader(val_set, max(recipe.batch_size, 128), context, workers=0)
    result = evaluate(network, val_loader, context, description="val")

    checkpoint = Path(output_dir) / f"{config.name}.pth"
    if context.is_main:
        save_checkpoint(
            checkpoint,
            network,
            {
                "config": config.to_dict(),
                "recipe": recipe.as_dict(),
                "data_fingerprint": fingerprint(train_set),
                "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
                "val_top1": result.top1,
                "versions": package_versions(),
            },
        )
    barrier(context)
    return TrainOutcome(config, checkpoint, losses, result)
