"""The calibrated model, one unit (PatchMerging or Swin block) at a time: the methods that work
on quantized units (``adaround``, ``qwt``, ``bias-correction``) see the unit's input as the
quantized model computes it (everything before already fixed) and the FP model's output as the
target, as BRECQ does. Each unit's inputs and targets are cached for all calibration images, so a
unit costs its own forward passes only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swin_trt.quantization.sensitivity import model_units

UnitMethod = Callable[..., dict[str, Any]]
BATCH = 64  # images per forward pass over a cached unit input


@torch.no_grad()
def run_unit(unit: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    return torch.cat([unit(part) for part in torch.split(inputs, batch)])


def fisher_weights(reference: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: list[str], batch: int = 32) -> dict[str, torch.Tensor]:
    """The diagonal Fisher information of each unit's output: the squared gradient of the task
    loss (cross-entropy on the labels) with respect to every output element, per image (BRECQ's
    and FIMA-Q's diagonal term)."""
    modules = dict(reference.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(lambda m, a, out, name=name: outputs.__setitem__(name, out)) for name in names]
    squared: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    reference.eval()
    try:
        for part, targets in zip(torch.split(images, batch), torch.split(labels, batch), strict=True):
            outputs.clear()
            with torch.enable_grad():
                logits = reference(part.detach().clone().requires_grad_(True))
                grads = torch.autograd.grad(F.cross_entropy(logits, targets, reduction="sum"), [outputs[n] for n in names])
            for name, grad in zip(names, grads, strict=True):
                squared[name].append(grad.detach().pow(2))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in squared.items()}


def reconstruct(model: nn.Module, reference: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                methods: list[tuple[str, UnitMethod]], needs_fisher: bool, **options: Any) -> dict[str, Any]:
    """Apply ``methods`` ((name, fn(unit, reference_unit, q_in, fp_in, fp_out, fisher, **options)))
    to every unit of the calibrated ``model`` in forward order; ``reference`` is the FP model.
    Returns each method's per-unit report and seconds."""
    units = model_units(model)[1:-1]  # patch embedding and head are never quantized
    modules = dict(model.named_modules())
    reference_modules = dict(reference.named_modules())
    names = [name for name, _ in units]
    timings = {name: 0.0 for name, _ in methods}
    started = time.perf_counter()
    fisher = fisher_weights(reference, images, labels, names) if needs_fisher else {}
    fisher_seconds = time.perf_counter() - started
    reports: dict[str, dict[str, Any]] = {name: {} for name, _ in methods}
    quantized_in = fp_in = run_unit(reference.patch_embed, images)
    for name in names:
        unit, reference_unit = modules[name], reference_modules[name]
        fp_out = run_unit(reference_unit, fp_in)
        for method, apply in methods:
            began = time.perf_counter()
            reports[method][name] = apply(unit, reference_unit, quantized_in, fp_in, fp_out, fisher.get(name), **options)
            timings[method] += time.perf_counter() - began
        quantized_in, fp_in = run_unit(unit, quantized_in), fp_out
    if needs_fisher:
        timings["fisher"] = fisher_seconds
    return {"units": reports, "seconds": timings}
