"""The fake-quantizer: signed, symmetric, ``num_bits`` wide (8 by default), scale = amax / qmax;
or FP8 E4M3 (``quant_format = "fp8"``), scale = amax / 448.

It has three states. Disabled: identity. Collecting: identity, and feeds the values it sees to a
statistics collector (calibration). Quantizing: ``x -> clamp(round(x / s), qmin, qmax) * s``
with qmin = -2**(n-1), qmax = 2**(n-1) - 1, and the straight-through estimator clipped at
±amax as its gradient (what QAT needs); during ONNX export the same arithmetic is emitted as
QuantizeLinear/DequantizeLinear. Fewer than 8 bits are a subset of int8, so they export as int8
Q/DQ with the narrower range. For QAT, amax can also be learned (``set_learn_amax``): it then
becomes a parameter under the same name, so checkpoints keep one format.

FP8 (E4M3, the ``float8e4m3fn`` of ONNX and ``torch.float8_e4m3fn``) replaces the integer grid by
the FP8 one: ``x -> fp8(clamp(x / s, -448, 448)) * s``, round to nearest even through torch's own
cast, saturating at +-448 as ONNX QuantizeLinear does with ``saturate=1`` (NaN stays NaN). The
straight-through estimator, the learned amax and export follow the same code paths.

``amax`` is a buffer of fixed shape (a scalar, or one value per channel) that holds NaN until
calibrated, so checkpoints load strictly and an uncalibrated quantizer can never run silently
with a per-batch range: it raises instead.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from swin_trt.errors import SwinTrtError

DEFAULT_BITS = 8
MIN_BITS, MAX_BITS = 4, 8
FORMATS = ("int8", "fp8")  # calibrate/qat --format: signed integers, or FP8 E4M3 (float8e4m3fn)
FP8_MAX = 448.0  # the largest finite float8e4m3fn: an FP8 quantizer's scale is amax / 448
FP8_DTYPE = torch.float8_e4m3fn
AMAX_FLOOR = 1e-8  # the smallest amax kept: any positive scale is exact for an all-zero channel


class UncalibratedError(SwinTrtError):
    """An enabled quantizer has no amax."""


class CalibrationError(SwinTrtError):
    """Calibration produced an amax that cannot be used (not finite, or from no data)."""


def integer_range(num_bits: int) -> tuple[int, int]:
    """(qmin, qmax) of signed ``num_bits`` integers: [-2**(n-1), 2**(n-1) - 1]."""
    if not MIN_BITS <= num_bits <= MAX_BITS:
        raise SwinTrtError(f"precision must be {MIN_BITS} to {MAX_BITS} bits, got {num_bits}")
    return -(1 << (num_bits - 1)), (1 << (num_bits - 1)) - 1


def fp8_levels(scaled: torch.Tensor) -> torch.Tensor:
    """``scaled`` rounded to float8e4m3fn (nearest even, subnormals kept) and widened back, saturated
    at +-448 first: ONNX QuantizeLinear's ``saturate=1`` (inf -> +-448, NaN -> NaN)."""
    return scaled.clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).to(scaled.dtype)


def quantize_levels(scaled: torch.Tensor, qmin: float, qmax: float, fp8: bool) -> torch.Tensor:
    """The grid value of ``x / s``: an integer in [qmin, qmax], or an FP8 E4M3 number."""
    return fp8_levels(scaled) if fp8 else scaled.round_().clamp_(qmin, qmax)


