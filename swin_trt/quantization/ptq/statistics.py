"""Per-channel statistics of FP activations on calibration images, for the FP rewrites
(``smoothquant``, ``ln-reparam``): each channel's min and max, and a fixed random sample of rows
on which a rewrite's strength is chosen."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from swin_trt.quantization.ptq.common import fake_quant, mse_amax

SAMPLE_ROWS = 4096  # token rows kept per site: enough to rank a handful of candidate strengths


@dataclass
class ChannelStatistics:
    low: torch.Tensor  # per-channel minimum
    high: torch.Tensor  # per-channel maximum
    sample: torch.Tensor  # [rows, channels]: tokens drawn from every batch

    @property
    def peak(self) -> torch.Tensor:
        return torch.maximum(self.high.abs(), self.low.abs())


@torch.no_grad()
def channel_statistics(model: nn.Module, images: torch.Tensor, sites: dict[str, tuple[nn.Module, str]], batch_size: int = 64,
                       rows: int = SAMPLE_ROWS, seed: int = 0) -> dict[str, ChannelStatistics]:
    """Run ``images`` through the FP ``model`` and gather, for every ``sites`` entry
    (name -> (module, "input" or "output")), that tensor's per-channel range (last dimension) and
    ``rows`` token rows sampled evenly over the batches."""
    generator = torch.Generator().manual_seed(seed)
    batches = list(torch.split(images, batch_size))
    per_batch = max(1, rows // len(batches))
    found: dict[str, ChannelStatistics] = {}

    def record(name: str, tensor: torch.Tensor) -> None:
        flat = tensor.detach().reshape(-1, tensor.shape[-1]).float()
        low, high = flat.amin(dim=0), flat.amax(dim=0)
        picked = flat[torch.randint(len(flat), (min(per_batch, len(flat)),), generator=generator)]
        if name not in found:
            found[name] = ChannelStatistics(low, high, picked)
            return
        entry = found[name]
        entry.low, entry.high = torch.minimum(entry.low, low), torch.maximum(entry.high, high)
        entry.sample = torch.cat([entry.sample, picked])

    hooks = []
    for name, (module, where) in sites.items():
        if where == "input":
            hooks.append(module.register_forward_pre_hook(lambda m, args, name=name: record(name, args[0])))
        else:
            hooks.append(module.register_forward_hook(lambda m, args, out, name=name: record(name, out)))
    try:
        model.eval()
        for batch in batches:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return found


def linear_site_error(inputs: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, weight_bits: int, activation_bits: int,
                      per_channel: bool, offset: torch.Tensor | None = None) -> float:
    """Mean squared error of a quantized GEMM ``Q(inputs) @ Q(weight)^T (+ offset)`` against
    ``target``: the activation per tensor at its MSE-optimal range (what a per-tensor quantizer
    can do at best), the weight at max|W| per output channel or per tensor (calibrate's rule)."""
    quantized_inputs = fake_quant(inputs, mse_amax(inputs, activation_bits), activation_bits)
    weight_amax = weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().max()
    output = quantized_inputs @ fake_quant(weight, weight_amax, weight_bits).T
    if offset is not None:
        output = output + offset
    return float((output - target).pow(2).mean())
