"""Build Swin classifiers on timm's ``SwinTransformer``.

timm's implementation has the original's module structure and numerics (PatchMerging's 2x2
gather order, relative position bias, shifted-window mask), so the released weights load after a
key remap (see :mod:`swin_trt.models.checkpoint`).
"""

from __future__ import annotations

from timm.models.swin_transformer import SwinTransformer, WindowAttention
from torch import nn

from swin_trt.models.config import ModelConfig


def build_model(config: ModelConfig) -> nn.Module:
    """A randomly initialised Swin for ``config``, with explicit (non-fused) attention.

    Attention must run as ``q @ k^T`` ... ``attn @ v`` so that quantizers can sit on both
    batched-matmul inputs and on the softmax output; timm switches to SDPA when fused attention
    is enabled globally, so it is switched off here per module.
    """
    model = SwinTransformer(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        embed_dim=config.embed_dim,
        depths=config.depths,
        num_heads=config.num_heads,
        window_size=config.window_size,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        drop_rate=config.drop_rate,
        drop_path_rate=config.drop_path_rate,
    )
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.fused_attn = False
    model.swin_trt_config = config
    return model
