"""Turn a Swin model into a quantized one and address its quantizers."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock, WindowAttention
from torch import nn

from swin_trt.errors import SwinTrtError
from swin_trt.quantization.modules import (
    QuantLinear,
    QuantSwinBlock,
    QuantWindowAttention,
)
from swin_trt.quantization.quantizer import AMAX_FLOOR, DEFAULT_BITS, TensorQuantizer, compiled_kernel
from swin_trt.quantization.recipes import LINEAR_KINDS, Recipe


def quantize_model(model: nn.Module, recipe: Recipe, per_channel_weights: bool = True) -> nn.Module:
    """Insert quantizers into ``model`` in place and enable those of ``recipe``.

    Swaps timm's WindowAttention, SwinTransformerBlock and the Linear layers of blocks and
    PatchMerging for their quantized versions. All quantizers start uncalibrated.
    """
    if any(isinstance(m, TensorQuantizer) for m in model.modules()):
        raise ValueError("model is already quantized")
    for module in list(model.modules()):
        if isinstance(module, SwinTransformerBlock):
            QuantSwinBlock.convert(module)
            QuantLinear.convert(module.mlp.fc1, per_channel_weights)
            QuantLinear.convert(module.mlp.fc2, per_channel_weights)
        elif isinstance(module, WindowAttention):
            QuantWindowAttention.convert(module)
            QuantLinear.convert(module.qkv, per_channel_weights)
            QuantLinear.convert(module.proj, per_channel_weights)
        elif isinstance(module, PatchMerging):
            QuantLinear.convert(module.reduction, per_channel_weights)
    for name, quantizer in named_quantizers(model):
        quantizer.qualified_name = name
    apply_recipe(model, recipe)
    model.per_channel_weights = per_channel_weights
    model.weight_bits = model.activation_bits = DEFAULT_BITS
    model.quant_format = "int8"
    return model


def set_format(model: nn.Module, quant_format: str) -> None:
    """Quantize every tensor as ``int8`` or ``fp8`` (E4M3, scale = amax / 448). One format per
    model: TensorRT and ONNX Q/DQ allow mixing, but a checkpoint, its graph and its engine record
    one format and every later command follows it. Resets the precision to 8 bits."""
    for _, quantizer in named_quantizers(model):
        quantizer.quant_format = quant_format
    model.quant_format = quant_format
    model.weight_bits = model.activation_bits = DEFAULT_BITS


def quantizer_kind(name: str) -> tuple[str, str]:
    """(module kind, quantizer attribute) of a quantizer's qualified name, e.g.
    ``layers.0.blocks.1.attn.qkv.output_quantizer`` -> (``qkv``, ``output_quantizer``)."""
    *path, attribute = name.split(".")
    owner = path[-1] if path else ""
    if owner in LINEAR_KINDS:
        return owner, attribute
    if owner == "attn":
        return "attention", attribute
    return "block", attribute


def named_quantizers(model: nn.Module) -> Iterator[tuple[str, TensorQuantizer]]:
    for name, module in model.named_modules():
        if isinstance(module, TensorQuantizer):
            yield name, module


def apply_recipe(model: nn.Module, recipe: Recipe) -> None:
    for name, quantizer in named_quantizers(model):
        quantizer.enabled = recipe.enables(*quantizer_kind(name))
    model.quant_recipe = recipe
    model.disabled_quantizers = []


def keep_in_higher_precision(model: nn.Module, names: list[str]) -> None:
    """Disable ``names`` on top of the recipe (a mixed-precision fallback, e.g. the one
    ``calibrate --auto-fallback`` chose); those the recipe enabled are recorded on the model
    (``disabled_quantizers``), so that export describes the graph and inspect can count it."""
    quantizers = dict(named_quantizers(model))
    unknown = sorted(set(names) - set(quantizers))
    if unknown:
        raise SwinTrtError(f"{len(unknown)} quantizers to keep in higher precision do not exist in this model (first: {unknown[0]})")
    switched = {name for name in names if quantizers[name].enabled}  # only what the recipe enables changes the graph
    for name in switched:
        quantizers[name].enabled = False
    model.disabled_quantizers = sorted(set(model.disabled_quantizers) | switched)


def enabled_quantizers(model: nn.Module) -> list[str]:
    return [name for name, q in named_quantizers(model) if q.enabled]


def is_weight_quantizer(name: str) -> bool:
    return name.endswith("weight_quantizer")


def set_precision(model: nn.Module, weight_bits: int, activation_bits: int) -> None:
    """Fake-quantize weights at ``weight_bits`` and activations at ``activation_bits`` (4-8).

    amax does not depend on the bit width (max |W| for weights, the calibrated range for
    activations), so one calibration serves every precision."""
    for name, quantizer in named_quantizers(model):
        quantizer.num_bits = weight_bits if is_weight_quantizer(name) else activation_bits
    model.weight_bits, model.activation_bits = weight_bits, activation_bits


def uncalibrated(model: nn.Module) -> list[str]:
    """Enabled quantizers without amax: a model with any of these must not be evaluated."""
    return [name for name, q in named_quantizers(model) if q.enabled and not q.calibrated]


def set_scale_dtype(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Round every quantizer's scale to ``dtype`` (float16 for an FP16 graph) or stop rounding
    (None): the fake-quant reference then uses the scales the deployed graph holds."""
    for _, quantizer in named_quantizers(model):
        quantizer.scale_dtype = dtype
    model.scale_dtype = dtype


def learn_amax(model: nn.Module, enabled: bool) -> list[str]:
    """Train (or fix again) the amax of every enabled quantizer; returns their names.

    Disabled quantizers keep buffers: a parameter that never receives a gradient would stall
    DistributedDataParallel's gradient reduction."""
    names = []
    for name, quantizer in named_quantizers(model):
        if quantizer.enabled and quantizer.learn_amax != enabled:
            quantizer.set_learn_amax(enabled)
            names.append(name)
    return names


@torch.no_grad()
def keep_amax_positive(model: nn.Module) -> None:
    """Project learned amax back to positive values after an optimizer step (a zero or
    negative scale has no meaning; the floor is exact for an all-zero channel)."""
    for _, quantizer in named_quantizers(model):
        if quantizer.learn_amax:
            quantizer.amax.clamp_(min=AMAX_FLOOR)


def use_compiled_kernel(model: nn.Module) -> str | None:
    """Train ``model``'s quantizers with the compiled one-pass kernel; returns why not when
    ``torch.compile`` does not work here (no C++ compiler, unsupported platform), leaving the
    eager kernel, which computes the same values."""
    if getattr(model, "quant_format", "int8") == "fp8":
        return "the compiled kernel rounds to integers, not to FP8"
    probe = torch.linspace(-3, 3, 64)
    try:
        for x, amax in ((probe, torch.tensor(2.0)), (probe.reshape(8, 8), torch.full((8, 1), 2.0))):
            compiled_kernel()(x, amax / 127, amax, -128, 127)
    except Exception as error:  # torch.compile fails in many ways (compiler missing, backend errors)
        return f"torch.compile is not usable here ({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''})"
    for _, quantizer in named_quantizers(model):
        quantizer.fused = True
    return None
