"""Checkpoints calibrated or QAT-trained by the reference toolkit, renamed onto swin-trt's quantizers.

The reference is NVIDIA FasterTransformer's ``examples/pytorch/swin/Swin-Transformer-Quantization``
(built on pytorch-quantization). Its calibrated checkpoint is the plain ``state_dict`` of the
original Swin module tree with a ``<quantizer>._amax`` buffer for every TensorQuantizer, which
its ``models/swin_transformer.py`` and ``models/linear_activation.py`` place as follows:

- every ``LinearActivation`` (``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``,
  ``downsample.reduction``): ``_input_quantizer``, ``_weight_quantizer`` and
  ``_aftergemm_quantizer`` (the GEMM output before the bias);
- ``WindowAttention``: ``matmul_q_input_quantizer``, ``matmul_k_input_quantizer`` (on k^T),
  ``matmul_v_input_quantizer``, ``matmul_a_input_quantizer`` (the softmax output) and
  ``softmax_input_quantizer``;
- ``SwinTransformerBlock``: ``layernorm_input{1,2}_quantizer`` and, for both residual adds,
  ``add{1,2}_local_input_quantizer`` / ``add{1,2}_residual_input_quantizer``.

Calibration there fills every one of them; its ``quant_utils.set_args`` then always disables the
``layernorm_input``, ``softmax_input``, ``local_input`` and ``residual_input`` quantizers (and,
for ``--int8-mode 2``, the fc2 / reduction ``_aftergemm``), forces 8 bits and per-tensor weights,
and stores none of these choices. The mapping:

==================================  =====================================================
reference                           swin-trt
==================================  =====================================================
``<linear>._input_quantizer``       ``<linear>.input_quantizer``
``<linear>._weight_quantizer``      ``<linear>.weight_quantizer`` (scalar: per tensor,
                                    ``[C, 1]``: per channel)
``<linear>._aftergemm_quantizer``   ``<linear>.output_quantizer``
``attn.matmul_q_input_quantizer``   ``attn.q_quantizer``, amax x the attention scale: swin-trt
                                    (timm) scales q before ``q @ k^T``, the reference after it
``attn.matmul_k/v_input_quantizer`` ``attn.k_quantizer`` / ``attn.v_quantizer``
``attn.matmul_a_input_quantizer``   ``attn.softmax_quantizer``
``add1/add2_residual_input_q...``   ``attn_residual_quantizer`` / ``mlp_residual_quantizer``
                                    (the skip operand; the ``trt`` recipe enables only the MLP one)
``softmax_input``, ``layernorm_     none: off in every reference mode and never quantized by
input1/2``, ``add1/2_local_input``  swin-trt; counted and reported, not loaded
==================================  =====================================================

Any other quantizer entry (e.g. a learned-amax ``clip`` parameter) is an error that lists it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from swin_trt.errors import CheckpointError
from swin_trt.models.config import ModelConfig
from swin_trt.quantization.recipes import LINEAR_KINDS

FORMAT = "FasterTransformer Swin-Transformer-Quantization (pytorch-quantization)"
LINEAR_QUANTIZERS = {"_input_quantizer": "input_quantizer", "_weight_quantizer": "weight_quantizer", "_aftergemm_quantizer": "output_quantizer"}
ATTENTION_QUANTIZERS = {
    "matmul_q_input_quantizer": "q_quantizer",
    "matmul_k_input_quantizer": "k_quantizer",
    "matmul_v_input_quantizer": "v_quantizer",
    "matmul_a_input_quantizer": "softmax_quantizer",
}
BLOCK_QUANTIZERS = {"add1_residual_input_quantizer": "attn_residual_quantizer", "add2_residual_input_quantizer": "mlp_residual_quantizer"}
ALWAYS_DISABLED = (
    "softmax_input_quantizer",
    "layernorm_input1_quantizer",
    "layernorm_input2_quantizer",
    "add1_local_input_quantizer",
    "add2_local_input_quantizer",
)
_AMAX = re.compile(r"^(?P<owner>.+)\.(?P<quantizer>[A-Za-z0-9_]+_quantizer)\._amax$")
_BLOCK = re.compile(r"^layers\.(?P<stage>\d+)\.blocks\.\d+$")


@dataclass(frozen=True)
class ReferenceAmax:
    """A reference checkpoint's amax under swin-trt's names (original-release module tree)."""

    state: dict[str, torch.Tensor]  # FP weights and buffers unchanged, amax renamed
    per_channel_weights: bool
    ignored: tuple[str, ...]  # amax of quantizers the reference always disables


def is_reference_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict with pytorch-quantization ``_amax`` buffers."""
    return any(key.endswith("_quantizer._amax") for key in state)


