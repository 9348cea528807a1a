"""Calibrator math against brute force on distributions whose best clip is found by search."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from swin_trt.errors import SwinTrtError
from swin_trt.models.checkpoint import read_checkpoint
from swin_trt.quantization.calibrate import COLLECTORS
from swin_trt.quantization.calibrators import (
    amax_entropy,
    amax_mse,
    amax_percentile,
    compute_amax,
    entropy_divergences,
    mse_errors,
)
from swin_trt.quantization.collect import LINEAR_BINS, HistogramCollector
from swin_trt.quantization.pytorch_quantization_histogram import HistcCollector, entropy_amax, mse_amax, percentile_amax
from swin_trt.settings import HISTOGRAMS


def _laplace(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Laplace samples that do not depend on the global RNG (so not on which tests ran before)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.distributions.Laplace(0.0, 1.0).sample(shape)


def _samples(kind: str, n: int = 400_000) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if kind == "gaussian":
        return torch.randn(n, generator=generator)
    if kind == "laplace":
        return _laplace((n,), seed=0)
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
    """The reference definition, one threshold at a time (TensorRT / pytorch-quantization)."""
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


def _raw_mse(x: torch.Tensor, amax: float, num_bits: int = 8) -> float:
    qmax = 2 ** (num_bits - 1) - 1
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


def test_entropy_and_mse_at_4_bits_match_brute_force():
    """Fewer bits: KL merges into 8 levels and MSE rounds to 7 steps (``--aprec 4``)."""
    x = _samples("laplace", 100_000)
    hist = _histogram(x)
    candidates, divergences = entropy_divergences(hist, num_bits=4)
    counts = hist.without_zeros().numpy()
    for i in candidates[::97]:
        assert float(divergences[int(i) - int(candidates[0])]) == pytest.approx(_brute_force_kl(counts, int(i), levels=8), rel=1e-6, abs=1e-12)
    amax = amax_mse(hist, num_bits=4)
    grid = np.linspace(0.5, float(x.abs().max()), 200)
    brute = min(_raw_mse(x, float(a), num_bits=4) for a in grid)
    assert _raw_mse(x, amax, num_bits=4) <= brute * 1.02
    assert amax < amax_mse(hist)  # coarser steps clip harder


# pytorch-quantization's HistogramCalibrator (``--histogram pytorch-quantization``) against a
# straightforward re-implementation of its published description, one candidate at a time.


def _description_histogram(batches: list[torch.Tensor], bins: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """torch.histc of |x| in 2048 bins over [0, first batch's max]; a larger later max re-bins with the
    first width (edges = arange(0, max + width, width), float32), earlier counts added to the first bins."""
    hist = edges = None
    for x in batches:
        x = x.abs().float()
        top = x.max()
        if hist is None:
            hist, edges = torch.histc(x, bins, 0, float(top)), torch.linspace(0, float(top), bins + 1)
            continue
        if top > edges[-1]:
            width = edges[1] - edges[0]
            bins = int(torch.ceil(top / width))
            edges = torch.arange(0, top + width, width)
        grown = torch.histc(x, bins, 0, float(edges[-1]))
        grown[: len(hist)] += hist
        hist = grown
    return hist.int().numpy(), edges.numpy()


def _description_percentile(counts: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """Lower edge of the first bin where the running sum of count/total reaches p/100."""
    total, running = counts.sum(), 0.0
    for i, count in enumerate(counts):
        running += count / total
        if running >= percentile / 100:
            return float(edges[i])
    return float(edges[len(counts)])


def _description_entropy(counts: np.ndarray, edges: np.ndarray, levels: int = 128) -> float:
    """bins[0] := bins[1]; KL of every threshold i = 128 .. n (stride 1); the LAST minimum; edges[i]."""
    bins = counts.astype(np.float64)
    bins[0] = bins[1]
    divergences = np.array([_brute_force_kl(bins, i, levels) for i in range(128, len(bins) + 1)])
    last_minimum = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    return float(edges[128 + last_minimum])


def _description_mse(counts: np.ndarray, edges: np.ndarray, num_bits: int = 8) -> float:
    """Candidates: bin centres 128 .. n-1; each fake-quantizes all centres in float32
    (rint(c * qmax/amax), clamp, / (qmax/amax); 0 when amax < 2**-24); the FIRST minimum of the
    count-weighted squared error."""
    qmax = np.float32(2 ** (num_bits - 1) - 1)
    centres = (edges[1:] + edges[:-1]) / np.float32(2)
    weights = counts.astype(np.float32)
    best, best_error = -1, np.inf
    for i in range(128, len(centres)):
        amax = centres[i]
        if amax < 2.0**-24:
            quantized = np.zeros_like(centres)
        else:
            scale = qmax / amax
            quantized = np.clip(np.rint(centres * scale), -qmax, qmax) / scale
        error = np.sum((((quantized - centres) ** 2) * weights).astype(np.float64))
        if error < best_error:
            best, best_error = i, error
    return float(centres[best])


def _batches(kind: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    if kind == "growing":  # later batches exceed the first range twice, one stays inside it
        return [torch.randn(20_000, generator=generator) * s for s in (1.0, 1.7, 0.8, 2.9)]
    if kind == "laplace":
        return list(_laplace((4, 30_000), seed=3).unbind())
    if kind == "softmax-like":  # non-negative, a third exact zeros, one batch with a larger max
        x = torch.rand(3, 30_000, generator=generator) ** 6
        x[:, :10_000] = 0
        x[2, 0] = 1.5
        return list(x.unbind())
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ("growing", "laplace", "softmax-like"))
def test_pytorch_quantization_histogram_matches_description(kind):
    batches = _batches(kind)
    collector = HistcCollector()
    for x in batches:
        collector.collect(x)
    hist = collector.histogram()
    counts, edges = _description_histogram(batches)
    assert np.array_equal(hist.counts, counts) and np.array_equal(hist.edges, edges)
    assert hist.max == max(float(x.abs().max()) for x in batches) == hist.amax("max")
    if kind == "growing":
        assert len(counts) > 2048  # the range grew


@pytest.mark.parametrize("kind", ("growing", "laplace", "softmax-like"))
def test_pytorch_quantization_amax_equals_description(kind):
    counts, edges = _description_histogram(_batches(kind))
    for percentile in (99.0, 99.9, 99.99, 100.0):
        assert percentile_amax(counts, edges, percentile) == _description_percentile(counts, edges, percentile), percentile
    assert entropy_amax(counts, edges) == _description_entropy(counts, edges)
    assert mse_amax(counts, edges) == _description_mse(counts, edges)


def test_pytorch_quantization_bit_widths_and_ties():
    counts, edges = _description_histogram(_batches("laplace"))
    assert entropy_amax(counts, edges, num_bits=5) == _description_entropy(counts, edges, levels=16)
    assert mse_amax(counts, edges, num_bits=5) == _description_mse(counts, edges, num_bits=5)
    # one occupied bin below the first candidate: every threshold has KL exactly 0 upstream, and
    # it keeps the last (largest) one, whatever rounding our closed form leaves
    spike = np.zeros(2048, dtype=np.int32)
    spike[100] = 5
    spike_edges = np.linspace(0, 1, 2049, dtype=np.float32)
    assert entropy_amax(spike, spike_edges) == _description_entropy(spike, spike_edges) == 1.0


def test_pytorch_quantization_differs_from_native_where_documented():
    """The two paths read the same data differently: upstream's percentile is the lower bin edge."""
    x = _samples("gaussian")
    collector = HistcCollector()
    collector.collect(x)
    histc = collector.histogram()
    native = _histogram(x)
    width = float(histc.edges[1])
    assert histc.amax("percentile") != native.amax("percentile")
    assert abs(histc.amax("percentile") - (native.amax("percentile") - width)) <= 2 * width


def test_pytorch_quantization_refuses_what_it_cannot_reproduce(monkeypatch):
    collector = HistcCollector(name="blocks.0.attn.softmax_quantizer")
    collector.collect(torch.zeros(10))
    with pytest.raises(SwinTrtError, match="first calibration batch was all zeros"):
        collector.collect(torch.ones(10))
    with pytest.raises(SwinTrtError, match="quantizer x saw a non-finite value"):
        HistcCollector(name="x").collect(torch.tensor([1.0, float("nan")]))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args: 2)
    with pytest.raises(SwinTrtError, match="run without torchrun"):
        HistcCollector()


