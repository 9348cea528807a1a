"""The QAT pipeline: load a calibrated model (and its teacher), train, evaluate, save.

Calibrate-then-train is the only order: QAT starts from a calibrated checkpoint, keeps its
scales (unless ``learn_amax``) and saves a calibrated checkpoint in the same format, with the
QAT provenance added, so ``eval``, ``export``, ``build`` and ``bench`` take it unchanged.

``<output>/<model>_qat_last.pth`` holds the resumable state, rewritten at every epoch end and on
SIGTERM; the same command run again continues from it (``restart`` starts over), and refuses a
state made with other settings. ``<output>/<model>_qat.pth`` is the result.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from swin_trt.api import open_model
from swin_trt.data.datasets import build_dataset, fingerprint
from swin_trt.data.loader import build_loader
from swin_trt.data.resumable import resumable_loader
from swin_trt.data.transforms import eval_transform, train_transform
from swin_trt.distributed import DistContext, barrier
from swin_trt.errors import CheckpointError, SwinTrtError
from swin_trt.loops import qat as loop
from swin_trt.loops.distillation import DistillationLoss, StudentTeacherLoss
from swin_trt.loops.evaluate import evaluate
from swin_trt.loops.teacher import OnnxruntimeTeacher, choose_teacher_runtime
from swin_trt.loops.train import distributed_model
from swin_trt.models.checkpoint import load_state_dict, read_checkpoint, save_checkpoint
from swin_trt.models.config import ModelConfig
from swin_trt.models.resolve import check_architecture
from swin_trt.models.swin import build_model
from swin_trt.onnx.hashing import file_sha256
from swin_trt.pipelines.sensitivity import held_out_indices, load_images
from swin_trt.quantization.checkpoint import check_format
from swin_trt.quantization.model import learn_amax, set_precision, use_compiled_kernel
from swin_trt.settings import QatRecipe
from swin_trt.versions import package_versions


@dataclass(frozen=True)
class QatOutcome:
    model: nn.Module
    checkpoint: Path
    state: Path
    recipe: QatRecipe
    progress: loop.QatProgress
    meta: dict[str, Any]
    selected_epoch: int | None = None  # the epoch kept (0: the calibrated model); None: the last, without selection

    @property
    def top1(self) -> float:
        """Val top-1 of the model saved: the selected epoch's (the PTQ baseline for epoch 0)."""
        if self.selected_epoch == 0:
            return self.progress.baseline["ptq_top1"]
        if self.selected_epoch is None:
            return self.progress.history[-1]["top1"]
        return next(h["top1"] for h in self.progress.history if h["epoch"] == self.selected_epoch)


def calibration_images(stored: dict[str, Any]) -> int:
    """How many train images the calibration used (its seeded order's first ones); 0 when the
    checkpoint does not say (a reference-toolkit one)."""
    try:
        return int(stored["num_calib_batch"]) * int(stored["calib_batchsz"]) * int(stored.get("world_size", 1))
    except KeyError:
        return 0


