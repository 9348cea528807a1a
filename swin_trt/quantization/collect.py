"""Calibration statistics: the exact max and a histogram of |x| for each activation quantizer.

Values are counted by the bit pattern of ``|x|`` as float16: 2**15 keys in value order, each
key a bin of relative width 2**-10 (about 0.1 %). This costs a cast and a ``bincount`` -- 1.7 ns
per value on these CPUs against 8-10 ns for ``torch.histc`` -- and the counts are integers that
do not depend on batch order or size, so distributed ranks sum theirs and get the single-process
histogram bit for bit. The calibrators then read it as the reference's 2048 equal bins over
[0, max] (:meth:`HistogramCollector.histogram`).

That read-out works on 2**15 keys per quantizer, once per calibration, in numpy: torch's
boolean-mask indexing and ``searchsorted`` go parallel on arrays this small, and on a loaded
2-core machine their thread hand-offs took 20 ms each (52 ms a quantizer, 8 s for Swin-T's 150,
more than collecting a batch) against 1 ms on one thread (issue 10, ``docs/cpu.md``).

Values beyond float16's range are first scaled by a power of two (``exponent``), which only
shifts keys; when a later batch needs a larger scale, the counts are moved to the new keys.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor

import numpy as np
import torch
import torch.distributed as dist

from swin_trt.quantization.calibrators import Histogram
from swin_trt.quantization.quantizer import CalibrationError

KEYS = 1 << 15  # non-negative float16 bit patterns
SIGN_BIT_OFF = 0x7FFF  # |x| of a float16, on its bits (in place, one pass less than a float16 abs)
LINEAR_BINS = 2048  # the reference's histogram resolution
_FP16_SAFE = 32768.0  # largest power of two below float16's max (65504)


def _exponent_for(peak: float) -> int:
    """Smallest e >= 0 with peak * 2**-e below float16's range."""
    return max(0, math.ceil(math.log2(peak / _FP16_SAFE))) if peak > _FP16_SAFE else 0


def require_finite(peak: float, name: str) -> None:
    """Refuse a non-finite value: it would make every histogram bin infinitely wide."""
    if not math.isfinite(peak):
        raise CalibrationError(f"quantizer {name} saw a non-finite value ({peak}) during calibration: check the checkpoint's weights and the input data")


def key_values() -> torch.Tensor:
    """The float16 value of every key, as float64."""
    return torch.arange(KEYS, dtype=torch.int32).to(torch.int16).view(torch.float16).double()


class HistogramCollector:
    def __init__(self, pool: Executor | None = None, name: str = "?") -> None:
        self.pool = pool
        self.name = name
        self.max = 0.0
        self.exponent = 0
        self.counts: torch.Tensor | None = None

    def collect(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        low, high = torch.aminmax(x.detach())
        peak = max(-float(low), float(high))
        require_finite(peak, self.name)
        self.max = max(self.max, peak)
        if self.counts is None:
            self.counts = torch.zeros(KEYS, dtype=torch.int64, device=x.device)
        self._rescale(_exponent_for(self.max))
        scaled = x.detach() if self.exponent == 0 else x.detach() * 2.0**-self.exponent
        keys = scaled.to(torch.float16).view(torch.int16).bitwise_and_(SIGN_BIT_OFF).flatten()
        self.counts += self._bincount(keys)

    def _bincount(self, keys: torch.Tensor) -> torch.Tensor:
        # torch's CPU bincount runs on one thread and releases the GIL: split it over the pool
        if self.pool is None or keys.device.type != "cpu" or keys.numel() < (1 << 20):
            return torch.bincount(keys, minlength=KEYS)
        parts = keys.chunk(max(1, torch.get_num_threads()))
        return sum(self.pool.map(lambda part: torch.bincount(part, minlength=KEYS), parts))

    def _rescale(self, exponent: int) -> None:
        if exponent <= self.exponent:
            return
        values = key_values().to(self.counts.device) * 2.0 ** (self.exponent - exponent)
        moved = values.to(torch.float16).view(torch.int16).long()
        self.counts = torch.zeros_like(self.counts).index_add_(0, moved, self.counts)
        self.exponent = exponent

    def all_reduce(self) -> None:
        """Merge the statistics of all ranks (every rank ends with the global histogram)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        peak = torch.tensor([self.max], dtype=torch.float64, device=device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        self.max = float(peak)
        if self.counts is None:
            self.counts = torch.zeros(KEYS, dtype=torch.int64, device=device)
        self.counts = self.counts.to(device)
        self._rescale(_exponent_for(self.max))
        dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)

    def histogram(self, bins: int = LINEAR_BINS) -> Histogram:
        """The counts as ``bins`` equal bins over [0, max].

        Key k holds the values that round to its float16 value v_k, i.e. the interval between the
        midpoints to its neighbours; each key's count is spread evenly over that interval (clipped
        at the exact max) and the cumulative count is read off at the linear bin edges.
        """
        if self.counts is None or self.max <= 0:  # no values, or only zeros (counted as such)
            return Histogram(torch.zeros(bins, dtype=torch.float64), 0.0, 0.0, zeros=0.0 if self.counts is None else float(self.counts[0]))
        counts = self.counts.cpu().double().numpy()
        values = key_values().numpy() * 2.0**self.exponent
        finite = np.isfinite(values)
        counts, values = counts[finite], values[finite]
        upper = np.minimum(np.concatenate([(values[:-1] + values[1:]) / 2, values[-1:]]), self.max)
        lower = np.concatenate([np.zeros(1), upper[:-1]])
        cumulative = np.cumsum(counts)  # integer counts: exact in float64
        edges = torch.linspace(0.0, self.max, bins + 1, dtype=torch.float64).numpy()  # torch's edges, bit for bit
        index = np.minimum(np.searchsorted(upper, edges), len(upper) - 1)
        span = np.maximum(upper[index] - lower[index], 1e-300)
        inside = np.clip((edges - lower[index]) / span, 0.0, 1.0)
        below = np.where(index > 0, cumulative[np.maximum(index - 1, 0)], 0.0)
        at_edges = below + inside * counts[index]
        at_edges[0], at_edges[-1] = 0.0, cumulative[-1]
        return Histogram(torch.from_numpy(np.maximum(np.diff(at_edges), 0.0)), self.max / bins, self.max, zeros=float(self.counts[0]))
