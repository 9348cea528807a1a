"""``ln-reparam``: RepQ-ViT's reparameterisation of post-LayerNorm activations, for a symmetric
per-tensor quantizer.

A LayerNorm output has channels of very different ranges (and offsets), so one per-tensor scale
wastes most levels on a few channels. RepQ-ViT calibrates them per channel and moves the
per-channel scales into the LayerNorm's affine parameters and the next linear layer's weights,
leaving a per-tensor quantizer. Here, per channel c with calibration range [lo_c, hi_c]:

    shift  d_c = (lo_c + hi_c) / 2  (only where the next linear has a bias to absorb it)
    ratio  r_c = (h_c / mean(h))^alpha,  h_c = half-width of the (shifted) range
    LayerNorm:  gamma' = gamma / r,  beta' = (beta - d) / r        -> output (y - d) / r
    linear:     W' = W diag(r),      b' = b + W d                  -> same output as before

which is exact in FP32 (RepQ-ViT uses per-channel zero points; a symmetric quantizer has none, so
the shift is what centres each channel). alpha = 1 is RepQ-ViT's full equalisation; the ratios
enlarge weight columns, which costs weight precision, so alpha (and whether to shift) is chosen
per LayerNorm on calibration rows by the quantized GEMM's output error.

Sites: each block's norm1 -> attn.qkv (through roll and window partition, which move tokens, not
channels), norm2 -> mlp.fc1, and PatchMerging's norm -> reduction (no bias: scale only). A block
whose windows pad the feature map gets no shift (padding adds zeros after the LayerNorm, which the
shift would turn into -d / r).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock
from torch import nn

from swin_trt.quantization.ptq.statistics import ChannelStatistics, linear_site_error

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
NAME = "ln-reparam"


def layernorm_sites(model: nn.Module) -> dict[str, tuple[nn.LayerNorm, nn.Linear, bool]]:
    """name -> (LayerNorm, the linear it feeds alone, whether a shift can be absorbed)."""
    sites = {}
    for name, module in model.named_modules():
        if isinstance(module, SwinTransformerBlock):
            height, width = module.input_resolution
            padded = height % module.window_size[0] or width % module.window_size[1]
            sites[f"{name}.norm1"] = (module.norm1, module.attn.qkv, module.attn.qkv.bias is not None and not padded)
            sites[f"{name}.norm2"] = (module.norm2, module.mlp.fc1, module.mlp.fc1.bias is not None)
        elif isinstance(module, PatchMerging):
            sites[f"{name}.norm"] = (module.norm, module.reduction, module.reduction.bias is not None)
    return sites


def statistics_sites(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    return {name: (norm, "output") for name, (norm, _, _) in layernorm_sites(model).items()}


def transform(low: torch.Tensor, high: torch.Tensor, alpha: float, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(d, r) of the module notes for a channel range [low, high]."""
    offset = (low + high) / 2 if shift else torch.zeros_like(low)
    half = torch.maximum(high - offset, offset - low)
    half = half.clamp(min=float(half.max()) * 1e-4 + 1e-12)
    return offset, (half / half.mean()) ** alpha


@torch.no_grad()
def fold(norm: nn.LayerNorm, linear: nn.Linear, offset: torch.Tensor, ratio: torch.Tensor) -> None:
    """LayerNorm output (y - d) / r, linear W diag(r) and b + W d: the same function in FP32."""
    if norm.weight is None or norm.bias is None:
        raise ValueError("ln-reparam needs LayerNorms with affine parameters")
    if bool(offset.any()):
        if linear.bias is None:
            raise ValueError("a shift needs a bias in the next linear layer")
        linear.bias += linear.weight @ offset
    norm.weight.div_(ratio)
    norm.bias.sub_(offset).div_(ratio)
    linear.weight.mul_(ratio)


@torch.no_grad()
def reparameterize(model: nn.Module, statistics: dict[str, ChannelStatistics], weight_bits: int, activation_bits: int,
                   per_channel: bool) -> dict[str, Any]:
    """Fold the best (alpha, shift) of every site into ``model`` (FP, in place); returns the choices."""
    chosen = {}
    for name, (norm, linear, can_shift) in layernorm_sites(model).items():
        stats = statistics[name]
        rows, weight = stats.sample, linear.weight.detach()
        target = rows @ weight.T
        best = None
        for shift in (False, True) if can_shift else (False,):
            for alpha in STRENGTHS:
                offset, ratio = transform(stats.low, stats.high, alpha, shift)
                error = linear_site_error((rows - offset) / ratio, weight * ratio, target, weight_bits, activation_bits, per_channel,
                                          weight @ offset)
                if best is None or error < best[0]:
                    best = (error, alpha, shift, offset, ratio)
        baseline = linear_site_error(rows, weight, target, weight_bits, activation_bits, per_channel)
        error, alpha, shift, offset, ratio = best
        fold(norm, linear, offset, ratio)
        chosen[name] = {"alpha": alpha, "shift": shift, "error": error, "error_before": baseline}
    return chosen
