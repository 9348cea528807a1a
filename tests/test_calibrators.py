"""Calibrator math against brute force on distributions whose best clip is found by search."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from swin_trt.quantization.calibrators import (
    amax_entropy,
    amax_mse,
    amax_percentile,
    compute_amax,
    entropy_divergences,
    mse_errors,
)
from swin_trt.quantization.collect import LINEAR_BINS, HistogramCollector


def _samples(kind: str, n: int = 400_000) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if kind == "gaussian":
        return torch.randn(n, generator=generator)
    if kind == "laplace":
        return torch.distributions.Laplace(0.0, 1.0).sample((n,))
    if kind == "gaussian+outliers":
        x = torch.randn(n, generator=generator)
        x[:20] = torch.linspace(40, 60, 20)  # 0.005 % of the values, 40-60 sigma out
        return x
    raise ValueError(kind)


def _histogram(x: torch.Tensor):
    collector = HistogramCollector()
    collector.collect(x)
    return collector.histogram()


KINDS = ("gaussian", "laplace", "gaussian+outliers")


def test_histogram_independent_of_batching_and_order():
    x = _samples("laplace")
    one = HistogramCollector()
    one.collect(x)
    split = HistogramCollector()
    for part in (x[x.abs() >= 0.5].flip(0), torch.zeros(3), x[x.abs() < 0.5]):
        split.collect(part)
    split.counts[0] -= 3  # the three extra zeros
    assert torch.equal(split.counts, one.counts) and split.max == one.max
    assert torch.equal(split.histogram().counts, one.histogram().counts)


@pytest.mark.parametrize("scale", [1.0, 1e5])  # 1e5: beyond float16, stored with a power-of-two offset
def test_histogram_matches_numpy(scale):
    x = _samples("gaussian") * scale
    collector = HistogramCollector()
    collector.collect(x[:1000])
    collector.collect(x[1000:])
    hist = collector.histogram()
    assert len(hist.counts) == LINEAR_BINS and hist.max == float(x.abs().max())
    assert hist.width == pytest.approx(hist.max / LINEAR_BINS)
    reference, _ = np.histogram(x.abs().numpy(), LINEAR_BINS, (0.0, hist.max))
    assert float(hist.counts.sum()) == pytest.approx(x.numel())
    # cumulative counts agree to 0.05 % of the samples at every edge (float16 keys are 0.1 % wide)
    assert np.abs(np.cumsum(hist.counts.numpy()) - np.cumsum(reference)).max() <= 5e-4 * x.numel()


@pytest.mark.parametrize("kind", KINDS)
def test_percentile_matches_numpy(kind):
    x = _samples(kind)
    hist = _histogram(x)
    for percentile in (99.0, 99.9, 99.99):
        expected = float(np.percentile(x.abs().numpy(), percentile))
        # one bin of resolution, plus one for numpy's interpolated quantile position
        assert abs(amax_percentile(hist, percentile) - expected) <= 2 * hist.width
    assert compute_amax(hist, "max") == float(x.abs().max())


def _brute_force_kl(counts: np.ndarray, i: int, levels: int = 128) -> float:
    """The reference definition, one threshold at a time (TensorRT / pytorch-quantization); ``levels`` =
    2**(bits-1)."""
    p = counts[:i].copy()
    p[i - 1] += counts[i:].sum()
    groups = np.digitize(np.arange(i), np.linspace(0, i, levels + 1)) - 1
    nonzero = counts[:i] > 0
    group_sum = np.bincount(groups, weights=counts[:i], minlength=levels)
    group_nonzero = np.bincount(groups, weights=nonzero, minlength=levels)
    q = np.where(nonzero, group_sum[groups] / np.maximum(group_nonzero[groups], 1), 0.0)
    return float(scipy.stats.entropy(p, q))


@pytest.mark.parametrize("kind", KINDS)
def test_entropy_matches_brute_force(kind):
    hist = _histogram(_samples(kind))
    candidates, divergences = entropy_divergences(hist)
    counts = hist.counts.numpy()
    brute = {int(i): _brute_force_kl(counts, int(i)) for i in candidates[::37]}
    for i, expected in brute.items():
        got = float(divergences[int(i) - int(candidates[0])])
        assert (np.isinf(expected) and np.isinf(got)) or got == pytest.approx(expected, rel=1e-6, abs=1e-12), i
    # the best threshold of the brute-force search over all candidates
    full = np.array([_brute_force_kl(counts, int(i)) for i in candidates])
    assert amax_entropy(hist) == pytest.approx(min(int(candidates[int(np.argmin(full))]) * hist.width, hist.max))


def _raw_mse(x: torch.Tensor, amax: float, bits: int = 8) -> float:
    qmax = 2 ** (bits - 1) - 1
    scale = amax / qmax
    quantized = torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
    return float(((quantized - x) ** 2).mean())


@pytest.mark.parametrize("kind", KINDS)
def test_mse_finds_the_brute_force_optimum(kind):
    x = _samples(kind)
    hist = _histogram(x)
    amax = amax_mse(hist)
    grid = np.linspace(0.5, float(x.abs().max()), 400)
    brute = min(_raw_mse(x, float(a)) for a in grid)
    assert _raw_mse(x, amax) <= brute * 1.02
    candidates, errors = mse_errors(hist)
    assert len(candidates) == len(errors)


@pytest.mark.parametrize("bits", [4, 6])
def test_mse_at_fewer_bits(bits):
    """--aprec below 8: the optimum moves (coarser steps clip more) and still matches a search on the raw values."""
    x = _samples("laplace")
    hist = _histogram(x)
    amax = amax_mse(hist, bits)
    grid = np.linspace(0.3, float(x.abs().max()), 400)
    assert _raw_mse(x, amax, bits) <= min(_raw_mse(x, float(a), bits) for a in grid) * 1.02
    assert amax < amax_mse(hist)


def test_entropy_at_fewer_bits():
    """KL against 2**(bits-1) merged levels at 5 bits, by brute force."""
    hist = _histogram(_samples("gaussian"))
    candidates, divergences = entropy_divergences(hist, num_bits=5)
    for i in candidates[::101].tolist():
        expected = _brute_force_kl(hist.counts.numpy(), i, levels=16)
        assert float(divergences[i - int(candidates[0])]) == pytest.approx(expected, rel=1e-6, abs=1e-12), i
    assert amax_entropy(hist, 5) < amax_entropy(hist)


def test_outliers_do_not_set_the_clip():
    """Percentile and entropy ignore 0.005 % of far outliers; MSE rightly keeps them (clipping a
    value of 50 to 4 costs more squared error than coarser steps do: see the brute-force test)."""
    hist = _histogram(_samples("gaussian+outliers"))
    assert hist.max > 40
    for method in ("percentile", "entropy"):
        assert 2.0 < compute_amax(hist, method) < 10.0, method


def test_exact_zeros_do_not_pull_the_clip_down():
    """Masked attention: a third of a softmax output is exactly 0; KL and MSE must not care."""
    probabilities = torch.rand(300_000, generator=torch.Generator().manual_seed(1)) ** 4
    masked = torch.cat([probabilities, torch.zeros(150_000)])
    plain, with_zeros = _histogram(probabilities), _histogram(masked)
    assert with_zeros.zeros - plain.zeros == 150_000  # (rand**4 has some float16 zeros of its own)
    for method in ("entropy", "mse"):
        assert compute_amax(with_zeros, method) == pytest.approx(compute_amax(plain, method), rel=0.02), method


def test_unknown_method_and_empty_statistics():
    hist = _histogram(torch.zeros(10))
    assert compute_amax(hist, "entropy") == 0.0
    with pytest.raises(ValueError, match="unknown calibrator"):
        compute_amax(_histogram(torch.ones(10)), "kl")
