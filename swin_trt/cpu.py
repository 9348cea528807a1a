"""The CPU a result was measured on: model name and the ISA extensions that change int8 results.

Speed and parity figures hold for one CPU kind only: onnxruntime's fused int8 kernels sum u8*s8
products in int16 pairs on AVX2 (they can saturate), and in int32 with VNNI or AMX (they cannot).
So every benchmark result and every engine sidecar records :func:`read_cpu`, and
``build --ort-mode auto`` chooses from it.

Read from ``/proc/cpuinfo`` by hand rather than with py-cpuinfo: two fields are needed, and
py-cpuinfo spends about a second (and may spawn subprocesses) to collect dozens.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The extensions that decide how int8 GEMMs run: AVX2 (u8s8 pairs summed in int16), AVX-512,
# VNNI (vpdpbusd: int32 accumulation, 512-bit or the 256-bit AVX-VNNI), AMX tiles (int32 too).
TRACKED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]  # only the TRACKED_FLAGS that are present

    @property
    def int8_dot_product(self) -> bool:
        """int8 dot products accumulated in int32 (VNNI or AMX): fused int8 GEMMs cannot saturate."""
        return bool(self.flags & INT8_DOT_FLAGS)

    def describe(self) -> str:
        return f"{self.model} ({', '.join(sorted(self.flags)) or 'no AVX2'})"

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "flags": sorted(self.flags), "logical_cpus": os.cpu_count()}


def parse_cpuinfo(text: str) -> CpuInfo:
    """Model name and tracked flags of the first processor listed in ``/proc/cpuinfo`` text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return CpuInfo(fields.get("model name") or platform.processor() or "unknown", frozenset(f for f in TRACKED_FLAGS if f in flags))


def read_cpu() -> CpuInfo:
    """This machine's CPU; without ``/proc/cpuinfo`` (not Linux) the flags are unknown (empty)."""
    if CPUINFO.is_file():
        return parse_cpuinfo(CPUINFO.read_text())
    return CpuInfo(platform.processor() or platform.machine() or "unknown", frozenset())
