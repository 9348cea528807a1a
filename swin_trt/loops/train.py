"""FP32 training: a plain, explicit loop in the style of torchvision's reference scripts.

QAT (``loops/qat.py``) shares its pieces: the parameter groups, the optimizer step with clipping
and the DDP wrapping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from swin_trt.console import format_duration, log, progress
from swin_trt.distributed import DistContext, all_reduce_sum
from swin_trt.errors import SwinTrtError
from swin_trt.settings import TrainRecipe

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: LossFn,
    context: DistContext,
    epoch: int,
    clip_grad: float | None = None,
) -> float:
    """One pass over ``loader``; returns the mean loss over all ranks.

    ``loss_fn(logits, targets, images)`` gets the images too, so a distillation loss can run its
    teacher on them.
    """
    model.train()
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    totals = torch.zeros(2, dtype=torch.float64, device=context.device)
    bar = progress(loader, desc=f"epoch {epoch + 1}", unit="batch", show=context.is_main, final=False)
    for step, (images, targets) in enumerate(bar):
        images = images.to(context.device, non_blocking=True)
        targets = targets.to(context.device, non_blocking=True)
        loss = loss_fn(model(images), targets, images)
        optimizer_step(model, loss, optimizer, clip_grad, f"epoch {epoch + 1}, batch {step + 1}", context)
        scheduler.step()
        totals[0] += loss.detach() * len(targets)
        totals[1] += len(targets)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    bar.close()
    all_reduce_sum(totals, context)
    return (totals[0] / totals[1].clamp(min=1)).item()


def optimizer_step(
    model: nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    clip_grad: float | None,
    where: str,
    context: DistContext,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Backward, grad-norm clipping and one optimizer step; a non-finite loss stops training
    with a message instead of silently filling the weights with NaN. With an fp16 ``scaler``
    the gradients are unscaled before clipping, so the clip norm means the same in every
    precision."""
    if not math.isfinite(loss.item()):
        rank = f" on rank {context.rank}" if context.enabled else ""
        raise SwinTrtError(f"training loss is {loss.item()} at {where}{rank}: lower the learning rate, or check the data and the initial weights")
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    if clip_grad:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as the original Swin recipe: no weight decay on norms, biases and
    relative-position-bias tables (nor on anything else one-dimensional, e.g. learned amax)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        skip = parameter.ndim <= 1 or name.endswith(".bias") or "relative_position_bias_table" in name
        (no_decay if skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: TrainRecipe, steps_per_epoch: int):
    """AdamW over :func:`parameter_groups` and a one-cycle LR schedule over all steps."""
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe.weight_decay), lr=recipe.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=recipe.lr,
        total_steps=max(1, recipe.epochs * steps_per_epoch),
        pct_start=recipe.warmup_fraction,
    )
    return optimizer, scheduler


def distributed_model(model: nn.Module, context: DistContext) -> nn.Module:
    """``model`` wrapped for DDP under torchrun (gradients averaged across ranks), else itself."""
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    recipe: TrainRecipe,
    context: DistContext,
    loss_fn: LossFn | None = None,
) -> list[float]:
    """Train ``model`` for ``recipe.epochs`` epochs (DDP when running under torchrun).

    Returns the mean training loss of each epoch. The default loss is label-smoothed cross
    entropy, as in the original recipe.
    """
    network = distributed_model(model.to(context.device), context)
    if loss_fn is None:
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

        def loss_fn(logits: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            return criterion(logits, targets)

    optimizer, scheduler = make_optimizer(model, recipe, len(train_loader))
    losses = []
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        epoch_start = time.perf_counter()
        losses.append(train_one_epoch(network, train_loader, optimizer, scheduler, loss_fn, context, epoch, recipe.clip_grad))
        if context.is_main:
            images = len(train_loader) * train_loader.batch_size * context.world_size  # drop_last: every batch is full
            log(epoch_line(epoch, recipe.epochs, losses[-1], scheduler.get_last_lr()[0], images, time.perf_counter() - epoch_start, time.perf_counter() - start))
    model.eval()
    return losses


def epoch_line(epoch: int, epochs: int, loss: float, lr: float, images: int, seconds: float, elapsed: float) -> str:
    """The log line at the end of each epoch (on terminals too, where the bars disappear):
    ``epoch 3/40: loss 0.5321, lr 1.20e-03, 1408 images in 4.1 s (343.4 images/s), ETA 2:31``"""
    line = (f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, lr {lr:.2e}, {images} images in {format_duration(seconds)} "
            f"({images / max(seconds, 1e-9):.1f} images/s)")
    if epoch + 1 < epochs:
        line += f", ETA {format_duration(elapsed / (epoch + 1) * (epochs - epoch - 1))}"
    return line
