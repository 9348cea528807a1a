"""amax from calibration statistics: max, percentile, entropy (KL) and MSE.

Statistics are a histogram of |x| in equal bins over [0, max] (2048 as the reference) plus the
exact max. Every method is a pure, vectorised function of that histogram. modelopt computes entropy with a
Python loop over candidate thresholds (265 s for Swin-T on these CPUs) and its MSE gave a broken
model, so these are written here, each tested against a brute-force evaluation of the same
definition on distributions whose best clip is known. (``pytorch_quantization_histogram`` reuses
:func:`kl_divergences` for its own, differently read, histograms.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from swin_trt.errors import SwinTrtError
from swin_trt.quantization.quantizer import DEFAULT_BITS, FP8_MAX, integer_range
from swin_trt.quantization.recipes import CALIBRATORS

QUANT_BINS = 128  # positive levels of signed 8-bit: the KL target resolution (TensorRT's algorithm)
START_BIN = 128  # smallest threshold candidate, in histogram bins


def levels(num_bits: int) -> int:
    """Magnitude levels of a signed ``num_bits`` quantizer, qmax + 1 (128 for 8 bits): KL's target resolution."""
    return integer_range(num_bits)[1] + 1


@dataclass(frozen=True)
class Histogram:
    """Counts of |x| in ``len(counts)`` bins of ``width`` from 0 to ``max`` (the exact maximum)."""

    counts: torch.Tensor  # float64
    width: float
    max: float
    zeros: float = 0.0  # how many of counts[0] are exact zeros

    def without_zeros(self) -> torch.Tensor:
        """Counts with exact zeros removed. Zero quantizes exactly at any scale, so it carries no
        information about the best clip; but masked attention (the shifted-window mask) makes up
        to half of a softmax output exact zeros, which drags KL and MSE thresholds towards 0
        (entropy chose amax 0.06 for a softmax whose values reach 1)."""
        counts = self.counts.clone()
        counts[0] = (counts[0] - self.zeros).clamp(min=0.0)
        return counts

    def amax(self, method: str, percentile: float = 99.99, num_bits: int = DEFAULT_BITS, quant_format: str = "int8") -> float:
        return compute_amax(self, method, percentile, num_bits, quant_format)


def amax_max(hist: Histogram) -> float:
    return hist.max


