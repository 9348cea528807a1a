"""What produced a result: package versions, recorded in checkpoints and sidecars."""

from __future__ import annotations

import platform
from importlib import metadata


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("swin-trt", "torch", "torchvision", "timm", "onnx", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
