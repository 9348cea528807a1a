"""Run the chosen PTQ methods in their fixed order (``settings.PTQ_METHODS``): the FP rewrites
before quantizers are inserted, the unit-wise refinements after amax are set."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from swin_trt.errors import SwinTrtError
from swin_trt.quantization.ptq import adaround, bias, layernorm, qwt, smooth
from swin_trt.quantization.ptq.reconstruct import reconstruct
from swin_trt.quantization.ptq.statistics import channel_statistics
from swin_trt.settings import PTQ_METHODS

FP_METHODS = (smooth.NAME, layernorm.NAME)
UNIT_METHODS = {adaround.NAME: adaround.adaround_unit, qwt.NAME: qwt.compensate_unit, bias.NAME: bias.correct_unit}


def ordered(methods: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``methods`` without repeats, in the order they run; unknown names are an error."""
    unknown = sorted(set(methods) - set(PTQ_METHODS))
    if unknown:
        raise SwinTrtError(f"unknown --ptq-method {unknown[0]!r}; choose from {', '.join(PTQ_METHODS)}")
    return tuple(name for name in PTQ_METHODS if name in methods)


def rewrite_fp(model: nn.Module, images: torch.Tensor, methods: tuple[str, ...], weight_bits: int, activation_bits: int,
               per_channel: bool) -> dict[str, Any]:
    """smoothquant, then ln-reparam, on the FP ``model`` (in place). Each is exact in FP32 except
    smoothquant's GELU site (see :mod:`.smooth`). The statistics are gathered once: exact rewrites
    leave every other site's activations unchanged."""
    chosen = [name for name in FP_METHODS if name in methods]
    if not chosen:
        return {}
    started = time.perf_counter()
    sites = {}
    if smooth.NAME in chosen:
        sites.update(smooth.statistics_sites(model))
    if layernorm.NAME in chosen:
        sites.update(layernorm.statistics_sites(model))
    statistics = channel_statistics(model, images, sites)
    report: dict[str, Any] = {"statistics_seconds": time.perf_counter() - started}
    if smooth.NAME in chosen:
        began = time.perf_counter()
        report[smooth.NAME] = {"sites": smooth.smooth(model, statistics, weight_bits, activation_bits, per_channel), "seconds": time.perf_counter() - began}
    if layernorm.NAME in chosen:
        began = time.perf_counter()
        report[layernorm.NAME] = {"sites": layernorm.reparameterize(model, statistics, weight_bits, activation_bits, per_channel),
                                  "seconds": time.perf_counter() - began}
    return report


def refine_quantized(model: nn.Module, reference: nn.Module, images: torch.Tensor, labels: torch.Tensor, methods: tuple[str, ...],
                     iters: int, seed: int) -> dict[str, Any]:
    """adaround, qwt, bias-correction on the calibrated ``model`` (in place), unit by unit, against
    the FP ``reference`` (the model as it was before quantizers were inserted)."""
    chosen = [(name, UNIT_METHODS[name]) for name in UNIT_METHODS if name in methods]
    if not chosen:
        return {}
    reference = reference.eval()
    return reconstruct(model.eval(), reference, images, labels, chosen, needs_fisher=adaround.NAME in methods, iters=iters, seed=seed)