def amax_percentile(hist: Histogram, percentile: float = 99.99) -> float:
    """The upper edge of the bin where the CDF of |x| reaches ``percentile`` %, at most the max."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    counts = hist.counts
    cdf = torch.cumsum(counts, 0)
    index = int(torch.searchsorted(cdf, cdf[-1] * (percentile / 100.0)).clamp(max=len(counts) - 1))
    return min((index + 1) * hist.width, hist.max)


def _prefix(values: torch.Tensor) -> torch.Tensor:
    return torch.cat([values.new_zeros(1), torch.cumsum(values, 0)])


def entropy_divergences(hist: Histogram, start_bin: int = START_BIN, num_bits: int = DEFAULT_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """KL divergences of every threshold candidate of ``hist``, exact zeros left out (see
    :meth:`Histogram.without_zeros`). Returns (candidate bin counts i, divergences)."""
    return kl_divergences(hist.without_zeros().double(), start_bin, levels(num_bits))


def kl_divergences(counts: torch.Tensor, start_bin: int = START_BIN, quant_bins: int = QUANT_BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P || Q) for every threshold of ``i`` bins, ``start_bin <= i <= len(counts)``, at once.

    P is the histogram cut at i with everything beyond folded into bin i-1; Q merges the first i
    bins into ``quant_bins`` groups and spreads each group's count evenly over its non-empty bins
    (the TensorRT/pytorch-quantization definition). Written with prefix sums over groups, so all
    candidates cost O(candidates x quant_bins) instead of a loop over bins per candidate.
    Returns (candidate bin counts i, divergences); NaN where no count lies below the threshold.
    """
    n = len(counts)
    if n <= start_bin:
        return torch.tensor([n]), torch.zeros(1, dtype=torch.float64)
    total = counts.sum()
    nonzero = (counts > 0).double()
    clogc = torch.where(counts > 0, counts * torch.log(counts.clamp(min=1e-300)), torch.zeros_like(counts))
    sum_c, sum_nz, sum_clogc = _prefix(counts), _prefix(nonzero), _prefix(clogc)

    cand = torch.arange(start_bin, n + 1, dtype=torch.int64)  # threshold after i bins
    groups = torch.arange(quant_bins + 1, dtype=torch.float64)
    # group g holds bins j with g*i/128 <= j < (g+1)*i/128 (np.digitize over linspace(0, i, 129))
    edges = torch.ceil(cand[:, None].double() * groups[None, :] / quant_bins).long().clamp(max=n)
    edges[:, -1] = cand
    lo, hi = edges[:, :-1], edges[:, 1:]
    group_sum = sum_c[hi] - sum_c[lo]
    group_nz = sum_nz[hi] - sum_nz[lo]
    kept = sum_c[cand]  # sum of Q before normalisation (outliers are not in Q)

    last = cand - 1
    c_last = counts[last]
    # regular bins: all bins j < i-1, i.e. every group, minus bin i-1 (in the last group)
    reg_c = group_sum.clone()
    reg_clogc = sum_clogc[hi] - sum_clogc[lo]
    reg_c[:, -1] -= c_last
    reg_clogc[:, -1] -= torch.where(c_last > 0, c_last * torch.log(c_last.clamp(min=1e-300)), torch.zeros_like(c_last))
    q_level = torch.where(group_nz > 0, group_sum / group_nz.clamp(min=1), torch.ones_like(group_sum))
    log_q = torch.log(q_level.clamp(min=1e-300)) - torch.log(kept)[:, None]
    # sum_j p_j log(p_j / q_j) with p_j = c_j / T over the regular bins
    regular = (reg_clogc - reg_c * math.log(total) - reg_c * log_q).sum(1) / total

    outliers = total - kept
    p_last = (c_last + outliers) / total
    q_last_level = q_level[:, -1]
    q_last = torch.where(c_last > 0, q_last_level / kept, torch.zeros_like(kept))
    last_term = torch.where(
        p_last > 0,
        torch.where(q_last > 0, p_last * torch.log(p_last.clamp(min=1e-300) / q_last.clamp(min=1e-300)), torch.full_like(p_last, math.inf)),
        torch.zeros_like(p_last),
    )
    # no count below the threshold leaves Q empty: KL is undefined (NaN, as scipy's entropy gives)
    return cand, torch.where(kept > 0, regular + last_term, torch.full_like(kept, math.nan))


def amax_entropy(hist: Histogram, num_bits: int = DEFAULT_BITS) -> float:
    """The threshold whose quantization keeps P closest to Q (minimum KL divergence)."""
    candidates, divergence = entropy_divergences(hist, num_bits=num_bits)
    # a threshold below every value (a near-uniform softmax has none below max/16) would clip them all: never the best
    best = int(candidates[int(torch.argmin(torch.nan_to_num(divergence, nan=math.inf)))])
    return min(best * hist.width, hist.max)


