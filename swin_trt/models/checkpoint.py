"""Read checkpoints in every supported format and load them strictly.

Formats: the original Swin release (``{"model": state_dict}``, downsampling at the *end* of each
stage, ``head.*``, persistent ``relative_position_index`` / ``attn_mask`` buffers), timm state
dicts (downsampling at the *start* of each stage, ``head.fc.*``), safetensors files of either
layout, and swin-trt's own checkpoints (``{"model": ..., "meta": ...}``).

timm ships a ``checkpoint_filter_fn`` for the original layout, but it also resizes position-bias
tables and patch embeddings silently; loading here must fail loudly on any shape difference, so
the key remap is done by hand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from swin_trt.errors import CheckpointError
from swin_trt.io import atomic_path
from swin_trt.models.zoo import IN22K_CLASSES

_ORIGINAL_BUFFERS = ("relative_position_index", "attn_mask")
_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "module")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, meta)`` from a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file.

    ``meta`` is swin-trt's metadata (empty for foreign checkpoints). Pickled Python objects are
    refused (``weights_only=True``): a checkpoint is data, not code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path))), {}
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = ("it contains pickled Python objects (a training config or optimizer?); re-save just the "
                      "weights: torch.save({'model': ckpt['model']}, path)")
        raise CheckpointError(f"{path}: cannot read checkpoint: {reason}") from None
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping):
        meta = dict(obj["meta"])
    state = _unwrap(obj, path)
    return state, meta


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) - 1:
            return _strip_prefix(tensors)
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    raise CheckpointError(f"{path}: no state dict found (expected tensors at the top level or under 'model' / 'state_dict')")


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that DistributedDataParallel adds when a wrapped model is saved."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def is_original_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for the original release's key layout.

    The original downsamples at the end of a stage (stage 0 owns a PatchMerging), timm at the start
    (stage 0 has none); the classifier is ``head`` there and ``head.fc`` in timm.
    """
    return any(k.startswith("layers.0.downsample.") for k in state) or "head.weight" in state


def original_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original-release keys to timm's; buffers are kept (they are checked, then dropped)."""
    renamed = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
        key = re.sub(r"^head\.", "head.fc.", key)
        renamed[key] = value
    return renamed


def _check_buffers(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Compare the original release's persistent buffers with the ones the model computes.

    They are derived from the window size and input resolution, so a difference means the
    checkpoint was made for another geometry; matching ones are removed from ``state``.
    """
    own = dict(model.named_buffers())
    wrong = []
    for key in [k for k in state if k.rsplit(".", 1)[-1] in _ORIGINAL_BUFFERS]:
        value = state.pop(key)
        mine = own.get(key)
        if mine is None:
            if value.numel() and key.endswith("attn_mask"):
                wrong.append(f"{key} (checkpoint has a shift mask, model block has none)")
            continue
        if mine.shape != value.shape:
            wrong.append(f"{key} {list(value.shape)} vs model {list(mine.shape)}")
        elif not torch.equal(mine.to(value.dtype), value):
            wrong.append(f"{key} (values differ: another window size or shift)")
    return wrong


def _window_of(table: torch.Tensor) -> int:
    return int((math.isqrt(table.shape[0]) + 1) // 2)


def _likely_cause(model: nn.Module, wrong: dict[str, tuple[list[int], list[int]]], missing: list[str], unexpected: list[str]) -> str:
    head = wrong.get("head.fc.weight")
    if head is not None:
        ckpt_classes, model_classes = head[0][0], head[1][0]
        if ckpt_classes == IN22K_CLASSES:
            return f"the checkpoint has an ImageNet-22K head ({IN22K_CLASSES} classes), the model {model_classes}: use the *_22k config, or the *_22kto1k checkpoint"
        if model_classes == IN22K_CLASSES:
            return f"the model has an ImageNet-22K head, the checkpoint {ckpt_classes} classes: use the config without _22k"
        return f"the checkpoint has {ckpt_classes} classes, the model {model_classes}: pick the --cfg/--model that matches the checkpoint"
    tables = [k for k in wrong if k.endswith("relative_position_bias_table")]
    if tables:
        ckpt_shape, model_shape = wrong[tables[0]]
        return (f"window size differs (checkpoint {_window_of(torch.empty(ckpt_shape))}, model "
                f"{_window_of(torch.empty(model_shape))}): pick the --cfg/--model that matches the checkpoint")
    if missing or unexpected or wrong:
        return "the checkpoint was made for a different architecture (depths, width or heads): pick the --cfg/--model that matches it"
    return ""


def _first(items: list[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` (any supported layout) into ``model``; every key must match exactly.

    On a mismatch, one error names the first missing, unexpected and wrong-shape keys and the
    likely cause.
    """
    state = dict(state)
    if is_original_layout(state):
        state = original_to_timm(state)
    wrong_buffers = _check_buffers(model, state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = {
        k: (list(state[k].shape), list(expected[k].shape))
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    }
    if missing or unexpected or wrong or wrong_buffers:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_first(unexpected)}")
        if wrong:
            parts.append(f"wrong shape {len(wrong)}: " + _first([f"{k} {c} vs model {m}" for k, (c, m) in wrong.items()]))
        if wrong_buffers:
            parts.append(f"wrong buffers {len(wrong_buffers)}: {_first(wrong_buffers)}")
        cause = _likely_cause(model, wrong, missing, unexpected)
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts) + (f". Likely cause: {cause}" if cause else ""))
    model.load_state_dict(state, strict=True)


def save_checkpoint(path: str | Path, model: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Write ``{"model": state_dict, "meta": meta}`` atomically (temporary file, then rename)."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in _unwrap_module(model).state_dict().items()}
    # through a Python file: a full disk then raises OSError (ENOSPC), not torch's opaque writer error
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        torch.save({"model": state, "meta": dict(meta)}, stream)
    return path


def _unwrap_module(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
