"""The fake-quantizer: 8-bit signed, symmetric, scale = amax / 127.

It has three states. Disabled: identity. Collecting: identity, and feeds the values it sees to a
statistics collector (calibration). Quantizing: ``x -> clamp(round(x / s), -128, 127) * s`` with
torch's fake-quant ops, whose gradient is the straight-through estimator clipped at the range
(what QAT needs), and which ONNX exporters map to QuantizeLinear/DequantizeLinear.

``amax`` is a buffer of fixed shape (a scalar, or one value per channel) that holds NaN until
calibrated, so checkpoints load strictly and an uncalibrated quantizer can never run silently
with a per-batch range: it raises instead.
"""

from __future__ import annotations

import torch
from torch import nn

from swin_trt.errors import SwinTrtError

QMIN, QMAX = -128, 127
BOUND = 127.0


class UncalibratedError(SwinTrtError):
    """An enabled quantizer has no amax."""


class TensorQuantizer(nn.Module):
    """Fake-quantizes a tensor per tensor (``axis=None``) or per channel along ``axis``."""

    def __init__(self, channels: int | None = None, axis: int | None = None):
        super().__init__()
        if (channels is None) != (axis is None):
            raise ValueError("per-channel quantizers need both channels and axis")
        self.axis = axis
        self.enabled = False
        self.collector = None  # set while calibrating
        self.register_buffer("amax", torch.full((channels,) if channels else (), float("nan")))

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.amax).all() and (self.amax > 0).all())

    def set_amax(self, amax: torch.Tensor | float) -> None:
        amax = torch.as_tensor(amax, dtype=torch.float32).reshape(self.amax.shape)
        # an all-zero channel (e.g. a pruned row) would give scale 0; any positive scale is exact for it
        self.amax.copy_(torch.where(amax > 0, amax, torch.full_like(amax, 1e-8)))

    def scale(self) -> torch.Tensor:
        return self.amax / BOUND

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.collector is not None:
            self.collector.collect(x.detach())
            return x
        if not self.calibrated:
            raise UncalibratedError(f"quantizer {self._name()} is enabled but has no amax: calibrate first (swin-trt calibrate)")
        scale = self.scale().to(x.device)
        if self.axis is None:
            zero = torch.zeros((), dtype=torch.int32, device=x.device)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, QMIN, QMAX)
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_channel_affine(x, scale, zero, self.axis % x.ndim, QMIN, QMAX)

    def _name(self) -> str:
        return getattr(self, "qualified_name", "?")

    def extra_repr(self) -> str:
        state = "collecting" if self.collector is not None else ("on" if self.enabled else "off")
        kind = f"per-channel axis={self.axis}" if self.per_channel else "per-tensor"
        return f"{kind}, {state}, calibrated={self.calibrated}"
