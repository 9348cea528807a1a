"""``qwt``: QwT-v2's closed-form compensation, per output channel, of each unit's quantization
error, folded where it folds exactly.

QwT ("Quantization without Tears") adds a small linear layer that maps a quantized block's output
back towards the FP one; QwT-v2 restricts it to a per-channel affine map so that it merges into
existing parameters. In a Swin block the branch outputs enter the residual stream straight from
proj (through window-reverse and roll, which move tokens, not channels) and fc2, so an affine map
a * y + b of either branch folds exactly into that linear layer:

    W' = diag(a) W,  b' = a * bias + b,  and its per-channel weight amax * a

(with per-channel weights, ``Q(a_c W_c)`` at amax ``a_c amax_c`` is ``a_c Q(W_c)``: the same
integers, a new scale). Per channel, (a, b) is the least-squares fit, over every token of the
calibration images, of the branch's target (FP block's residual stream after the branch minus the
quantized skip operand) on the quantized branch output: first proj, then, with proj corrected,
fc2. A PatchMerging's reduction has no bias, so it gets the scale alone (a fit through 0). With
per-tensor weights a scale would change the integers, so only b is fitted (a = 1).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock
from torch import nn

from swin_trt.quantization.modules import QuantLinear
from swin_trt.quantization.ptq.reconstruct import run_unit

NAME = "qwt"
SCALE_LIMITS = (0.5, 2.0)  # a fit outside this range says the data do not determine the scale


def affine_fit(predictor: torch.Tensor, target: torch.Tensor, with_scale: bool, with_offset: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per last-dimension channel: (a, b) minimising sum((a * p + b - t)^2) (a = 1 or b = 0 when not fitted)."""
    p = predictor.reshape(-1, predictor.shape[-1]).double()
    t = target.reshape(-1, target.shape[-1]).double()
    if not with_scale:
        return torch.ones(p.shape[1], device=p.device), (t - p).mean(dim=0).float()
    if not with_offset:
        scale = (p * t).sum(dim=0) / (p * p).sum(dim=0).clamp(min=1e-30)
        return scale.clamp(*SCALE_LIMITS).float(), torch.zeros(p.shape[1], device=p.device)
    pm, tm = p.mean(dim=0), t.mean(dim=0)
    variance = (p - pm).pow(2).mean(dim=0)
    scale = ((p - pm) * (t - tm)).mean(dim=0) / variance.clamp(min=1e-30)
    scale = torch.where(variance > 1e-20, scale, torch.ones_like(scale)).clamp(*SCALE_LIMITS)
    return scale.float(), (tm - scale * pm).float()


@torch.no_grad()
def fold_affine(linear: QuantLinear, scale: torch.Tensor, offset: torch.Tensor) -> None:
    """``linear``'s output a * y + b, folded into its weight rows, weight amax and bias."""
    linear.weight.mul_(scale[:, None])
    if linear.weight_quantizer.per_channel:
        linear.weight_quantizer.amax.mul_(scale.abs())
    if linear.bias is not None:
        linear.bias.mul_(scale).add_(offset)
    elif bool(offset.any()):
        raise ValueError("an offset needs a bias")


def _fit_and_fold(linear: QuantLinear, predictor: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    per_channel = linear.weight_quantizer.per_channel or not linear.weight_quantizer.enabled
    scale, offset = affine_fit(predictor, target, with_scale=per_channel, with_offset=linear.bias is not None)
    before = float((predictor - target).pow(2).mean())
    after = float((predictor * scale + offset - target).pow(2).mean())
    fold_affine(linear, scale, offset)
    return {"error_before": before, "error_after": after, "scale_min": float(scale.min()), "scale_max": float(scale.max())}


def compensate_unit(unit: nn.Module, reference_unit: nn.Module, quantized_in: torch.Tensor, fp_in: torch.Tensor, fp_out: torch.Tensor,
                    fisher: torch.Tensor | None = None, **_: Any) -> dict[str, Any]:
    """Fit and fold the compensation of ``unit`` (a Swin block: proj, then fc2; a PatchMerging: its reduction)."""
    if isinstance(unit, PatchMerging):
        return {"reduction": _fit_and_fold(unit.reduction, run_unit(unit, quantized_in), fp_out)}
    if not isinstance(unit, SwinTransformerBlock):
        return {}
    report = {}
    attention = lambda x: unit._attn(unit.norm1(x))  # noqa: E731 -- the block's attention branch, as its forward runs it
    skip = run_unit(unit.attn_residual_quantizer, quantized_in)
    fp_mid = fp_in + run_unit(lambda x: reference_unit._attn(reference_unit.norm1(x)), fp_in)
    report["proj"] = _fit_and_fold(unit.attn.proj, run_unit(attention, quantized_in), fp_mid - skip)
    mid = skip + run_unit(attention, quantized_in)
    batch, height, width, channels = mid.shape
    mid = mid.reshape(batch, -1, channels)
    skip = run_unit(unit.mlp_residual_quantizer, mid)
    branch = run_unit(lambda x: unit.mlp(unit.norm2(x)), mid)
    report["fc2"] = _fit_and_fold(unit.mlp.fc2, branch, fp_out.reshape(batch, -1, channels) - skip)
    return report
