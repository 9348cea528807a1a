"""pytorch-quantization's histogram calibration, reproduced (``calibrate --histogram pytorch-quantization``).

The reference toolkit calibrated with NVIDIA pytorch-quantization's ``HistogramCalibrator``
(``torch_hist=True``, 2048 bins). swin-trt's native statistics (``collect.py``) are built
differently and read differently, which moves amax by a bin or more. A user who must reproduce a
reference calibration picks this path; it follows the published algorithm
(TensorRT ``tools/pytorch-quantization/pytorch_quantization/calib/histogram.py``), and
``tests/test_calibrators.py`` holds it to an independent loop implementation of that description:

- Histogram: ``torch.histc`` of |x| (float32) in 2048 bins over [0, max of the FIRST batch]. A
  later batch with a larger max re-bins the range as ``torch.arange(0, max + width, width)`` with
  the first batch's width, and the earlier counts are added to the first bins. Counts are float32,
  so the result depends on batch order and cannot be merged across processes: refused under torchrun.
- percentile: the LOWER edge of the bin where the normalised CDF reaches p (native: the upper edge).
- entropy: the bin-0 count is replaced by bin 1's (native: exact zeros removed); KL for every
  threshold from bin 128 with stride 1; ties go to the LARGEST threshold; amax is its edge. When
  no value lies below max/16, upstream returns a threshold below every value (see ``entropy_amax``).
- mse: every bin CENTRE from bin 128 on is a candidate, scored by fake-quantizing the bin centres
  themselves (round(c * qmax / amax) / (qmax / amax), float32) weighted by the counts.
- max: the exact running max (pytorch-quantization's ``MaxCalibrator``).

Not bit for bit, and why: the KL divergences come from prefix sums, not scipy per candidate
(equal to ~1e-13; candidates within 1e-12 of the minimum count as tied, and the last is taken);
the MSE scores are summed in float64 on the CPU where pytorch-quantization averages in float32 on
the GPU (only near-ties of that size could resolve differently).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from swin_trt.errors import SwinTrtError
from swin_trt.quantization.calibrators import START_BIN, kl_divergences, levels
from swin_trt.quantization.collect import LINEAR_BINS, require_finite
from swin_trt.quantization.quantizer import DEFAULT_BITS, integer_range
from swin_trt.quantization.recipes import CALIBRATORS

TIE = 1e-12  # KL divergences this close to the minimum are ties (prefix sums vs scipy differ by ~1e-13)
FP16_TINY = 2.0**-24  # pytorch-quantization's kernel quantizes everything to 0 below this amax
MSE_ROWS = 256  # candidates scored at once: bounds memory when a histogram has grown large


@dataclass(frozen=True)
class HistcHistogram:
    """A finished pytorch-quantization histogram, in the types its amax functions read."""

    counts: np.ndarray  # int32, as pytorch-quantization converts them (hist.int())
    edges: np.ndarray  # float32; len(counts) + 1, or one more when torch.arange overshoots after growth (as upstream)
    max: float  # exact max |x|, for the max calibrator

    def amax(self, method: str, percentile: float = 99.99, num_bits: int = DEFAULT_BITS, quant_format: str = "int8") -> float:
        if quant_format != "int8":
            raise ValueError("pytorch-quantization's histograms calibrate int8 only (it has no FP8)")
        if method == "max":
            return self.max
        if method == "percentile":
            return percentile_amax(self.counts, self.edges, percentile)
        if method == "entropy":
            return entropy_amax(self.counts, self.edges, num_bits)
        if method == "mse":
            return mse_amax(self.counts, self.edges, num_bits)
        raise ValueError(f"unknown calibrator {method!r}; choose one of {CALIBRATORS}")


class HistcCollector:
    """Collects |x| as pytorch-quantization's ``HistogramCalibrator.collect`` with ``torch_hist=True``.

    Takes the same arguments as :class:`~swin_trt.quantization.collect.HistogramCollector`; the
    thread pool is unused (``torch.histc`` is multi-threaded itself).
    """

    def __init__(self, pool: Executor | None = None, name: str = "?", bins: int = LINEAR_BINS) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise SwinTrtError("--histogram pytorch-quantization needs one process (its histogram depends on batch order "
                               "and cannot be merged across ranks, and the reference calibrated on one GPU): run without torchrun")
        self.name = name
        self.bins = bins
        self.max = 0.0
        self.counts: torch.Tensor | None = None  # float32, as torch.histc returns them
        self.edges: torch.Tensor | None = None  # float32

    def collect(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        x = x.detach()
        if torch.min(x) < 0:
            x = x.abs()
        x = x.float()
        peak = x.max()
        require_finite(float(peak), self.name)
        self.max = max(self.max, float(peak))
        if self.counts is None:
            self.counts = torch.histc(x, bins=self.bins, min=0, max=float(peak))
            self.edges = torch.linspace(0, float(peak), self.bins + 1)
            return
        if peak > self.edges[-1]:
            width = self.edges[1] - self.edges[0]
            if width <= 0:
                raise SwinTrtError(f"{self.name}: the first calibration batch was all zeros, so pytorch-quantization's histogram "
                                   "has no bin width to grow by: use --histogram native, or other calibration images")
            self.bins = int((peak / width).ceil().item())
            self.edges = torch.arange(0, peak + width, width, device=x.device)
        counts = torch.histc(x, bins=self.bins, min=0, max=float(self.edges[-1]))
        counts[: self.counts.numel()] += self.counts
        self.counts = counts

    def all_reduce(self) -> None:
        """Nothing to merge: this collector only runs in one process (see ``__init__``)."""

    def histogram(self) -> HistcHistogram:
        if self.counts is None:
            return HistcHistogram(np.zeros(self.bins, dtype=np.int32), np.zeros(self.bins + 1, dtype=np.float32), 0.0)
        return HistcHistogram(self.counts.int().cpu().numpy(), self.edges.cpu().numpy(), self.max)


def percentile_amax(counts: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    """The lower edge of the bin where the CDF, normalised before summing, reaches ``percentile`` %."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    cdf = np.cumsum(counts / counts.sum())
    # rounding can leave cdf[-1] a hair below 1 (p = 100): pytorch-quantization then reads edges[len(counts)]
    return float(edges[min(int(np.searchsorted(cdf, percentile / 100)), len(edges) - 1)])


