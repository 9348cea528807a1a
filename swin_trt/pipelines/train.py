"""Stage ``train``: FP32 training of a reference model, or reuse of one trained with the same
config, recipe and data (the demo's cache)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swin_trt.api import check_architecture, load_model, resolve_config
from swin_trt.data.datasets import build_dataset, fingerprint
from swin_trt.data.loader import build_loader
from swin_trt.data.transforms import eval_transform, train_transform
from swin_trt.distributed import DistContext, barrier
from swin_trt.loops.evaluate import EvalResult, evaluate
from swin_trt.loops.train import fit
from swin_trt.models.checkpoint import load_state_dict, read_checkpoint, save_checkpoint
from swin_trt.models.config import ModelConfig
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config
from swin_trt.pipelines.evaluate import evaluate_split
from swin_trt.seeding import seed_all
from swin_trt.settings import TrainRecipe
from swin_trt.versions import package_versions


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

    state, meta = read_checkpoint(init_checkpoint) if init_checkpoint else ({}, {})
    config = resolve_config(model, cfg, meta)
    train_set = build_dataset(data_path, "train", train_transform(config.data), use_zip, config.num_classes)
    val_set = build_dataset(data_path, "val", eval_transform(config.data), use_zip, config.num_classes)

    seed_all(recipe.seed)
    network = build_model(config)
    if init_checkpoint:
        check_architecture(config, meta, str(init_checkpoint))
        load_state_dict(network, state, source=str(init_checkpoint))
    seed_all(recipe.seed + context.rank)  # augmentation and drop-path differ per rank
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
                "losses": losses,
                "versions": package_versions(),
            },
        )
    barrier(context)
    return TrainOutcome(config, checkpoint, losses, result)


def reuse_or_train(
    model: str,
    data_path: str | Path,
    output_dir: str | Path,
    recipe: TrainRecipe,
    context: DistContext,
    retrain: bool = False,
) -> tuple[TrainOutcome, bool]:
    """Train ``model`` unless ``<output_dir>/<model>.pth`` was made with the same config, recipe
    and data (then evaluate it again). Returns (outcome, reused)."""

    config = get_config(model)
    checkpoint = Path(output_dir) / f"{config.name}.pth"
    if not retrain and trained_as(checkpoint, config, recipe, data_path):
        result = evaluate_split(load_model(checkpoint=checkpoint), data_path, False, 128, context, workers=0)
        return TrainOutcome(config, checkpoint, list(read_checkpoint(checkpoint)[1]["losses"]), result), True
    return train_reference(model, None, None, data_path, False, output_dir, recipe, context), False


def trained_as(checkpoint: str | Path, config: ModelConfig, recipe: TrainRecipe, data_path: str | Path) -> bool:
    """Whether ``checkpoint`` exists and was trained (by :func:`train_reference`) from ``config`` with
    ``recipe`` on the train split of ``data_path``: then training again would only remake it."""
    if not Path(checkpoint).is_file():
        return False
    _, meta = read_checkpoint(checkpoint)
    # compared as configs, not dicts: a checkpoint saved before a config field existed holds that field's default
    return ("losses" in meta and "config" in meta and ModelConfig.from_dict(meta["config"]) == config and meta.get("recipe") == recipe.as_dict()
            and meta.get("data_fingerprint") == fingerprint(build_dataset(data_path, "train", None)))