def to_native(state: Mapping[str, torch.Tensor], config: ModelConfig, source: str) -> ReferenceAmax:
    """Rename every ``_amax`` of a reference checkpoint onto swin-trt's quantizers.

    FP keys stay in the original release's layout (the checkpoint loader converts it); every
    quantizer entry is either mapped or, for the reference's always-disabled quantizers, listed
    in ``ignored``; anything else raises with the full list.
    """
    native: dict[str, torch.Tensor] = {}
    ignored, unknown, weights = [], [], []
    for key, value in state.items():
        if "_quantizer." not in key:
            native[key] = value
            continue
        match = _AMAX.match(key)
        if match and match["quantizer"] in ALWAYS_DISABLED:
            ignored.append(key)
            continue
        target = _native_name(match["owner"], match["quantizer"]) if match else None
        if target is None:
            unknown.append(key)
        else:
            amax = value.detach().float()
            if target.endswith(".attn.q_quantizer"):
                amax = amax * _attention_scale(config, match["owner"])
            if target.endswith(".weight_quantizer"):
                weights.append((key, amax))
            native[f"{target}.amax"] = amax
    if unknown:
        shown = ", ".join(unknown[:6]) + (f" (+{len(unknown) - 6} more)" if len(unknown) > 6 else "")
        raise CheckpointError(f"{source}: {len(unknown)} quantizer entries have no swin-trt counterpart: {shown} "
                              "(known: _input/_weight/_aftergemm_quantizer of qkv/proj/fc1/fc2/reduction, matmul_q/k/v/a_input_quantizer, "
                              "add1/add2_residual_input_quantizer, and the always-disabled softmax/layernorm/local-input ones)")
    per_channel = _weight_granularity(weights, source)
    for key, amax in list(native.items()):
        if key.endswith(".weight_quantizer.amax"):
            native[key] = amax.reshape(-1) if per_channel else amax.reshape(())
    return ReferenceAmax(native, per_channel, tuple(ignored))


def _native_name(owner: str, quantizer: str) -> str | None:
    """swin-trt's name of the reference quantizer ``<owner>.<quantizer>``, or None if it has none."""
    if quantizer in LINEAR_QUANTIZERS and owner.rsplit(".", 1)[-1] in LINEAR_KINDS:
        return f"{owner}.{LINEAR_QUANTIZERS[quantizer]}"
    if quantizer in ATTENTION_QUANTIZERS and owner.endswith(".attn"):
        return f"{owner}.{ATTENTION_QUANTIZERS[quantizer]}"
    if quantizer in BLOCK_QUANTIZERS and _BLOCK.match(owner):
        return f"{owner}.{BLOCK_QUANTIZERS[quantizer]}"
    return None


def _attention_scale(config: ModelConfig, attention: str) -> float:
    """head_dim ** -0.5 of the attention module ``layers.<stage>.blocks.<j>.attn``."""
    stage = int(attention.split(".")[1])
    head_dim = config.embed_dim * 2**stage // config.num_heads[stage]
    return head_dim**-0.5


def _weight_granularity(weights: list[tuple[str, torch.Tensor]], source: str) -> bool:
    """True for per-channel weight amax (``[C, 1]`` or ``[C]``), False for per-tensor (one value)."""
    kinds = {key: amax.numel() > 1 for key, amax in weights}
    if len(set(kinds.values())) > 1:
        per_tensor = [k for k, many in kinds.items() if not many]
        raise CheckpointError(f"{source}: weight amax mix per-tensor and per-channel shapes (per-tensor: {per_tensor[0]}, ...): "
                              "swin-trt quantizes all weights one way")
    return bool(weights) and next(iter(kinds.values()))
