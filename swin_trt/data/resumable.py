"""Training batches that depend only on (seed, epoch, position): what makes QAT resumable bit for bit.

A resumed run must see exactly the images, in exactly the order and with exactly the
augmentation, that the uninterrupted run saw. Saving and restoring every RNG (main process,
each DataLoader worker) cannot give that: worker processes are re-created on resume and their
generators are out of reach. So nothing is carried over; everything is derived:

- the order of an epoch is torch's :class:`DistributedSampler` permutation of (seed + epoch),
  and a resumed epoch skips the batches already done;
- each image's augmentation draws from generators seeded with (seed, epoch, image index), so it
  does not depend on which worker or rank loads the image, or on what was loaded before it.

The second property also makes N ranks see, step for step, the same augmented images as one
process with an N times larger batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from swin_trt.distributed import DistContext
from swin_trt.seeding import seed_all


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing: nearby inputs give unrelated streams)."""
    low, high = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(high & 0x7FFFFFFF) << 32 | int(low)


class ResumableSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled, drop-last shards), yielding ``(epoch, index)`` and
    able to start an epoch after its first ``skip`` indices.

    The epoch travels with each index, so :class:`SeededDataset` can seed per image even inside
    persistent DataLoader workers. Works without a process group (``num_replicas``/``rank`` are
    given explicitly), so a single process uses the same permutation logic.
    """

    def __init__(self, dataset: Dataset, context: DistContext, seed: int):
        super().__init__(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in islice(super().__iter__(), self.skip, None):
            yield self.epoch, index

    def __len__(self) -> int:
        return self.num_samples - self.skip


class SeededDataset(Dataset):
    """Wraps a dataset: item ``(epoch, index)`` is ``dataset[index]`` with Python's, numpy's and
    torch's generators seeded from (seed, epoch, index) first (timm's and torchvision's
    transforms draw from all three)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        seed_all(derived_seed(self.seed, epoch, index))
        return self.dataset[index]


def resumable_loader(dataset: Dataset, batch_size: int, context: DistContext, seed: int, workers: int = 2) -> DataLoader:
    """Drop-last training batches of ``batch_size`` per rank; call ``loader.sampler.set_epoch(epoch,
    skip=steps_done * batch_size)`` before each epoch."""
    return DataLoader(
        SeededDataset(dataset, seed),
        batch_size=batch_size,
        sampler=ResumableSampler(dataset, context, seed),
        num_workers=workers,
        pin_memory=context.device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )


def seed_step(seed: int, epoch: int, step: int, rank: int) -> None:
    """Seed what the training step itself draws (mixup, drop path) from its position alone."""
    seed_all(derived_seed(seed, epoch, step, rank))

