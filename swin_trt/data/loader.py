"""DataLoaders for single-process and distributed runs."""

from __future__ import annotations

import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from swin_trt.distributed import DistContext


class ShardSampler(Sampler[int]):
    """Rank r of n sees images r, r+n, r+2n, ... of one order: every image exactly once.

    torch's DistributedSampler pads the last shard with repeated images, which would count some
    images twice in a distributed evaluation. With ``seed``, the order is a fixed permutation
    shared by all ranks, so the first k batches of n ranks hold the same images as the first
    n*k batches of one process (what makes distributed calibration equal single-process).
    """

    def __init__(self, length: int, rank: int, world_size: int, seed: int | None = None):
        order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist() if seed is not None else range(length)
        self.indices = order[rank::world_size]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    context: DistContext,
    train: bool = False,
    workers: int = 2,
    seed: int = 0,
    shuffle_once: bool = False,
) -> DataLoader:
    """Shuffled, drop-last batches for training; every image once, in order, for evaluation;
    with ``shuffle_once``, every image once in a seeded order (calibration)."""
    sampler: Sampler[int]
    if shuffle_once:
        sampler = ShardSampler(len(dataset), context.rank, context.world_size, seed=seed)
    elif train:
        if context.enabled:
            sampler = DistributedSampler(dataset, context.world_size, context.rank, shuffle=True, seed=seed, drop_last=True)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    elif context.enabled:
        sampler = ShardSampler(len(dataset), context.rank, context.world_size)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=context.device.type == "cuda",
        drop_last=train,
        persistent_workers=train and workers > 0,
    )
