"""The machine a benchmark figure holds for: CPU model and its inference-relevant ISA flags,
and the CUDA GPU (a figure from one kind of machine says nothing about another)."""

from __future__ import annotations

import torch

from swin_trt.cpu import read_cpu


def machine() -> dict:
    where = {"cpu": read_cpu().as_json()}
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        where["gpu"] = torch.cuda.get_device_name(index)
        where["compute_capability"] = "{}.{}".format(*torch.cuda.get_device_capability(index))
    return where
