"""Calibration statistics: the running max and histogram of |x| for each activation quantizer.

The histogram covers [0, R) with R the smallest power of two above the max seen so far, in
``BINS`` equal bins. When a larger value arrives, R doubles and pairs of bins are summed. With
power-of-two ranges, bin indices are exact (|x| * BINS / R only shifts exponents), so folding is
exactly the histogram one would have made at the larger range from the start. Hence the final
histogram depends only on the set of values, not on their order or batching: distributed ranks
fold to the global R and sum, and get the single-process histogram bit for bit.

BINS = 4096 keeps at least 2048 bins between 0 and the max (R < 2 max), the reference's
resolution.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from swin_trt.quantization.calibrators import Histogram

BINS = 4096
_CHUNK = 1 << 24  # histc counts in float32: keep every call below 2**24 elements to stay exact


def _range_above(value: float) -> float:
    """The smallest power of two strictly greater than ``value`` (> 0)."""
    return 2.0 ** (math.floor(math.log2(value)) + 1) if value > 0 else 2.0**-126


class HistogramCollector:
    def __init__(self) -> None:
        self.max = 0.0
        self.range = 0.0
        self.counts: torch.Tensor | None = None

    def collect(self, x: torch.Tensor) -> None:
        magnitude = x.detach().abs().float().flatten()
        if magnitude.numel() == 0:
            return
        batch_max = float(magnitude.max())
        self.max = max(self.max, batch_max)
        if self.counts is None:
            self.range = _range_above(self.max)
            self.counts = torch.zeros(BINS, dtype=torch.float64, device=x.device)
        self._grow_to(_range_above(self.max))
        for chunk in magnitude.split(_CHUNK):
            self.counts += torch.histc(chunk, BINS, 0.0, self.range).double()

    def _grow_to(self, new_range: float) -> None:
        while self.range < new_range:
            folded = self.counts.view(BINS // 2, 2).sum(1)
            self.counts = torch.cat([folded, torch.zeros(BINS // 2, dtype=folded.dtype, device=folded.device)])
            self.range *= 2

    def all_reduce(self) -> None:
        """Merge the statistics of all ranks (every rank ends with the global histogram)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = self.counts.device if self.counts is not None else torch.device("cpu")
        if dist.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        peak = torch.tensor([self.max], dtype=torch.float64, device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        self.max = float(peak)
        if self.counts is None:
            self.range = _range_above(self.max)
            self.counts = torch.zeros(BINS, dtype=torch.float64, device=device)
        self.counts = self.counts.to(device)
        self._grow_to(_range_above(self.max))
        dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)

    def histogram(self) -> Histogram:
        if self.counts is None:
            return Histogram(torch.zeros(BINS, dtype=torch.float64), 0.0, 0.0)
        return Histogram(self.counts.cpu(), self.range / BINS, self.max)
