"""The Python API for users' own scripts (the CLI is built on the same functions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swin_trt.errors import CheckpointError
from swin_trt.models.checkpoint import load_state_dict, read_checkpoint
from swin_trt.models.resolve import check_architecture, resolve_config
from swin_trt.models.swin import build_model
from swin_trt.quantization.checkpoint import fp_state, quantized_from_reference, quantized_from_state
from swin_trt.quantization.reference_layout import is_reference_layout

__all__ = ["LoadedModel", "check_architecture", "load_model", "open_model", "resolve_config"]


@dataclass(frozen=True)
class LoadedModel:
    """A model with the checkpoint it came from (state kept for FP comparisons)."""

    model: nn.Module
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    notice: str | None = None  # one line for the user (e.g. an int8 mode taken from a wider calibration)

    @property
    def quantized(self) -> bool:
        return "quantization" in self.meta

    def fp_model(self) -> nn.Module:
        """The same weights without quantizers (the FP32 reference of a calibrated model)."""
        if not self.quantized:
            return self.model
        network = build_model(self.model.swin_trt_config)
        load_state_dict(network, fp_state(self.state), source="FP weights")
        return network.eval()


def open_model(
    model: str | None = None,
    cfg: str | Path | None = None,
    checkpoint: str | Path | None = None,
    int8_mode: str | None = None,
) -> LoadedModel:
    """:func:`load_model`, keeping the checkpoint's state and metadata."""
    state, meta = read_checkpoint(checkpoint) if checkpoint is not None else ({}, {})
    if "quantization" in meta:
        network, notice = quantized_from_state(state, meta, str(checkpoint), model, cfg, int8_mode)
        return LoadedModel(network, state, meta, notice)
    if is_reference_layout(state):
        network, state, meta, notice = quantized_from_reference(state, str(checkpoint), model, cfg, int8_mode)
        return LoadedModel(network, state, meta, notice)
    if int8_mode is not None:
        what = checkpoint if checkpoint is not None else "random weights"
        raise CheckpointError(f"{what} is not a calibrated checkpoint (no amax), so --int8-mode cannot apply: run `swin-trt calibrate` first")
    config = resolve_config(model, cfg, meta)
    if checkpoint is not None:
        check_architecture(config, meta, str(checkpoint))
    network = build_model(config)
    if checkpoint is not None:
        load_state_dict(network, state, source=str(checkpoint))
    return LoadedModel(network.eval(), state, meta)


def load_model(
    model: str | None = None,
    cfg: str | Path | None = None,
    checkpoint: str | Path | None = None,
    int8_mode: str | None = None,
) -> nn.Module:
    """Build a Swin classifier and load its weights, in eval mode.

    ``model`` is a zoo name (``swin_tiny_patch4_window7_224``, ``swin_micro``, ...), ``cfg`` an
    original Swin YAML; with neither, a swin-trt checkpoint's own config is used. ``checkpoint``
    may be an original release ``.pth``, a timm state dict, a ``.safetensors`` file or a
    swin-trt checkpoint; ``None`` leaves the weights random. A calibrated checkpoint gives the
    fake-quant model (its stored int8 mode, or ``int8_mode`` when its amax cover that one); so does
    one calibrated by the reference toolkit (``_amax`` buffers), which needs ``model``/``cfg``
    and, since it does not record it, usually ``int8_mode``.
    Any key or shape mismatch raises :class:`~swin_trt.errors.CheckpointError`.
    """
    return open_model(model, cfg, checkpoint, int8_mode).model
