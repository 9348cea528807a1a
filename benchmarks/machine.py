"""The machine a benchmark figure holds for: CPU model and its inference-relevant ISA flags,
and the CUDA GPU (a figure from one kind of machine says nothing about another)."""

from __future__ import annotations

import argparse
import re

import torch

from swin_trt.cpu import CpuInfo, read_cpu


def machine() -> dict:
    where = {"cpu": read_cpu().as_json()}
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        where["gpu"] = torch.cuda.get_device_name(index)
        where["compute_capability"] = "{}.{}".format(*torch.cuda.get_device_capability(index))
    return where


def cpu_kind(cpu: CpuInfo) -> str:
    """A file name for a CPU kind (results are kept per kind, never overwritten by another's):
    its model and the ISA flags that change int8 results, e.g. ``amd-epyc_avx2_avx512_vnni_avx512f``."""
    words = _slug(cpu.model) or "unknown"
    return "_".join([words, *sorted(cpu.flags)]) if cpu.flags else words


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def add_emulated_cpu_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--emulated-cpu", metavar="NAME",
                        help="the CPU an emulator presents to this run, e.g. haswell under `qemu-x86_64 -cpu Haswell` (MLAS takes its "
                             "kernels from the emulated CPUID while /proc/cpuinfo still describes the host): recorded as emulated_cpu "
                             "and put in the result's file name")


def result_kind(cpu: CpuInfo, emulated_cpu: str | None) -> str:
    """The result file's name: :func:`cpu_kind`, or for an emulated run ``emulated-<name>_on_<host kind>``."""
    if not emulated_cpu:
        return cpu_kind(cpu)
    return f"emulated-{_slug(emulated_cpu)}_on_{cpu_kind(cpu)}"


def describe(cpu: CpuInfo, emulated_cpu: str | None) -> str:
    """The CPU for a result table's title, with the emulated one where a run had one."""
    return f"{cpu.describe()}, emulating {emulated_cpu}" if emulated_cpu else cpu.describe()
