"""Calibrated checkpoints: FP weights + every quantizer's amax + what produced them.

``{"model": state_dict (with *_quantizer.amax), "meta": {"config", "quantization", "versions"}}``.
The recipe (int8 mode), weight granularity and precision (``weight_bits`` / ``activation_bits``,
8 when absent) are stored, unlike the reference, so a checkpoint always rebuilds the exact model
it was calibrated as. The reference toolkit's own calibrated checkpoints (pytorch-quantization
``_amax`` buffers, :mod:`swin_trt.quantization.reference_layout`) load too, with what they do not
record taken from the user or inferred from the amax they hold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swin_trt.errors import SwinTrtError
from swin_trt.models.checkpoint import is_original_layout, load_state_dict, original_to_timm
from swin_trt.models.resolve import check_architecture, resolve_config
from swin_trt.models.swin import build_model
from swin_trt.quantization.model import apply_recipe, keep_in_higher_precision, quantize_model, set_format, set_precision, uncalibrated
from swin_trt.quantization.quantizer import DEFAULT_BITS
from swin_trt.quantization.recipes import RECIPES, REFERENCE_MODES, Recipe, get_recipe
from swin_trt.quantization.reference_layout import FORMAT, to_native

# ``quantization.format`` of a checkpoint: how its amax were calibrated (absent: int8, from before FP8)
DEFAULT_FORMAT = "int8"


def checkpoint_format(meta: dict[str, Any]) -> str:
    return meta["quantization"].get("format", DEFAULT_FORMAT)


def check_format(meta: dict[str, Any], requested: str | None, source: str) -> None:
    """Refuse a calibrated checkpoint whose format is not ``requested`` (None: any). Its amax were
    chosen for that format's grid (a reference-toolkit checkpoint's always for int8), and a QAT run
    keeps them: switching formats means calibrating again."""
    stored = checkpoint_format(meta)
    if requested is not None and requested != stored:
        what = "a reference-toolkit checkpoint (int8 only)" if meta["quantization"].get("source_format") == FORMAT else f"calibrated for {stored}"
        raise SwinTrtError(f"{source} is {what}, not --format {requested}: calibrate the FP checkpoint with --format {requested} "
                           f"(or drop --format to keep {stored})")

AMAX_SUFFIX = "_quantizer.amax"


def stored_recipe(int8_mode: str, state: dict[str, torch.Tensor]) -> Recipe:
    """The recipe a checkpoint was calibrated for. ``trt`` enabled the MLP residual's quantizer
    before 0.2, so a ``trt`` checkpoint whose state holds a calibrated (finite) amax for it was
    made then and is read as ``trt-residual``: the amax say what was calibrated, and its graphs
    keep the Q/DQ they had. (Today's ``trt`` leaves those quantizers uncalibrated: NaN.)"""
    recipe = get_recipe(int8_mode)
    residual_amax = [value for key, value in state.items() if key.endswith(f"mlp_residual{AMAX_SUFFIX}")]
    if recipe.name == "trt" and any(torch.isfinite(value).all() for value in residual_amax):
        return RECIPES["trt-residual"]
    return recipe


def fp_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The FP weights of a calibrated state dict (amax buffers dropped)."""
    return {k: v for k, v in state.items() if not k.endswith(AMAX_SUFFIX)}


def quantized_from_state(
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    source: str,
    model: str | None = None,
    cfg: str | Path | None = None,
    int8_mode: str | None = None,
) -> tuple[nn.Module, str | None]:
    """Rebuild a calibrated model exactly: its recipe, granularity, weights and amax.

    Asking for another int8 mode works when the stored amax cover it (a mode-1 calibration
    covers mode 2) and is reported in the returned notice line; otherwise it is an error: an
    enabled quantizer never runs without a calibrated amax. The quantizers a mixed-precision
    fallback keeps in higher precision (``quantization.disabled``) stay off in every mode.
    """
    quant = meta["quantization"]
    config = resolve_config(model, cfg, meta)
    check_architecture(config, meta, source)
    stored = stored_recipe(quant["int8_mode"], state)
    network = quantize_model(build_model(config), stored, per_channel_weights=quant["per_channel_weights"])
    load_state_dict(network, state, source=source)
    set_format(network, checkpoint_format(meta))
    set_precision(network, quant.get("weight_bits", DEFAULT_BITS), quant.get("activation_bits", DEFAULT_BITS))

    notice = None
    if int8_mode is not None and str(int8_mode) != stored.name:
        requested = get_recipe(int8_mode)
        if not requested.covered_by(stored):
            raise SwinTrtError(
                f"{source} was calibrated for --int8-mode {stored.name}, whose amax do not cover --int8-mode "
                f"{requested.name}: calibrate again with --int8-mode {requested.name}"
            )
        apply_recipe(network, requested)
        notice = f"using --int8-mode {requested.name} with the amax of the --int8-mode {stored.name} calibration (it covers mode {requested.name})"
    keep_in_higher_precision(network, list(quant.get("disabled", [])))
    missing = uncalibrated(network)
    if missing:
        raise SwinTrtError(f"{source}: {len(missing)} enabled quantizers have no amax (first: {missing[0]}): calibrate again")
    return network.eval(), notice


def quantized_from_reference(
    state: dict[str, torch.Tensor],
    source: str,
    model: str | None = None,
    cfg: str | Path | None = None,
    int8_mode: str | None = None,
) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any], str]:
    """A checkpoint calibrated or QAT-trained by the reference toolkit, as a calibrated model.

    The reference stores no config, int8 mode, granularity or precision: the architecture comes
    from ``model``/``cfg``, the granularity from the weight amax shapes, the precision is its
    forced 8 bits, and the int8 mode is ``int8_mode`` or, when the amax present cover exactly one
    recipe, that one. Returns (model, state in swin-trt's layout, metadata in swin-trt's
    calibrated format, a notice line saying what was inferred).
    """
    if not model and not cfg:
        raise SwinTrtError(f"{source} is a reference-toolkit calibrated checkpoint, which stores no model config: pass its --cfg YAML (or --model NAME)")
    config = resolve_config(model, cfg)
    converted = to_native(state, config, source)
    native = original_to_timm(converted.state) if is_original_layout(converted.state) else dict(converted.state)
    network = quantize_model(build_model(config), get_recipe("1"), per_channel_weights=converted.per_channel_weights)
    for key, value in network.state_dict().items():  # quantizers the checkpoint has no amax for stay uncalibrated
        if key.endswith(AMAX_SUFFIX):
            native.setdefault(key, torch.full_like(value, math.nan))
    load_state_dict(network, native, source=source)
    covered = [recipe for recipe in RECIPES.values() if _calibrated_for(network, recipe)]
    recipe = _reference_recipe(int8_mode, covered, source)
    apply_recipe(network, recipe)
    granularity = "per-channel" if converted.per_channel_weights else "per-tensor"
    meta = {
        "config": config.to_dict(),
        "quantization": {
            "int8_mode": recipe.name,
            "format": "int8",  # the reference toolkit predates FP8: its amax are for amax / 127 scales
            "per_channel_weights": converted.per_channel_weights,
            "weight_bits": DEFAULT_BITS,
            "activation_bits": DEFAULT_BITS,
            "calibrator": "unknown",
            "source_format": FORMAT,
            "source_checkpoint": source,
            "ignored_amax": len(converted.ignored),
        },
    }
    how = "--int8-mode" if int8_mode is not None else "the only mode its amax cover"
    notice = (f"{source}: reference-toolkit checkpoint ({FORMAT}): int8 mode {recipe.name} ({how}), {granularity} weights, 8-bit; "
              f"{len(converted.ignored)} amax of quantizers the reference always disables (softmax/LayerNorm inputs, residual-add local operands) not used")
    return network.eval(), native, meta, notice


def _calibrated_for(network: nn.Module, recipe: Recipe) -> bool:
    apply_recipe(network, recipe)
    return not uncalibrated(network)


def _reference_recipe(int8_mode: str | None, covered: list[Recipe], source: str) -> Recipe:
    names = ", ".join(recipe.name for recipe in covered) or "none"
    if int8_mode is not None:
        requested = get_recipe(int8_mode)
        if requested not in covered:
            raise SwinTrtError(f"{source} lacks amax for quantizers of --int8-mode {requested.name} (its amax cover int8 modes: {names})")
        return requested
    covered = [recipe for recipe in covered if recipe.name in REFERENCE_MODES]  # it never calibrated for a recipe it does not have (trt is a subset of 2)
    names = ", ".join(recipe.name for recipe in covered) or "none"
    if len(covered) != 1:
        why = "its amax cover none of them" if not covered else f"its amax cover int8 modes {names}"
        raise SwinTrtError(f"{source} is a reference-toolkit checkpoint, which does not record its int8 mode, and {why}: pass --int8-mode "
                           "(the mode it was calibrated or trained for)")
    return covered[0]