def straight_through_mask(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """Where the straight-through gradient passes: ``|x| <= amax``.

    On the CPU it is a float32 tensor of ones and zeros, elsewhere a bool tensor. PyTorch's CPU
    kernels that produce or consume bool tensors are several times slower than the float ones
    (2-core AVX2 EPYC, 9.6 M elements: ``|x| <= amax`` into bool 5.4 ms and ``torch.where`` on it
    18 ms, against 1.5 ms and 2.4 ms for a float mask and a multiply; ``benchmarks/qat_step.py``
    measures the training step). On a GPU both are one pass, and bool keeps the saved mask at a
    quarter of the memory."""
    magnitude = x.abs()
    if x.device.type == "cpu":
        return torch.le(magnitude, amax, out=magnitude)
    return magnitude <= amax


def pass_where(inside: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` where ``inside`` (a mask from :func:`straight_through_mask`), zero elsewhere."""
    return grad * inside if inside.is_floating_point() else torch.where(inside, grad, 0.0)


def clip_bound(amax: torch.Tensor) -> float:
    """The float b with ``-b < x < b`` exactly where ``|x| <= amax`` for float32 x: the next float32
    above amax. ``hardtanh_backward``'s bounds are strict and scalars (converted to the tensor's
    dtype in its kernel), so this bound makes it the straight-through gradient clipped at +-amax,
    ends included."""
    return float(torch.nextafter(amax.detach().float().reshape(()), torch.tensor(float("inf"))))


def saves_input(x: torch.Tensor, amax: torch.Tensor) -> bool:
    """Whether the straight-through backward works from the saved input (one fused CPU pass,
    ``hardtanh_backward``) instead of a mask made in the forward.

    On the CPU a mask costs the forward two passes over every activation (``|x|``, the compare)
    and an allocation, a third of the fake-quant forward of a QAT step; the input is a tensor
    of the same size that the backward can read directly. Only per-tensor quantizers
    (hardtanh's bounds are scalars): per-channel ones are the weights, a tenth of the values.
    On a GPU the mask stays: bool, a quarter of the input's memory, and one pass either way."""
    return x.device.type == "cpu" and amax.numel() == 1 and x.dtype == torch.float32


def straight_through(grad: torch.Tensor, saved: torch.Tensor, bound: float | None) -> torch.Tensor:
    """The straight-through gradient: ``grad`` where |x| <= amax, zero elsewhere, from the saved
    input and :func:`clip_bound` (``bound`` set) or from a :func:`straight_through_mask`.
    A NaN input passes its gradient on the first path and not on the second; either way the
    step is already lost to the NaN."""
    if bound is None:
        return pass_where(saved, grad)
    return torch.ops.aten.hardtanh_backward(grad, saved, -bound, bound)


def _quantize_with_mask(x: torch.Tensor, scale: torch.Tensor, amax: torch.Tensor, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fake-quantized values and the straight-through mask, written for ``torch.compile``."""
    return torch.round(x / scale).clamp(qmin, qmax) * scale, x.abs() <= amax


@functools.cache
def compiled_kernel():
    """:func:`_quantize_with_mask` compiled into one elementwise pass (6 passes and 3 temporaries
    in eager mode; inductor's C++ kernel divides and rounds exactly as eager does, which the
    tests check). Inputs are flattened to 1-D (per tensor) or 2-D (per output channel), so two
    dynamic-shape graphs cover every quantizer."""
    return torch.compile(_quantize_with_mask, dynamic=True, fullgraph=True)


def _fused_forward(x: torch.Tensor, scale: torch.Tensor, amax: torch.Tensor, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    if amax.numel() == 1:
        flat = (x.detach().reshape(-1), scale.reshape(()), amax.reshape(()))
    else:  # per output channel: amax [C, 1, ...] against a weight [C, ...]
        flat = (x.detach().reshape(x.shape[0], -1), scale.reshape(-1, 1), amax.reshape(-1, 1))
    values, inside = compiled_kernel()(*flat, qmin, qmax)
    return values.view(x.shape), inside.view(x.shape)


class _FakeQuantize(torch.autograd.Function):
    """``clamp(round(x / s), qmin, qmax) * s`` with the straight-through estimator: the gradient
    passes where |x| <= amax and is zero elsewhere, exactly as pytorch-quantization's
    ``FakeTensorQuantFunction`` (not wherever the rounded value happens to land in range).

    Written out instead of torch's ``fake_quantize_per_*_affine`` because those multiply by
    1/s, while ONNX QuantizeLinear divides by s: near rounding ties the two disagree, and the
    deployed graph must match this reference to the last bit wherever the math is the same.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, amax: torch.Tensor, qmin: int, qmax: int, fused: bool = False,
                fp8: bool = False) -> torch.Tensor:
        if not ctx.needs_input_grad[0]:  # evaluation: no mask (nothing will ask for the gradient)
            return quantize_levels(x / scale, qmin, qmax, fp8).mul_(scale)
        ctx.bound = None
        if fused and not fp8:  # the compiled kernel is the integer one
            values, inside = _fused_forward(x, scale, amax, qmin, qmax)
            ctx.save_for_backward(inside)
            return values
        if saves_input(x, amax):
            ctx.bound = clip_bound(amax)
            ctx.save_for_backward(x)
        else:
            ctx.save_for_backward(straight_through_mask(x, amax))
        return quantize_levels(x / scale, qmin, qmax, fp8).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (saved,) = ctx.saved_tensors
        return straight_through(grad, saved, ctx.bound), None, None, None, None, None, None


class _FakeQuantizeLearnedAmax(torch.autograd.Function):
    """The same forward as :class:`_FakeQuantize` (the same ops, so the same bits), plus a
    gradient for amax as in LSQ (Esser et al., "Learned Step Size Quantization", 2020).

    With s = amax / qmax and q = clamp(round(x / s)), ``y = q * s`` gives dy/ds = q - x/s where
    x is inside ±amax (round passed straight through) and q (the clipped level) outside; dy/damax
    is that over qmax, scaled by LSQ's 1 / sqrt(values per amax and example * qmax) so that the
    step size learns at the pace of the weights (per example: a sum over the batch must not
    change scale with the batch size, or N processes would not train like one). x keeps the
    clipped straight-through gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, amax: torch.Tensor, qmin: int, qmax: int, examples: int, fp8: bool = False) -> torch.Tensor:
        scale = amax / qmax
        ctx.save_for_backward(x, amax)
        ctx.qmin, ctx.qmax, ctx.examples, ctx.fp8 = qmin, qmax, examples, fp8
        return quantize_levels(x / scale, qmin, qmax, fp8).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, amax = ctx.saved_tensors
        scale = amax / ctx.qmax
        inside = straight_through_mask(x, amax)
        scaled = x / scale
        level = quantize_levels(scaled.clone(), ctx.qmin, ctx.qmax, ctx.fp8)
        lsq_scale = (x.numel() / ctx.examples / amax.numel() * ctx.qmax) ** -0.5
        grad_amax = (grad * (level - pass_where(inside, scaled))).sum_to_size(amax.shape) * (lsq_scale / ctx.qmax)
        return pass_where(inside, grad), grad_amax, None, None, None, None


class TensorQuantizer(nn.Module):
    """Fake-quantizes a tensor per tensor (``axis=None``) or per channel along ``axis``."""

    def __init__(self, channels: int | None = None, axis: int | None = None, num_bits: int = DEFAULT_BITS):
        super().__init__()
        if (channels is None) != (axis is None):
            raise ValueError("per-channel quantizers need both channels and axis")
        self.axis = axis
        self._quant_format = "int8"
        self.num_bits = num_bits
        self.enabled = False
        self.collector = None  # set while calibrating
        self.exporting = False  # set while exporting to ONNX (see swin_trt.onnx.export.export_mode)
        self.fused = False  # training forward through the compiled one-pass kernel (see compiled_kernel)
        self.export_scale = 0.0  # per-tensor scale as a Python float, for export
        self.scale_dtype: torch.dtype | None = None  # torch.float16 when the deployed graph stores its scales in FP16
        self.register_buffer("amax", torch.full((channels,) if channels else (), float("nan")))

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def num_bits(self) -> int:
        return self._num_bits

    @num_bits.setter
    def num_bits(self, value: int) -> None:
        if self.fp8 and value != DEFAULT_BITS:
            raise SwinTrtError(f"quantizer {self._name()}: FP8 E4M3 has no {value}-bit variant (--wprec/--aprec apply to int8 only)")
        self.qmin, self.qmax = (-FP8_MAX, FP8_MAX) if self.fp8 else integer_range(value)
        self._num_bits = value

    @property
    def quant_format(self) -> str:
        """``int8`` (signed integers, ``num_bits`` wide) or ``fp8`` (E4M3)."""
        return self._quant_format

    @quant_format.setter
    def quant_format(self, value: str) -> None:
        if value not in FORMATS:
            raise SwinTrtError(f"unknown quantization format {value!r}; choose one of {', '.join(FORMATS)}")
        self._quant_format = value
        self.num_bits = DEFAULT_BITS  # resets qmin/qmax to the format's range

    @property
    def fp8(self) -> bool:
        return self._quant_format == "fp8"

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.amax).all() and (self.amax > 0).all())

    @property
    def learn_amax(self) -> bool:
        return isinstance(self.amax, nn.Parameter)

    def set_learn_amax(self, enabled: bool) -> None:
        """Make amax a trainable parameter, or a buffer again. The name stays ``amax`` either
        way, so the state dict (and a checkpoint) has the same keys and loads into a model with
        fixed scales."""
        value = self.amax.detach().clone()
        del self.amax
        if enabled:
            self.amax = nn.Parameter(value)
        else:
            self.register_buffer("amax", value)

    @torch.no_grad()
    def set_amax(self, amax: torch.Tensor | float) -> None:
        amax = torch.as_tensor(amax, dtype=torch.float32).reshape(self.amax.shape)
        if not torch.isfinite(amax).all():
            raise CalibrationError(f"quantizer {self._name()}: calibration gave amax {amax.flatten()[:4].tolist()} (not finite): check the checkpoint and the calibration data")
        # an all-zero weight channel (e.g. a pruned row) would give scale 0; any positive scale is exact for it
        self.amax.copy_(torch.where(amax > 0, amax, torch.full_like(amax, AMAX_FLOOR).to(self.amax.device)))

    def scale(self) -> torch.Tensor:
        """amax / qmax, rounded to ``scale_dtype`` when set.

        An FP16 graph (TensorRT's strongly typed engines take the scale's type from the graph)
        holds every scale as float16; rounding here too keeps the reference bit-exact with it.
        Scales are clamped to float16's smallest *normal* value first: a subnormal scale can be
        flushed to zero by GPU kernels, and zero would dequantize everything to 0."""
        scale = self.amax / self.qmax
        if self.scale_dtype is None:
            return scale
        limits = torch.finfo(self.scale_dtype)
        return scale.clamp(limits.tiny, limits.max).to(self.scale_dtype).to(scale.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.collector is not None:
            self.collector.collect(x.detach())
            return x
        if self.exporting:  # calibration was checked when export started (data-dependent checks cannot be traced)
            return self._quantize_dequantize(x)
        if not self.calibrated:
            raise UncalibratedError(f"quantizer {self._name()} is enabled but has no amax: calibrate first (swin-trt calibrate)")
        if x.dtype in (torch.float16, torch.bfloat16):
            # under autocast: round on the float32 grid that evaluation and export use
            return self._fake_quantize(x.float()).to(x.dtype)
        return self._fake_quantize(x)

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        amax = self.amax.to(x.device)
        if self.axis is not None:
            shape = [1] * x.ndim
            shape[self.axis % x.ndim] = -1
            amax = amax.reshape(shape)
        if self.learn_amax and torch.is_grad_enabled():
            examples = 1 if isinstance(x, nn.Parameter) else x.shape[0]  # a weight is one example; activations lead with the batch
            return _FakeQuantizeLearnedAmax.apply(x, amax, self.qmin, self.qmax, examples, self.fp8)
        scale = self.scale().to(x.device)
        if self.axis is not None:
            scale = scale.reshape(amax.shape)
        return _FakeQuantize.apply(x, scale, amax, self.qmin, self.qmax, self.fused, self.fp8)

    def _quantize_dequantize(self, x: torch.Tensor) -> torch.Tensor:
        """The same arithmetic as explicit quantize + dequantize ops, which ``torch.onnx``'s
        exporter turns into QuantizeLinear/DequantizeLinear (torch's fake-quant ops do not trace
        through ``torch.export``). Per-tensor scales must be Python floats here: a scale read from
        a buffer would be data-dependent during export."""
        ops = torch.ops.quantized_decomposed
        # FP8: the same ops with dtype float8_e4m3fn, exported as Q/DQ with a float8e4m3fn zero point
        low, high, dtype = (-int(FP8_MAX), int(FP8_MAX), FP8_DTYPE) if self.fp8 else (-128, 127, torch.int8)
        if self.axis is None:
            scale = self.export_scale
            if self.num_bits < MAX_BITS and not self.fp8:
                # torch.onnx drops quantize_per_tensor's quant_min/quant_max (a bare int8 QuantizeLinear
                # follows), so a narrower range is an explicit clamp at qmin*s, qmax*s before it: exact, since
                # round(clamp(x, qmin*s, qmax*s) / s) == clamp(round(x / s), qmin, qmax)
                x = x.clamp(self.qmin * scale, self.qmax * scale)
            quantized = ops.quantize_per_tensor(x, scale, 0, low, high, dtype)
            return ops.dequantize_per_tensor(quantized, scale, 0, low, high, dtype)
        scale = self.scale().to(x.device)
        zero = torch.zeros(scale.shape, dtype=torch.int64, device=x.device)
        axis = self.axis % x.ndim
        qmin, qmax = (low, high) if self.fp8 else (self.qmin, self.qmax)
        quantized = ops.quantize_per_channel(x, scale, zero, axis, qmin, qmax, dtype)
        return ops.dequantize_per_channel(quantized, scale, zero, axis, qmin, qmax, dtype)

    def _name(self) -> str:
        return getattr(self, "qualified_name", "?")

    def extra_repr(self) -> str:
        state = "collecting" if self.collector is not None else ("on" if self.enabled else "off")
        kind = f"per-channel axis={self.axis}" if self.per_channel else "per-tensor"
        width = "fp8 e4m3" if self.fp8 else f"{self.num_bits}-bit"
        return f"{width} {kind}, {state}, calibrated={self.calibrated}"
