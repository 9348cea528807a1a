"""Calibrated checkpoints: FP weights + every quantizer's amax + what produced them.

``{"model": state_dict (with *_quantizer.amax), "meta": {"config", "quantization", "versions"}}``.
The recipe (int8 mode), weight granularity and precision (``weight_bits`` / ``activation_bits``,
8 when absent) are stored, unlike the reference, so a checkpoint always rebuilds the exact model
it was calibrated as.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from swin_trt.errors import SwinTrtError
from swin_trt.models.checkpoint import load_state_dict
from swin_trt.models.resolve import check_architecture, resolve_config
from swin_trt.models.swin import build_model
from swin_trt.quantization.model import apply_recipe, quantize_model, set_precision, uncalibrated
from swin_trt.quantization.quantizer import DEFAULT_BITS
from swin_trt.quantization.recipes import get_recipe

AMAX_SUFFIX = "_quantizer.amax"


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
    enabled quantizer never runs without a calibrated amax.
    """
    quant = meta["quantization"]
    config = resolve_config(model, cfg, meta)
    check_architecture(config, meta, source)
    stored = get_recipe(quant["int8_mode"])
    network = quantize_model(build_model(config), stored, per_channel_weights=quant["per_channel_weights"])
    load_state_dict(network, state, source=source)
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
    missing = uncalibrated(network)
    if missing:
        raise SwinTrtError(f"{source}: {len(missing)} enabled quantizers have no amax (first: {missing[0]}): calibrate again")
    return network.eval(), notice