def test_every_histogram_choice_has_a_collector():
    assert tuple(COLLECTORS) == HISTOGRAMS


def test_calibrated_model_amax_equal_the_description(trained_micro, digits_dir):
    """Through the real pipeline (recipe 1, per-tensor weights, 3 train batches): every activation
    amax equals the description applied to what that quantizer saw, every weight amax is max|W|."""
    from swin_trt.api import load_model
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.loader import build_loader
    from swin_trt.data.transforms import eval_transform
    from swin_trt.distributed import DistContext
    from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
    from swin_trt.quantization.model import named_quantizers, quantize_model
    from swin_trt.quantization.recipes import get_recipe

    model = load_model(checkpoint=trained_micro.checkpoint)
    dataset = build_dataset(digits_dir, "train", eval_transform(model.swin_trt_config.data), False, 10)
    loader = build_loader(dataset, 16, DistContext(), workers=0)
    qkv_inputs: list[torch.Tensor] = []
    hook = model.get_submodule("layers.0.blocks.0.attn.qkv").register_forward_pre_hook(lambda m, args: qkv_inputs.append(args[0].clone()))
    with torch.no_grad():
        for step, (images, _) in enumerate(loader):
            if step == 3:
                break
            model(images)
    hook.remove()

    quantize_model(model, get_recipe("1"), per_channel_weights=False)
    statistics, images = collect_statistics(model, loader, 3, DistContext(), "pytorch-quantization")
    assert images == 48
    load_calib_amax(model, statistics, "percentile")
    activations = [(name, q) for name, q in named_quantizers(model) if q.enabled and not name.endswith("weight_quantizer")]
    for name, quantizer in activations:
        expected = _description_percentile(statistics[name].counts, statistics[name].edges, 99.99)
        assert float(quantizer.amax) == float(torch.tensor(expected)), name
    for name, _ in activations[:3]:  # the entropy loop is slow; three quantizers are enough here
        assert statistics[name].amax("entropy") == _description_entropy(statistics[name].counts, statistics[name].edges), name
    # the histogram itself, rebuilt from the tensors the first qkv received
    name = "layers.0.blocks.0.attn.qkv.input_quantizer"
    counts, edges = _description_histogram(qkv_inputs)
    assert np.array_equal(statistics[name].counts, counts) and np.array_equal(statistics[name].edges, edges)
    for module in model.modules():
        if hasattr(module, "weight_quantizer") and module.weight_quantizer.enabled:
            assert float(module.weight_quantizer.amax) == float(module.weight.detach().abs().max())


