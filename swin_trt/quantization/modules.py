"""Quantized versions of the Swin modules, made by swapping the class of timm's modules in place
(parameters and buffers are kept) and adding their quantizers.

Every quantized module owns all the quantizers any recipe may enable, so the state-dict layout is
the same for every recipe and a checkpoint calibrated for one recipe loads into another; the
recipe only decides which quantizers are enabled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention
from torch import nn

from swin_trt.quantization.quantizer import TensorQuantizer


class QuantLinear(nn.Linear):
    """A Linear with input, weight and GEMM-output quantizers.

    The reference quantizes the GEMM output *before* the bias add (its INT8 kernels add the bias
    after requantizing the INT32 accumulator), so with the output quantizer on, the bias is added
    after it.
    """

    input_quantizer: TensorQuantizer
    weight_quantizer: TensorQuantizer
    output_quantizer: TensorQuantizer

    @classmethod
    def convert(cls, module: nn.Linear, per_channel_weights: bool) -> QuantLinear:
        module.__class__ = cls
        module.input_quantizer = TensorQuantizer()
        module.weight_quantizer = TensorQuantizer(module.out_features, axis=0) if per_channel_weights else TensorQuantizer()
        module.output_quantizer = TensorQuantizer()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        weight = self.weight_quantizer(self.weight)
        if not self.output_quantizer.enabled:
            return F.linear(x, weight, self.bias)
        y = self.output_quantizer(F.linear(x, weight))
        return y if self.bias is None else y + self.bias


class QuantWindowAttention(WindowAttention):
    """timm's WindowAttention (explicit, non-fused path) with quantizers on both batched-matmul
    inputs and on the softmax output: ``Q(q) @ Q(k)^T`` ... ``Q(softmax) @ Q(v)``.

    modelopt's automatic attention patch mislabels this module's matmuls (q never quantized), so
    the attention is written out here with named quantizers.
    """

    @classmethod
    def convert(cls, module: WindowAttention) -> QuantWindowAttention:
        module.__class__ = cls
        module.q_quantizer = TensorQuantizer()
        module.k_quantizer = TensorQuantizer()
        module.v_quantizer = TensorQuantizer()
        module.softmax_quantizer = TensorQuantizer()
        module.fused_attn = False
        return module

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        windows, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(windows, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = self.q_quantizer(q) @ self.k_quantizer(k).transpose(-2, -1)
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, tokens, tokens)
        attn = self.attn_drop(self.softmax(attn))
        x = self.softmax_quantizer(attn) @ self.v_quantizer(v)
        x = x.transpose(1, 2).reshape(windows, tokens, -1)
        return self.proj_drop(self.proj(x))


class QuantSwinBlock(SwinTransformerBlock):
    """timm's SwinTransformerBlock with quantizers on the skip operand of both residual adds.

    Both exist so that every checkpoint keeps one layout (the reference toolkit has both). Only the
    ``trt-residual`` recipe (``trt`` before 0.2) enables one, ``mlp_residual_quantizer``: fc2 feeds
    that add directly. It was dropped from ``trt`` because it buys no TensorRT fusion in Swin
    (recipes.py); proj reaches its add through window-reverse and roll, so no recipe enables
    ``attn_residual_quantizer``.
    """

    @classmethod
    def convert(cls, module: SwinTransformerBlock) -> QuantSwinBlock:
        module.__class__ = cls
        module.attn_residual_quantizer = TensorQuantizer()
        module.mlp_residual_quantizer = TensorQuantizer()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        x = self.attn_residual_quantizer(x) + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(batch, -1, channels)
        x = self.mlp_residual_quantizer(x) + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(batch, height, width, channels)
