"""``smoothquant``: SmoothQuant's migration of activation outliers into the weights, at the two
GEMM inputs where a per-tensor range is wasted on a few channels.

Per input channel c of the GEMM, s_c = max|X_c|^alpha / max|W_:,c|^(1 - alpha); the activation
becomes X / s and the weight W diag(s), the migration strength alpha (or none) chosen per layer on
calibration rows by the quantized GEMM's output error.

- Attention output -> proj (exact): attention output channel c is a softmax-weighted sum of v's
  channel c, so dividing the v rows of qkv's weight and bias by s divides it by s exactly;
  proj's weight columns take s.
- GELU output -> fc2 (approximate): nothing linear sits between fc1 and fc2, so 1/s goes into
  fc1's rows and GELU(z / s) * s stands for GELU(z): equal for z >> 0 (where the outliers are), not
  for z < 0. Only channels with more than the median strength are shrunk (s >= 1; the others
  stay exact), and the error of the approximation is part of what chooses alpha, so "no
  smoothing" wins wherever it does not pay; what it chose, and the FP32 change it costs, is
  reported (docs/lowbit.md).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from swin_trt.quantization.ptq.statistics import ChannelStatistics, linear_site_error

STRENGTHS = (0.25, 0.5, 0.75)
NAME = "smoothquant"


def blocks(model: nn.Module) -> dict[str, SwinTransformerBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SwinTransformerBlock)}


def statistics_sites(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    sites = {}
    for name, block in blocks(model).items():
        sites[f"{name}.attn.proj"] = (block.attn.proj, "input")
        sites[f"{name}.mlp.fc1"] = (block.mlp.fc1, "output")
    return sites


def smoothing_scales(peak: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's s = max|X|^alpha / max|W|^(1 - alpha) per input channel, geometric mean 1."""
    floor = 1e-5
    scales = peak.clamp(min=floor) ** alpha / weight.abs().amax(dim=0).clamp(min=floor) ** (1 - alpha)
    return scales / scales.log().mean().exp()


@torch.no_grad()
def fold_attention(block: SwinTransformerBlock, scales: torch.Tensor) -> None:
    """v rows of qkv / s, proj columns * s: the block computes the same function."""
    qkv, proj = block.attn.qkv, block.attn.proj
    channels = proj.in_features
    rows = slice(2 * channels, 3 * channels)
    qkv.weight[rows] /= scales[:, None]
    if qkv.bias is not None:
        qkv.bias[rows] /= scales
    proj.weight.mul_(scales)


@torch.no_grad()
def fold_mlp(block: SwinTransformerBlock, scales: torch.Tensor) -> None:
    """fc1 rows / s, fc2 columns * s (GELU(z / s) * s in place of GELU(z): approximate)."""
    fc1, fc2 = block.mlp.fc1, block.mlp.fc2
    fc1.weight /= scales[:, None]
    if fc1.bias is not None:
        fc1.bias /= scales
    fc2.weight.mul_(scales)


@torch.no_grad()
def smooth(model: nn.Module, statistics: dict[str, ChannelStatistics], weight_bits: int, activation_bits: int,
           per_channel: bool) -> dict[str, Any]:
    """Fold the best strength of both sites of every block into ``model`` (FP, in place)."""
    chosen = {}
    for name, block in blocks(model).items():
        # attention output -> proj
        stats, weight = statistics[f"{name}.attn.proj"], block.attn.proj.weight.detach()
        rows = stats.sample
        target = rows @ weight.T
        best = (linear_site_error(rows, weight, target, weight_bits, activation_bits, per_channel), None, None)
        baseline = best[0]
        for alpha in STRENGTHS:
            scales = smoothing_scales(stats.peak, weight, alpha)
            error = linear_site_error(rows / scales, weight * scales, target, weight_bits, activation_bits, per_channel)
            if error < best[0]:
                best = (error, alpha, scales)
        if best[1] is not None:
            fold_attention(block, best[2])
        chosen[f"{name}.attn.proj"] = {"alpha": best[1], "error": best[0], "error_before": baseline}

        # GELU output -> fc2
        stats, weight, act = statistics[f"{name}.mlp.fc1"], block.mlp.fc2.weight.detach(), block.mlp.act
        pre = stats.sample
        rows = act(pre)
        target = rows @ weight.T
        best = (linear_site_error(rows, weight, target, weight_bits, activation_bits, per_channel), None, None)
        baseline = best[0]
        peak = act(stats.high).abs()  # GELU is increasing above its minimum, so its output peaks at the channel's max
        for alpha in STRENGTHS:
            raw = smoothing_scales(peak, weight, alpha)
            scales = (raw / raw.median()).clamp(min=1.0)
            error = linear_site_error(act(pre / scales), weight * scales, target, weight_bits, activation_bits, per_channel)
            if error < best[0]:
                best = (error, alpha, scales)
        fp_change = 0.0
        if best[1] is not None:
            fp_change = float(((act(pre / best[2]) * best[2] - rows) @ weight.T).pow(2).mean())
            fold_mlp(block, best[2])
        chosen[f"{name}.mlp.fc2"] = {"alpha": best[1], "error": best[0], "error_before": baseline, "fp32_change": fp_change}
    return chosen