@torch.no_grad()
def correct_on(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Whether ``model`` classifies each image right (bool per image, on the CPU), on tensors held
    in memory: every rank computes the same answer."""
    was_training = model.training
    model.eval()
    correct = torch.cat([(model(part).argmax(dim=1) == target).cpu()
                         for part, target in zip(torch.split(images, batch_size), torch.split(labels, batch_size), strict=True)])
    model.train(was_training)
    return correct


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: the probability of at least ``wins`` of the ``wins + losses``
    images on which two models disagree going one way if both were equally good. Two models'
    top-1 on the same images differ by a handful of images from training noise alone; only the
    images where exactly one of them is right carry evidence, and their count is binomial(n, 1/2)
    under no difference (McNemar's exact test, one-sided)."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def load_teacher(path: str | Path, config: ModelConfig) -> nn.Module:
    """The FP teacher, built with the student's config (any supported checkpoint format)."""
    state, meta = read_checkpoint(path)
    if "quantization" in meta:
        raise CheckpointError(f"--teacher {path} is a calibrated checkpoint: pass the FP checkpoint it was calibrated from")
    check_architecture(config, meta, str(path))
    teacher = build_model(config)
    load_state_dict(teacher, state, source=str(path))
    return teacher


def _first_difference(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> str | None:
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found = _first_difference(old, new, f"{prefix}{key}.")
            if found:
                return found
        elif old != new:
            return f"{prefix}{key}: {old!r} there, {new!r} now"
    return None


def qat_checkpoint(
    model: str | None,
    cfg: str | Path | None,
    checkpoint: str | Path,
    data_path: str | Path,
    use_zip: bool,
    recipe: QatRecipe,
    output_dir: str | Path,
    context: DistContext,
    int8_mode: str | None = None,
    teacher: str | Path | None = None,
    restart: bool = False,
    workers: int = 2,
    compile_kernel: bool = False,
    baseline: dict[str, float] | None = None,
    quant_format: str | None = None,
    teacher_runtime: str = "auto",
) -> QatOutcome:
    """Fine-tune the calibrated ``checkpoint`` with ``recipe`` (DDP under torchrun) and save
    ``<output_dir>/<name>_qat.pth``; resumes from ``<output_dir>/<name>_qat_last.pth`` unless
    ``restart``. ``compile_kernel`` trains with the compiled fake-quant kernel (the same
    values, fewer passes over memory), when ``torch.compile`` works here. ``baseline``
    (``{"fp_top1", "ptq_top1"}`` on this val split) spares a caller that has just measured them
    two evaluations. ``quant_format`` (int8 or fp8; None: the checkpoint's) must be the
    checkpoint's format: QAT keeps the calibrated scales, which belong to one format.
    ``teacher_runtime`` (auto, torch, onnxruntime): where the distillation teacher's forward runs
    (:mod:`swin_trt.loops.teacher`; auto: onnxruntime on the CPU)."""
    loaded = open_model(model, cfg, checkpoint, int8_mode)
    if not loaded.quantized:
        raise SwinTrtError(f"{checkpoint} is not a calibrated checkpoint: QAT fine-tunes a calibrated model; "
                           f"run `swin-trt calibrate --resume {checkpoint}` first and pass its *_calib.pth to --resume")
    check_format(loaded.meta, quant_format, str(checkpoint))
    def note(line: str) -> None:
        if context.is_main:
            print(f"note: {line}", flush=True)

    if loaded.notice:
        note(loaded.notice)
    student = loaded.model
    config: ModelConfig = student.swin_trt_config
    stored = loaded.meta["quantization"]
    recipe = dataclasses.replace(
        recipe,
        weight_bits=recipe.weight_bits or stored.get("weight_bits", 8),
        activation_bits=recipe.activation_bits or stored.get("activation_bits", 8),
    )
    set_precision(student, recipe.weight_bits, recipe.activation_bits)

    train_set = build_dataset(data_path, "train", train_transform(config.data), use_zip, config.num_classes)
    val_set = build_dataset(data_path, "val", eval_transform(config.data), use_zip, config.num_classes)
    criterion, mixup = loop.make_criterion(config.data.train, config.num_classes, recipe.mixup)
    if mixup is not None and recipe.batch_size % 2:
        raise SwinTrtError(f"--batch-size {recipe.batch_size} is odd: mixup/cutmix pairs the images of a batch; use an even size or --no-mixup")
    held_out, selection_indices = None, []
    if recipe.selection_images:
        # model selection on train images neither calibration nor val saw (calibration's seeded order, next N), as --auto-fallback does
        selection_set = build_dataset(data_path, "train", eval_transform(config.data), use_zip, config.num_classes)
        selection_indices = held_out_indices(len(selection_set), calibration_images(stored), int(stored.get("seed", 0)), recipe.selection_images,
                                             "qat's --select-images")
        held_out = load_images(Subset(selection_set, selection_indices), recipe.batch_size, workers, context.device)
    # the held-out images stay out of training: scored on images an epoch has trained on, selection
    # would favour the epochs that fit them, not the ones that generalise
    training_images = training_indices(len(train_set), selection_indices)
    if len(training_images) // context.world_size < recipe.batch_size:
        raise SwinTrtError(f"the train split has {len(training_images)} images to train on (besides {len(selection_indices)} held out "
                           f"by --select-images), fewer than one batch of {recipe.batch_size} per process: lower --batch-size or --select-images")

    teacher_model, teacher_name, teacher_sha = None, None, None
    if recipe.distill:
        if teacher is not None:
            teacher_model, teacher_name, teacher_sha = load_teacher(teacher, config), str(teacher), file_sha256(teacher)
        else:
            teacher_model, teacher_name = loaded.fp_model(), f"FP weights of {checkpoint}"
            note(f"distilling from the FP weights stored in {checkpoint} (no --teacher given)")
        teacher_model.to(context.device).eval().requires_grad_(False)
        teacher_runtime = choose_teacher_runtime(teacher_runtime, context.device)
    elif teacher is not None:
        note("--teacher is ignored without --distill (as in the reference)")

    settings = {
        "recipe": recipe.as_dict(),
        "int8_mode": student.quant_recipe.name,
        "source_sha256": file_sha256(checkpoint),
        "teacher_sha256": teacher_sha,
        "world_size": context.world_size,
        "data_fingerprint": fingerprint(train_set),
        "config": config.to_dict(),
    }
    output_dir = Path(output_dir)
    state_path = output_dir / f"{config.name}_qat_last.pth"
    saved = None
    if state_path.is_file() and not restart:
        saved = loop.load_training_state(state_path)
        difference = _first_difference(saved["settings"], settings)
        if difference:
            raise SwinTrtError(f"{state_path} is from a run with other settings ({difference}): repeat that run's settings to continue it, "
                               "pass --restart to start over, or choose another --output")
        load_state_dict(student, saved["model"], source=str(state_path))
        note(f"resuming from {state_path}")

    if recipe.learn_amax:
        learn_amax(student, True)
    if compile_kernel:
        unusable = use_compiled_kernel(student)
        if unusable:
            note(f"{unusable}; training with the eager fake-quant kernel")
    student.to(context.device)
    loader = resumable_loader(Subset(train_set, training_images), recipe.batch_size, context, recipe.seed, workers)
    steps_per_epoch = len(loader)
    optimizer, scheduler = loop.make_optimizer(student, recipe, context.world_size, recipe.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if loop.autocast_dtype(context.device) == torch.float16 else None
    finished = saved is not None and saved["progress"]["epoch"] >= recipe.epochs  # the same command again: nothing left to train
    if teacher_model is not None and teacher_runtime == "onnxruntime" and not finished:  # exported only for a run that goes ahead and trains
        start = time.perf_counter()
        teacher_model = OnnxruntimeTeacher(teacher_model, torch.get_num_threads())
        note(f"the teacher runs in onnxruntime on the CPU (FP32, exported in {time.perf_counter() - start:.1f} s; "
             "--teacher-runtime torch keeps it in PyTorch)")
    distillation = DistillationLoss(recipe.distillation_loss_scale, recipe.temperature, config.num_classes) if teacher_model is not None else None
    loss_fn = StudentTeacherLoss(criterion, teacher_model, distillation)
    run = loop.QatRun(student, distributed_model(student, context), loader, optimizer, scheduler, loss_fn, mixup, recipe, context, scaler)
    val_loader = build_loader(val_set, recipe.batch_size, context, workers=workers)

    def val_top1(network: nn.Module) -> float:
        return evaluate(network.to(context.device), val_loader, context, description=f"{config.name} val").top1

    def held_out_correct() -> torch.Tensor:
        return correct_on(student, *held_out, batch_size=recipe.batch_size)

    best: dict[str, Any] | None = None  # {"epoch", "correct" (on the held-out images), "model" (state on the CPU)}
    if saved is not None:
        position = run.load_state_dict(saved)
        best = saved.get("best")
    else:
        position = loop.QatProgress(baseline=baseline or {"fp_top1": val_top1(loaded.fp_model()), "ptq_top1": val_top1(student)})
        if held_out is not None:
            correct = held_out_correct()
            position.baseline["held_out_ptq_top1"] = percent(correct)
            best = {"epoch": 0, "correct": correct, "model": _cpu_state(student)}

    def epoch_metrics(epoch: int) -> dict[str, float]:
        nonlocal best
        metrics = {"top1": val_top1(student)}
        if held_out is not None:
            correct = held_out_correct()
            metrics["held_out_top1"] = percent(correct)
            better, metrics["held_out_p"] = better_than_kept(correct, best["correct"], recipe.selection_alpha)
            if better:
                best = {"epoch": epoch, "correct": correct, "model": _cpu_state(student)}
        return metrics


    def meta_at(at: loop.QatProgress) -> dict[str, Any]:
        provenance = {
            "source_checkpoint": str(checkpoint),
            "source_sha256": settings["source_sha256"],
            "teacher": teacher_name,
            "teacher_sha256": teacher_sha,
            "teacher_runtime": teacher_runtime if teacher_model is not None else None,
            "settings": recipe.as_dict(),
            "world_size": context.world_size,
            "global_batch": recipe.batch_size * context.world_size,
            "peak_lr": recipe.peak_lr(context.world_size),
            "steps_per_epoch": steps_per_epoch,
            "train_images": len(training_images),
            "precision": str(loop.autocast_dtype(context.device) or torch.float32).removeprefix("torch."),
            "data_fingerprint": settings["data_fingerprint"],
            "epochs_done": at.epoch,
            "losses": [h["loss"] for h in at.history],
            "val_top1": [h["top1"] for h in at.history],
            **at.baseline,
        }
        if held_out is not None:
            provenance.update(held_out_images=len(held_out[1]), held_out_top1=[h.get("held_out_top1") for h in at.history],
                              selected_epoch=best["epoch"] if best else None)
        quantization = {**stored, "int8_mode": student.quant_recipe.name, "weight_bits": recipe.weight_bits,
                        "activation_bits": recipe.activation_bits, "qat": provenance}
        return {"config": config.to_dict(), "quantization": quantization, "versions": package_versions()}

    def save_state(at: loop.QatProgress) -> None:
        if context.is_main:
            loop.save_training_state(state_path, student, meta_at(at), settings, {**run.state_dict(at), **({"best": best} if best else {})})
            if at.step == 0 and at.history:
                last = at.history[-1]
                print(f"epoch {last['epoch']}/{recipe.epochs}: loss {last['loss']:.4f}, val top-1 {last['top1']:.2f} %, state saved to {state_path}", flush=True)
        barrier(context)

    with loop.stop_on_sigterm() as stop:
        position = loop.fit(run, position, epoch_metrics, save_state, stop)

    if recipe.learn_amax:
        learn_amax(student, False)
    if best is not None and best["epoch"] != position.epoch:
        load_state_dict(student, best["model"], source=f"epoch {best['epoch']} of this run")
        note(f"keeping epoch {best['epoch']} (held-out top-1 {percent(best['correct']):.2f} %): no epoch after it, up to {position.epoch}, was better "
             f"on {len(held_out[1])} held-out train images by a one-sided sign test at p < {recipe.selection_alpha:g}")
    meta = meta_at(position)
    result = output_dir / f"{config.name}_qat.pth"
    if context.is_main:
        save_checkpoint(result, student, meta)
    barrier(context)
    return QatOutcome(student.eval(), result, state_path, recipe, position, meta, best["epoch"] if best else None)


def training_indices(length: int, held_out: list[int]) -> list[int]:
    """The train split's images QAT trains on: all but the held-out ones that select the epoch."""
    excluded = set(held_out)
    return [index for index in range(length) if index not in excluded]


def better_than_kept(correct: torch.Tensor, kept: torch.Tensor, alpha: float) -> tuple[bool, float]:
    """Whether a model right on ``correct`` replaces the one kept (right on ``kept``, the same
    held-out images), and the sign test's p. Only beyond chance: a few images' difference either
    way is training noise, and keeping it would as often leave the test images below where QAT
    started as above (docs/qat.md)."""
    wins, losses = int((correct & ~kept).sum()), int((kept & ~correct).sum())
    p = sign_test_p(wins, losses)
    return wins > losses and p < alpha, p


def percent(correct: torch.Tensor) -> float:
    return 100.0 * int(correct.sum()) / correct.numel()


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