def test_calibrate_cli_records_the_histogram(run_cli, trained_micro, digits_dir, tmp_path):
    code, out, err = run_cli("calibrate", "--resume", trained_micro.checkpoint, "--data-path", digits_dir, "--num-calib-batch", "2",
                             "--calib-batchsz", "8", "--histogram", "pytorch-quantization",
                             "--per-tensor-weights", "--skip-eval", "--calib-output-path", tmp_path, "--workers", "0")
    assert code == 0, err
    _, meta = read_checkpoint(tmp_path / "swin_micro_calib.pth")
    assert meta["quantization"]["histogram"] == "pytorch-quantization" and meta["quantization"]["per_channel_weights"] is False


def test_entropy_never_clips_below_every_value():
    """A near-uniform softmax (random weights: every value near 1/49) has nothing below max/16, so
    thresholds there leave Q empty. Native entropy must not pick them; pytorch-quantization's NaN
    handling does (np.argmin stops at a NaN), and the reproduction must follow it."""
    batches = [0.5 + 0.5 * torch.rand(20_000, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    native = _histogram(torch.cat(batches))
    assert compute_amax(native, "entropy") >= 0.5 - native.width  # (the float16 keys spread counts by up to a bin)
    counts, edges = _description_histogram(batches)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = _description_entropy(counts, edges)
    assert entropy_amax(counts, edges) == expected < 0.5
