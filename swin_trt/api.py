"""The Python API for users' own scripts (the CLI is built on the same functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from swin_trt.errors import CheckpointError, ConfigError
from swin_trt.models.config import ModelConfig, config_from_yaml
from swin_trt.models.zoo import get_config


def resolve_config(model: str | None = None, cfg: str | Path | None = None, meta: dict[str, Any] | None = None) -> ModelConfig:
    """The model configuration from a zoo name, an original-format YAML, or a swin-trt checkpoint's
    metadata (in that order of precedence; exactly one of ``model`` / ``cfg`` may be given)."""
    if model and cfg:
        raise ConfigError("give either --model or --cfg, not both")
    if model:
        return get_config(model)
    if cfg:
        return config_from_yaml(cfg)
    if meta and "config" in meta:
        return ModelConfig.from_dict(meta["config"])
    raise ConfigError("no model given: pass --model NAME (see `swin-trt models`) or --cfg FILE.yaml")


def check_architecture(config: ModelConfig, meta: dict[str, Any], source: str) -> None:
    """A swin-trt checkpoint names the architecture it was trained with; a different one is an
    error that says which model to ask for (before any tensor shape is compared)."""
    stored = meta.get("config")
    if not stored:
        return
    theirs = ModelConfig.from_dict(stored)
    if theirs.architecture() != config.architecture():
        diff = {k: (v, config.architecture()[k]) for k, v in theirs.architecture().items() if config.architecture()[k] != v}
        detail = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{source} was made for {theirs.name} ({detail}): pass --model {theirs.name} or its --cfg")


def load_model(
    model: str | None = None,
    cfg: str | Path | None = None,
    checkpoint: str | Path | None = None,
) -> nn.Module:
    """Build a Swin classifier and load its weights, in eval mode.

    ``model`` is a zoo name (``swin_tiny_patch4_window7_224``, ``swin_micro``, ...), ``cfg`` an
    original Swin YAML; with neither, a swin-trt checkpoint's own config is used. ``checkpoint``
    may be an original release ``.pth``, a timm state dict, a ``.safetensors`` file or a
    swin-trt checkpoint; ``None`` leaves the weights random. Any key or shape mismatch raises
    :class:`~swin_trt.errors.CheckpointError`.
    """
    from swin_trt.models.checkpoint import load_state_dict, read_checkpoint
    from swin_trt.models.swin import build_model

    state, meta = read_checkpoint(checkpoint) if checkpoint is not None else ({}, {})
    config = resolve_config(model, cfg, meta)
    if checkpoint is not None:
        check_architecture(config, meta, str(checkpoint))
    network = build_model(config)
    if checkpoint is not None:
        load_state_dict(network, state, source=str(checkpoint))
    return network.eval()
