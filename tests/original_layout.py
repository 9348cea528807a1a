"""The original Swin release's state-dict layout, written from the original code's module tree
(not from swin-trt's converter) so the converter is tested against an independent reference."""

from __future__ import annotations

import torch

from swin_trt.models.config import ModelConfig


def original_relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = torch.flatten(coords, 1)
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


def original_attn_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    img_mask = torch.zeros((1, resolution, resolution, 1))
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = count
            count += 1
    windows = img_mask.view(1, resolution // window, window, resolution // window, window, 1)
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def original_state_dict(config: ModelConfig, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of the original ``SwinTransformer`` for ``config``; values taken from ``source`` (a
    timm-layout state dict of the same weights), buffers computed as the original does."""
    out = {f"patch_embed.{p}.{t}": source[f"patch_embed.{p}.{t}"] for p in ("proj", "norm") for t in ("weight", "bias")}
    resolution = config.img_size // config.patch_size
    stages = len(config.depths)
    for stage, depth in enumerate(config.depths):
        window = min(config.window_size, resolution)
        for block in range(depth):
            prefix = f"layers.{stage}.blocks.{block}."
            for name in ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.qkv.weight",
                         "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                         "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
                out[prefix + name] = source[prefix + name]
            out[prefix + "attn.relative_position_index"] = original_relative_position_index(window)
            shift = 0 if resolution <= config.window_size else (window // 2 if block % 2 else 0)
            if shift:
                out[prefix + "attn_mask"] = original_attn_mask(resolution, window, shift)
        if stage < stages - 1:  # the original merges patches at the END of a stage
            for name in ("norm.weight", "norm.bias", "reduction.weight"):
                out[f"layers.{stage}.downsample.{name}"] = source[f"layers.{stage + 1}.downsample.{name}"]
            resolution //= 2
    out["norm.weight"], out["norm.bias"] = source["norm.weight"], source["norm.bias"]
    out["head.weight"], out["head.bias"] = source["head.fc.weight"], source["head.fc.bias"]
    return out
