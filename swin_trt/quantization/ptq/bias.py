"""``bias-correction``: the expected quantization error of every linear layer's output, per
output channel, added to its bias (Nagel et al.'s empirical bias correction, "Data-Free
Quantization", 2019, measured on calibration images instead of derived from BatchNorm).

Layer by layer in forward order within each unit, E[y_fp] - E[y_q] over all calibration tokens
is added to the bias, y_fp being the FP model's output of that layer (on FP inputs) and y_q the
quantized model's (on its own inputs, every earlier layer already corrected). So the correction
also absorbs the mean of the error the layer inherits. The bias is added after the GEMM (after its
output quantizer in mode 1), so the shift is exact. A layer without a bias (PatchMerging's
reduction) is left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from swin_trt.quantization.modules import QuantLinear
from swin_trt.quantization.ptq.reconstruct import run_unit

NAME = "bias-correction"


def output_means(unit: nn.Module, inputs: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The mean output of each named submodule of ``unit`` over every token of ``inputs``."""
    modules = dict(unit.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record(name: str, out: torch.Tensor) -> None:
        flat = out.detach().reshape(-1, out.shape[-1]).double()
        sums[name] = sums.get(name, 0) + flat.sum(dim=0)
        counts[name] = counts.get(name, 0) + len(flat)

    hooks = [modules[name].register_forward_hook(lambda m, a, out, name=name: record(name, out)) for name in names]
    try:
        run_unit(unit, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (sums[name] / counts[name]).float() for name in names}


@torch.no_grad()
def correct_unit(unit: nn.Module, reference_unit: nn.Module, quantized_in: torch.Tensor, fp_in: torch.Tensor, fp_out: torch.Tensor,
                 fisher: torch.Tensor | None = None, **_: Any) -> dict[str, Any]:
    names = [name for name, m in unit.named_modules() if isinstance(m, QuantLinear) and m.bias is not None]
    if not names:
        return {}
    targets = output_means(reference_unit, fp_in, names)
    report = {}
    for name in names:
        shift = targets[name] - output_means(unit, quantized_in, [name])[name]
        dict(unit.named_modules())[name].bias.add_(shift)
        report[name] = float(shift.abs().mean())
    return report
