"""swin-trt: INT8 Swin Transformer classifiers, from PyTorch calibration to ONNX Runtime engines.

Public API (imported lazily, so ``swin-trt --help`` does not pay for torch and timm)::

    import swin_trt
    model = swin_trt.load_model(model="swin_tiny_patch4_window7_224", checkpoint="swin_tiny_patch4_window7_224.pth")
    dataset = swin_trt.build_dataset("imagenet", "val", swin_trt.eval_transform(model.swin_trt_config.data))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.5"

_EXPORTS = {
    "load_model": "swin_trt.api",
    "resolve_config": "swin_trt.models.resolve",
    "build_model": "swin_trt.models.swin",
    "ModelConfig": "swin_trt.models.config",
    "config_from_yaml": "swin_trt.models.config",
    "get_config": "swin_trt.models.zoo",
    "list_models": "swin_trt.models.zoo",
    "read_checkpoint": "swin_trt.models.checkpoint",
    "load_state_dict": "swin_trt.models.checkpoint",
    "save_checkpoint": "swin_trt.models.checkpoint",
    "build_dataset": "swin_trt.data.datasets",
    "eval_transform": "swin_trt.data.transforms",
    "train_transform": "swin_trt.data.transforms",
    "build_loader": "swin_trt.data.loader",
    "write_digits": "swin_trt.data.digits",
    "evaluate": "swin_trt.loops.evaluate",
    "EvalResult": "swin_trt.loops.evaluate",
    "TrainRecipe": "swin_trt.loops.train",
    "SwinTrtError": "swin_trt.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'swin_trt' has no attribute {name!r}")
