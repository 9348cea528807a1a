"""The reference toolkit's calibrated-checkpoint layout, written from its module tree (FasterTransformer
``examples/pytorch/swin/Swin-Transformer-Quantization``: ``models/swin_transformer.py`` and
``models/linear_activation.py``), not from swin-trt's converter, so the converter is tested against an
independent statement of the format.

There, every quantizer is a pytorch-quantization ``TensorQuantizer`` whose calibrated range is the
``_amax`` buffer; the model is the original Swin release's tree (PatchMerging at the end of a stage).
"""

from __future__ import annotations

import torch
from original_layout import original_state_dict

from swin_trt.models.config import ModelConfig

LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
# WindowAttention.__init__ (QUANT branch)
ATTENTION = ("matmul_q_input_quantizer", "matmul_k_input_quantizer", "matmul_v_input_quantizer", "matmul_a_input_quantizer", "softmax_input_quantizer")
# SwinTransformerBlock.__init__ (QUANT branch)
BLOCK = ("layernorm_input1_quantizer", "add1_local_input_quantizer", "add1_residual_input_quantizer",
         "layernorm_input2_quantizer", "add2_local_input_quantizer", "add2_residual_input_quantizer")
# native (swin-trt) amax this test file reads its values from, per reference quantizer
_FROM_NATIVE = {"_input_quantizer": "input_quantizer", "_weight_quantizer": "weight_quantizer", "_aftergemm_quantizer": "output_quantizer",
                "matmul_q_input_quantizer": "q_quantizer", "matmul_k_input_quantizer": "k_quantizer", "matmul_v_input_quantizer": "v_quantizer",
                "matmul_a_input_quantizer": "softmax_quantizer", "add1_residual_input_quantizer": "attn_residual_quantizer",
                "add2_residual_input_quantizer": "mlp_residual_quantizer"}


def _linear(out: dict, reference: str, native: str, amax: dict, per_channel: bool) -> None:
    """LinearActivation: _input_quantizer, _weight_quantizer, _aftergemm_quantizer (pytorch-quantization keeps
    per-channel amax with keepdims: [C, 1]; per-tensor amax is a 0-d tensor)."""
    for quantizer in ("_input_quantizer", "_weight_quantizer", "_aftergemm_quantizer"):
        value = amax[f"{native}.{_FROM_NATIVE[quantizer]}.amax"].clone()
        if quantizer == "_weight_quantizer":
            value = value.reshape(-1, 1) if per_channel else value.reshape(())
        out[f"{reference}.{quantizer}._amax"] = value


def reference_state_dict(config: ModelConfig, native: dict[str, torch.Tensor], per_channel: bool = False) -> dict[str, torch.Tensor]:
    """A reference calibrated state dict for ``config`` with the FP weights and amax of ``native`` (a
    swin-trt calibrated state dict, timm layout, in which every quantizer has an amax). The reference
    applies the attention scale after ``q @ k^T``, so its q amax is the native one / scale; the quantizers
    swin-trt has no counterpart for get arbitrary (but valid) ranges, as a real calibration gives them."""
    fp = {k: v for k, v in native.items() if not k.endswith("_quantizer.amax")}
    out = original_state_dict(config, fp)
    for stage, depth in enumerate(config.depths):
        scale = (config.embed_dim * 2**stage // config.num_heads[stage]) ** -0.5
        for block in range(depth):
            prefix = f"layers.{stage}.blocks.{block}"
            for linear in LINEARS:
                _linear(out, f"{prefix}.{linear}", f"{prefix}.{linear}", native, per_channel)
            for quantizer in ATTENTION:
                if quantizer == "softmax_input_quantizer":
                    out[f"{prefix}.attn.{quantizer}._amax"] = torch.tensor(11.0)
                    continue
                value = native[f"{prefix}.attn.{_FROM_NATIVE[quantizer]}.amax"].clone()
                out[f"{prefix}.attn.{quantizer}._amax"] = value / scale if quantizer == "matmul_q_input_quantizer" else value
            for quantizer in BLOCK:
                key = f"{prefix}.{_FROM_NATIVE[quantizer]}.amax" if quantizer in _FROM_NATIVE else None
                out[f"{prefix}.{quantizer}._amax"] = native[key].clone() if key else torch.tensor(3.5)
        if stage < len(config.depths) - 1:  # PatchMerging at the end of the stage, LinearActivation(bias=False)
            _linear(out, f"layers.{stage}.downsample.reduction", f"layers.{stage + 1}.downsample.reduction", native, per_channel)
    return out
