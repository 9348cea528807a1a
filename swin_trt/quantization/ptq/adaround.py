"""``adaround``: weight rounding learned per unit against the FP unit's output (AdaRound's soft
rounding, optimised per block as BRECQ does), with the loss weighted by the diagonal Fisher
information of the unit's output.

Per linear layer of the unit, the weight range is first chosen per output channel by least
squared rounding error (max|W| wastes most of 4 bits' 15 levels on a few weights), then every
weight is ``s * clamp(floor(W / s) + h(V), qmin, qmax)`` with AdaRound's rectified sigmoid
h(V) in [0, 1], V initialised so that the soft weight equals W. Adam on V minimises

    mean(F * (unit_q(x_q) - unit_fp(x_fp))^2) / E_0  +  lambda * mean(1 - |2 h(V) - 1|^beta)

over random batches of the cached calibration inputs, beta annealed from 20 to 2 after a warm-up
without the regulariser (AdaRound's schedule), with the unit's activation quantizers on (they
are what the weights must compensate). E_0 is the loss of rounding to nearest, so lambda does not
depend on the unit's scale. The result is hard: round up where h >= 1/2. The weight stored is
``s * k`` with integer k, and the weight quantizer's amax is ``s * qmax``, so quantizing it again
gives k: ordinary integer weights.

The weighting: F = Fisher / mean(Fisher) + 1. The diagonal Fisher (squared gradient of the task
loss at the unit's output, per image and element) is BRECQ's, and FIMA-Q's diagonal term; FIMA-Q
adds a low-rank term and APHQ-ViT an average-perturbation Hessian, both at more cost than a
10-minute budget on 2 cores allows. The + 1 (plain MSE) is damping: on a few hundred training
images a well-fit model is confident, its Fisher is near zero for most of them, and the
undamped loss would ignore those images entirely.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from swin_trt.quantization.modules import QuantLinear
from swin_trt.quantization.ptq.common import mse_weight_amax
from swin_trt.quantization.quantizer import integer_range

NAME = "adaround"
ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the sigmoid
LR = 1e-2
REGULARISATION = 0.01
WARMUP = 0.2
BETA = (20.0, 2.0)
BATCH = 32


class SoftRounding(nn.Module):
    """The parametrisation ``weight -> s * clamp(floor(W / s) + h(V), qmin, qmax)``."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, num_bits: int):
        super().__init__()
        self.qmin, self.qmax = integer_range(num_bits)
        self.register_buffer("scale", scale)
        scaled = weight.detach() / scale
        self.register_buffer("floor", scaled.floor())
        rest = scaled - self.floor
        self.register_buffer("nearest_up", rest >= 0.5)  # where rounding to nearest goes up (ties aside)
        rest = rest.clamp(0.01, 0.99)
        self.logits = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.hard = False

    def rounding(self) -> torch.Tensor:
        return (torch.sigmoid(self.logits) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)

    def regulariser(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.rounding() - 1).abs().pow(beta)).mean()

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        up = (self.logits >= 0).to(self.floor.dtype) if self.hard else self.rounding()
        return (self.floor + up).clamp(self.qmin, self.qmax) * self.scale


def weighted_error(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    error = (output - target).pow(2)
    return (error * weights).mean() if weights is not None else error.mean()


def adaround_unit(unit: nn.Module, reference_unit: nn.Module, quantized_in: torch.Tensor, fp_in: torch.Tensor, fp_out: torch.Tensor,
                  fisher: torch.Tensor | None, iters: int = 200, seed: int = 0, **_: Any) -> dict[str, Any]:
    """Learn the rounding of every enabled weight quantizer of ``unit`` (in place)."""
    linears = {name: m for name, m in unit.named_modules() if isinstance(m, QuantLinear) and m.weight_quantizer.enabled}
    if not linears:
        return {}
    weights = None
    if fisher is not None:
        weights = fisher / fisher.mean().clamp(min=1e-30) + 1
    rounders = {}
    saved_grad = {name: p.requires_grad for name, p in unit.named_parameters()}
    unit.requires_grad_(False)
    for name, linear in linears.items():
        quantizer = linear.weight_quantizer
        quantizer.set_amax(mse_weight_amax(linear.weight.detach(), quantizer.num_bits, quantizer.per_channel))
        scale = quantizer.scale().detach()
        scale = scale.reshape(-1, 1) if quantizer.per_channel else scale
        rounders[name] = SoftRounding(linear.weight, scale, quantizer.num_bits)
        quantizer.enabled = False  # the parametrised weight is already on the grid
        parametrize.register_parametrization(linear, "weight", rounders[name])
    try:
        generator = torch.Generator().manual_seed(seed)
        probe = slice(0, min(len(quantized_in), 4 * BATCH))
        for rounder in rounders.values():
            rounder.hard = True
        with torch.no_grad():
            nearest = weighted_error(unit(quantized_in[probe]), fp_out[probe], None if weights is None else weights[probe])
        for rounder in rounders.values():
            rounder.hard = False
        norm = max(float(nearest), 1e-30)
        optimizer = torch.optim.Adam([r.logits for r in rounders.values()], lr=LR)
        warmup = int(WARMUP * iters)
        for step in range(iters):
            picked = torch.randint(len(quantized_in), (min(BATCH, len(quantized_in)),), generator=generator)
            loss = weighted_error(unit(quantized_in[picked]), fp_out[picked], None if weights is None else weights[picked]) / norm
            if step >= warmup:
                beta = BETA[0] + (BETA[1] - BETA[0]) * (step - warmup) / max(1, iters - warmup)
                loss = loss + REGULARISATION * sum(r.regulariser(beta) for r in rounders.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for rounder in rounders.values():
            rounder.hard = True
        with torch.no_grad():
            learned = weighted_error(unit(quantized_in[probe]), fp_out[probe], None if weights is None else weights[probe])
        flipped = sum(int(((r.logits >= 0) != r.nearest_up).sum()) for r in rounders.values())
        total = sum(r.floor.numel() for r in rounders.values())
    finally:
        for name, linear in linears.items():
            if parametrize.is_parametrized(linear, "weight"):
                parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)
            linear.weight_quantizer.enabled = True
        for name, parameter in unit.named_parameters():
            parameter.requires_grad_(saved_grad.get(name, True))
    return {"error_nearest": float(nearest), "error_learned": float(learned), "iters": iters, "flipped_fraction": flipped / total}
