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


def cpu_description() -> dict[str, object]:
    """The CPU a speed figure was measured on: model name and the SIMD/matrix ISA flags that
    decide which kernels run (AVX2, AVX-512, VNNI, AMX), from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = sorted(f for f in value.split() if f.startswith(("avx", "fma", "amx", "sse4", "f16c")) or "vnni" in f)
        if flags:  # the first processor's block is enough ("model name" comes before "flags")
            break
    return {"model": model, "isa": flags}
