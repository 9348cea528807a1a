"""Small pieces the PTQ methods share: symmetric fake-quantization on plain tensors (for choosing
parameters on calibration data, not for the model, whose quantizers do their own) and the
MSE-optimal clipping search."""

from __future__ import annotations

import torch

from swin_trt.quantization.quantizer import AMAX_FLOOR, integer_range

CLIP_RATIOS = torch.linspace(0.3, 1.0, 15)  # candidate amax / max|x| of the clipping searches


def fake_quant(x: torch.Tensor, amax: torch.Tensor | float, bits: int) -> torch.Tensor:
    """``clamp(round(x / s), qmin, qmax) * s`` with s = amax / qmax (the model's quantizer's arithmetic)."""
    qmin, qmax = integer_range(bits)
    scale = torch.as_tensor(amax, dtype=x.dtype).clamp(min=AMAX_FLOOR) / qmax
    return (x / scale).round().clamp(qmin, qmax) * scale


def mse_amax(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The per-tensor amax among ``CLIP_RATIOS`` x max|x| with the least squared quantization error."""
    peak = x.abs().max().clamp(min=AMAX_FLOOR)
    errors = torch.stack([(fake_quant(x, peak * ratio, bits) - x).pow(2).sum() for ratio in CLIP_RATIOS])
    return peak * CLIP_RATIOS[int(errors.argmin())]


def mse_weight_amax(weight: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Weight amax (per output channel, or one) among ``CLIP_RATIOS`` x max|W| with the least
    squared rounding error: at 4 bits max|W| spends most of the 15 levels on a few large weights."""
    if not per_channel:
        return mse_amax(weight, bits)
    peak = weight.abs().amax(dim=1).clamp(min=AMAX_FLOOR)
    errors = torch.stack([(fake_quant(weight, (peak * ratio)[:, None], bits) - weight).pow(2).sum(dim=1) for ratio in CLIP_RATIOS])
    return peak * CLIP_RATIOS[errors.argmin(dim=0)]
