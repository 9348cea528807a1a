"""The QAT loop: fine-tune a calibrated (fake-quant) model, resumable bit for bit.

A plain loop in the style of torchvision's reference scripts. What it adds to FP32 training:

- the reference's loss (mixup/cutmix soft targets + distillation, see ``distillation.py``);
- the reference's optimizer (AdamW, grad-norm clip 5) with the linear LR scaling rule, and a
  cosine schedule with warm-up or the reference's constant LR;
- AMP on CUDA (bf16 when the GPU has it, else fp16 with a gradient scaler); FP32 on the CPU;
- a state that resumes exactly: weights, optimizer, scheduler, scaler and position (epoch,
  step). Randomness is not saved but derived from the position (``data/resumable.py``), so a
  run stopped anywhere and resumed ends with the same weights as one that never stopped;
- SIGTERM (what schedulers and torchrun send first) finishes the current step, saves the state
  and stops; every rank stops at the same step.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader

from swin_trt.console import progress
from swin_trt.data.resumable import seed_step
from swin_trt.distributed import DistContext, all_reduce_sum
from swin_trt.errors import CheckpointError, SwinTrtError
from swin_trt.io import atomic_path
from swin_trt.loops.train import LossFn, optimizer_step, parameter_groups
from swin_trt.models.config import TrainAugment
from swin_trt.quantization.model import keep_amax_positive
from swin_trt.settings import QatRecipe


class TrainingInterrupted(SwinTrtError):
    """SIGTERM stopped training after the state was saved; the same command continues it."""


@dataclass
class QatProgress:
    """Where a run stands. ``step`` > 0 only when a run was stopped inside an epoch;
    ``loss_sum``/``images`` then hold that epoch's partial loss, summed over all ranks."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    images: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_criterion(augment: TrainAugment, num_classes: int, use_mixup: bool) -> tuple[nn.Module, Mixup | None]:
    """The reference's choice: with mixup/cutmix, soft-target cross-entropy (label smoothing is
    applied to the mixed targets); otherwise label-smoothed or plain cross-entropy."""
    if use_mixup and augment.mixup_active:
        mixup = Mixup(
            mixup_alpha=augment.mixup,
            cutmix_alpha=augment.cutmix,
            cutmix_minmax=augment.cutmix_minmax,
            prob=augment.mixup_prob,
            switch_prob=augment.mixup_switch_prob,
            mode=augment.mixup_mode,
            label_smoothing=augment.label_smoothing,
            num_classes=num_classes,
        )
        return SoftTargetCrossEntropy(), mixup
    if augment.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=augment.label_smoothing), None
    return nn.CrossEntropyLoss(), None