def mse_errors(hist: Histogram, start_bin: int = START_BIN, num_bits: int = DEFAULT_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected squared error of fake quantization for amax = each bin's upper edge.

    Values below amax cost the rounding noise step**2 / 12 (step = amax / qmax), values above it
    the clipping error (x - amax)**2, with x at the bin centres: O(bins) with prefix sums. Unlike
    rounding the bin centres themselves (what modelopt and pytorch-quantization do, which breaks
    down when a quantization step is narrower than a histogram bin), this tracks the error on the
    raw values: the tests compare it with a brute-force search on the samples. Exact zeros, which
    have no error, are left out.
    Returns (candidate amax values, errors).
    """
    counts = hist.without_zeros().double()
    n = len(counts)
    centres = (torch.arange(n, dtype=torch.float64) + 0.5) * hist.width
    candidates_bins = torch.arange(min(start_bin, n), n + 1)
    candidates = candidates_bins.double() * hist.width
    total = counts.sum()
    # statistics of the bins at or above each candidate edge (suffix sums)
    above_n = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0])
    above_s1 = torch.flip(torch.cumsum(torch.flip(counts * centres, [0]), 0), [0])
    above_s2 = torch.flip(torch.cumsum(torch.flip(counts * centres**2, [0]), 0), [0])
    pad = torch.zeros(1, dtype=torch.float64)
    above_n, above_s1, above_s2 = (torch.cat([v, pad])[candidates_bins] for v in (above_n, above_s1, above_s2))
    clipped = above_s2 - 2 * candidates * above_s1 + candidates**2 * above_n
    rounding = (total - above_n) * (candidates / integer_range(num_bits)[1]) ** 2 / 12.0
    return candidates, (clipped + rounding) / total


def amax_mse(hist: Histogram, num_bits: int = DEFAULT_BITS) -> float:
    candidates, errors = mse_errors(hist, num_bits=num_bits)
    return min(float(candidates[int(torch.argmin(errors))]), hist.max)


FP8_MANTISSA_BITS = 3
FP8_MIN_EXPONENT = -6  # of the smallest normal E4M3 number, 2**-6; below it the step stays 2**-9 (subnormals)
FP8_CALIBRATORS = ("max", "percentile", "mse")  # entropy's KL target is a uniform grid of 2**(bits-1) levels: an integer notion


def fp8_steps(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The E4M3 grid spacing at ``values`` (>= 0) for each ``scale``: s * 2**(e - 3) with e the
    exponent of value / s, at least -6 (the subnormal range has the spacing of the smallest binade)."""
    exponent = torch.floor(torch.log2((values / scale).clamp(min=2.0**FP8_MIN_EXPONENT)))
    return scale * torch.exp2(exponent - FP8_MANTISSA_BITS)


def fp8_mse_errors(hist: Histogram, start_bin: int = START_BIN, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected squared error of FP8 E4M3 fake quantization for amax = each bin's upper edge.

    Like :func:`mse_errors`, with FP8's rounding noise: a value below amax costs step(x)**2 / 12
    where the step grows with the value's binade (:func:`fp8_steps`, scale = amax / 448) instead of
    one step for every value; above amax, the clipping error (x - amax)**2. Values at bin centres,
    exact zeros left out. The noise depends on each value's binade, so it is a (candidates x bins)
    sum, done in blocks of ``block`` candidates. Returns (candidate amax values, errors)."""
    counts = hist.without_zeros().double()
    n = len(counts)
    centres = (torch.arange(n, dtype=torch.float64) + 0.5) * hist.width
    candidates = torch.arange(min(start_bin, n), n + 1).double() * hist.width
    errors = []
    for chunk in candidates.split(block):
        amax = chunk[:, None]
        inside = centres[None, :] <= amax
        noise = torch.where(inside, fp8_steps(centres[None, :], amax / FP8_MAX) ** 2 / 12.0, (centres[None, :] - amax) ** 2)
        errors.append((noise * counts[None, :]).sum(1))
    return candidates, torch.cat(errors) / counts.sum().clamp(min=1.0)


def amax_fp8_mse(hist: Histogram) -> float:
    candidates, errors = fp8_mse_errors(hist)
    return min(float(candidates[int(torch.argmin(errors))]), hist.max)


def compute_amax(hist: Histogram, method: str, percentile: float = 99.99, num_bits: int = DEFAULT_BITS, quant_format: str = "int8") -> float:
    if hist.max <= 0:
        return 0.0
    if quant_format == "fp8":
        if method not in FP8_CALIBRATORS:
            raise SwinTrtError(f"--calibrator {method} does not apply to --format fp8; choose one of {', '.join(FP8_CALIBRATORS)}")
        if method == "mse":
            return amax_fp8_mse(hist)
    if method == "max":
        return amax_max(hist)
    if method == "percentile":
        return amax_percentile(hist, percentile)
    if method == "entropy":
        return amax_entropy(hist, num_bits)
    if method == "mse":
        return amax_mse(hist, num_bits)
    raise ValueError(f"unknown calibrator {method!r}; choose one of {CALIBRATORS}")