def entropy_amax(counts: np.ndarray, edges: np.ndarray, num_bits: int = DEFAULT_BITS, start_bin: int = START_BIN) -> float:
    """The edge after the threshold bin with the smallest KL divergence, the largest one among ties.

    Where no count lies below a threshold, upstream's KL is NaN, and its ``np.argmin`` over the
    reversed divergences stops at the first NaN: it returns the largest such threshold, the lower
    edge of the first occupied bin, below every value. Reproduced, not repaired.
    """
    bins = torch.from_numpy(counts.astype(np.float64))
    bins[0] = bins[1]  # pytorch-quantization's way of discounting zeros
    candidates, divergences = kl_divergences(bins, start_bin, levels(num_bits))
    undefined = torch.nonzero(torch.isnan(divergences)).flatten()
    if len(undefined):
        return float(edges[int(candidates[int(undefined[-1])])])
    best = divergences.min()
    tied = torch.nonzero(divergences <= best + TIE * max(1.0, abs(float(best)))).flatten()
    return float(edges[int(candidates[int(tied[-1])])])


def mse_amax(counts: np.ndarray, edges: np.ndarray, num_bits: int = DEFAULT_BITS, start_bin: int = START_BIN) -> float:
    """The bin centre that, as amax, minimises the count-weighted squared error of fake-quantizing the centres."""
    weights = torch.from_numpy(counts).float()
    bounds = torch.from_numpy(edges).float()
    # [: len(weights)]: after an arange overshoot (see HistcHistogram.edges) upstream fails on mismatched shapes
    centres = ((bounds[1:] + bounds[:-1]) / 2)[: len(weights)]
    candidates = centres[start_bin:]
    qmax = torch.tensor(float(integer_range(num_bits)[1]))
    errors = []
    for rows in candidates.split(MSE_ROWS):
        scale = (qmax / rows)[:, None]
        quantized = torch.round(centres * scale).clamp(-qmax, qmax) / scale
        quantized = torch.where(rows[:, None] < FP16_TINY, torch.zeros_like(quantized), quantized)
        errors.append((((quantized - centres) ** 2) * weights).double().sum(1))
    return float(candidates[int(torch.argmin(torch.cat(errors)))])