def lr_factor(recipe: QatRecipe, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimizer step: 1 (constant), or linear warm-up then cosine to ``min_lr_ratio``."""
    if recipe.lr_schedule == "constant":
        return lambda step: 1.0
    warmup = min(total_steps, max(1, round(recipe.warmup_fraction * total_steps)))

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total_steps - warmup)
        return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))

    return cosine


def make_optimizer(model: nn.Module, recipe: QatRecipe, world_size: int, total_steps: int):
    """AdamW (the reference's betas and eps) with the LR schedule; the peak LR is scaled by the
    global batch (``qat_lr * batch * world / 512``)."""
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe.weight_decay), lr=recipe.peak_lr(world_size), betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, total_steps))
    return optimizer, scheduler


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that have it, fp16 on older ones, none (FP32) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """An event that SIGTERM sets instead of killing the process (main thread only)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_agreed(stop: threading.Event, context: DistContext) -> bool:
    """True on every rank when any rank was asked to stop (ranks must leave at the same step)."""
    flag = torch.tensor([1.0 if stop.is_set() else 0.0], device=context.device)
    return bool(all_reduce_sum(flag, context).item() > 0)


@dataclass
class QatRun:
    """What one QAT run trains with. ``network`` is ``model`` wrapped for DDP when distributed."""

    model: nn.Module
    network: nn.Module
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: LossFn
    mixup: Mixup | None
    recipe: QatRecipe
    context: DistContext
    scaler: torch.amp.GradScaler | None = None

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.context.device)

    def state_dict(self, progress: QatProgress) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "progress": progress.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> QatProgress:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        return QatProgress(**state["progress"])


def train_one_epoch(run: QatRun, epoch: int, start_step: int, stop: threading.Event) -> tuple[torch.Tensor, bool]:
    """Train from ``start_step`` to the end of ``epoch`` or until a stop is agreed.

    Returns (this rank's [loss sum, images] since ``start_step``, stopped). Each step seeds its
    own randomness (mixup, drop path) from (seed, epoch, step, rank).
    """
    context, recipe = run.context, run.recipe
    run.network.train()
    run.loader.sampler.set_epoch(epoch, skip=start_step * recipe.batch_size)
    totals = torch.zeros(2, dtype=torch.float64, device=context.device)
    autocast = torch.autocast(context.device.type, dtype=run.amp_dtype) if run.amp_dtype else nullcontext()
    bar = progress(run.loader, desc=f"qat epoch {epoch + 1}/{recipe.epochs}", unit="batch", show=context.is_main)
    stopped = False
    for step, (images, targets) in enumerate(bar, start=start_step):
        images = images.to(context.device, non_blocking=True)
        targets = targets.to(context.device, non_blocking=True)
        seed_step(recipe.seed, epoch, step, context.rank)
        if run.mixup is not None:
            images, targets = run.mixup(images, targets)
        with autocast:
            loss = run.loss_fn(run.network(images), targets, images)
        optimizer_step(run.network, loss, run.optimizer, recipe.clip_grad, f"qat epoch {epoch + 1}, batch {step + 1}", context, run.scaler)
        run.scheduler.step()
        if recipe.learn_amax:
            keep_amax_positive(run.model)
        totals[0] += loss.detach().double() * len(images)
        totals[1] += len(images)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        if _stop_agreed(stop, context):
            stopped = True
            break
    bar.close()
    return totals, stopped


def fit(
    run: QatRun,
    position: QatProgress,
    evaluate: Callable[[int], dict[str, float]],
    save_state: Callable[[QatProgress], None],
    stop: threading.Event,
) -> QatProgress:
    """Train the remaining epochs. At every epoch end: evaluate (``evaluate(epochs done)`` returns
    the epoch's metrics, val top-1 as ``top1``) and save the state (``save_state`` writes on rank 0).
    On an agreed stop, save the position inside the epoch and raise :class:`TrainingInterrupted`."""
    for epoch in range(position.epoch, run.recipe.epochs):
        totals, stopped = train_one_epoch(run, epoch, position.step, stop)
        all_reduce_sum(totals, run.context)
        loss_sum, images = position.loss_sum + totals[0].item(), position.images + int(totals[1].item())
        if stopped:
            steps = position.step + int(totals[1].item()) // (run.recipe.batch_size * run.context.world_size)
            position = QatProgress(epoch, steps, loss_sum, images, position.history, position.baseline)
            save_state(position)
            raise TrainingInterrupted(f"stopped by SIGTERM at epoch {epoch + 1} step {steps}; the state is saved: run the same command again to continue")
        metrics = evaluate(epoch + 1)
        history = [*position.history, {"epoch": epoch + 1, "loss": loss_sum / max(images, 1), **metrics, "lr": run.scheduler.get_last_lr()[0]}]
        position = QatProgress(epoch + 1, 0, 0.0, 0, history, position.baseline)
        save_state(position)
    return position


def save_training_state(path: str | Path, model: nn.Module, meta: dict[str, Any], settings: dict[str, Any], run_state: dict[str, Any]) -> None:
    """The resumable state, atomically: ``{"model", "meta", "settings", "optimizer",
    "scheduler", "scaler", "progress"}``. ``model``/``meta`` make it a calibrated checkpoint
    too (``swin-trt eval`` reads it), ``settings`` is what a resumed run must match."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model": state, "meta": meta, "settings": settings, **run_state}, tmp)


def load_training_state(path: str | Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... here
        raise CheckpointError(f"{path}: cannot read the QAT state ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}): "
                              "pass --restart to start over") from None
    missing = {"model", "meta", "settings", "optimizer", "scheduler", "progress"} - set(state)
    if missing:
        raise CheckpointError(f"{path} is not a QAT state (no {', '.join(sorted(missing))}): pass --restart to start over, or another --output")
    return state
