"""Process-group handling for ``torchrun`` (and the seed's ``torch.distributed.launch``).

Single-process runs need no set-up; under torchrun the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT) decides, with gloo on CPUs and NCCL on GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks this rank's GPU when CUDA works, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@contextmanager
def distributed(device_name: str = "auto") -> Iterator[DistContext]:
    """Join the process group that torchrun describes (if any) for the duration of a command."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        yield DistContext(device=device)
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    yield DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)
    # Only after success: tearing the group down while another rank waits in a collective can
    # block forever (NCCL's abort is collective; torchtitan made the same change, PR #1342). A
    # failed rank leaves without it (swin_trt.cli.main), and its exit ends the others.
    dist.destroy_process_group()


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another rank went away: gloo raises a
    plain RuntimeError ("Connection closed by peer"), NCCL and the store raise DistError types."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in ("Connection closed by peer", "Connection reset by peer"))


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place); a no-op in single-process runs."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()
