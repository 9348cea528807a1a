"""Which configuration a model is built with: a zoo name, an original YAML, or the config a
swin-trt checkpoint carries, and the check that a checkpoint was made for that architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
