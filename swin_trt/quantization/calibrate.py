"""PTQ: collect activation statistics over calibration batches, then set every amax."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import torch
from torch import nn
from torch.utils.data import DataLoader

from swin_trt.console import progress
from swin_trt.distributed import DistContext, all_reduce_sum
from swin_trt.float32 import exact_float32
from swin_trt.quantization.calibrators import Histogram
from swin_trt.quantization.collect import HistogramCollector
from swin_trt.quantization.model import is_weight_quantizer, named_quantizers
from swin_trt.quantization.modules import QuantLinear
from swin_trt.quantization.pytorch_quantization_histogram import HistcCollector, HistcHistogram
from swin_trt.quantization.quantizer import CalibrationError

COLLECTORS = {"native": HistogramCollector, "pytorch-quantization": HistcCollector}  # keys: settings.HISTOGRAMS
Statistics = Histogram | HistcHistogram


class _PassThrough:
    def collect(self, x: torch.Tensor) -> None:
        pass


@torch.no_grad()
def collect_statistics(
    model: nn.Module, loader: DataLoader, num_batches: int, context: DistContext, histogram: str = "native"
) -> tuple[dict[str, Statistics], int]:
    """Run exactly ``num_batches`` batches (per process) through ``model`` with its enabled
    activation quantizers collecting into ``histogram``'s collectors (see ``COLLECTORS``), and
    merge the statistics of all ranks.

    Quantizers pass values through unchanged while collecting, so every layer sees the FP
    activations (as the reference). In exact float32 on CUDA (TF32 off, :mod:`swin_trt.float32`):
    a CUDA calibration then matches the CPU's. Returns (histograms by quantizer name, images used
    in total).
    """
    check_weights(model)  # before the pass over the data, which a NaN weight would fail less clearly
    collectors: dict[str, HistogramCollector | HistcCollector] = {}
    pool = ThreadPoolExecutor(max_workers=torch.get_num_threads())
    for name, quantizer in named_quantizers(model):
        if is_weight_quantizer(name):
            quantizer.collector = _PassThrough()  # weights need no data; they stay FP meanwhile
        elif quantizer.enabled:
            quantizer.collector = collectors[name] = COLLECTORS[histogram](pool, name)
    model.eval()
    images = torch.zeros(1, dtype=torch.float64, device=context.device)
    try:
        with exact_float32():
            # islice: a loop that breaks at step ``num_batches`` has already loaded one batch more
            bar = progress(islice(loader, num_batches), show=context.is_main, total=min(num_batches, len(loader)), desc="calibrate", unit="batch")
            for batch, _ in bar:
                model(batch.to(context.device, non_blocking=True))
                images += len(batch)
            bar.close()
    finally:
        pool.shutdown()
        for _, quantizer in named_quantizers(model):
            quantizer.collector = None
    for collector in collectors.values():
        collector.all_reduce()
    all_reduce_sum(images, context)
    return {name: c.histogram() for name, c in collectors.items()}, int(images.item())


def check_weights(model: nn.Module) -> None:
    """Refuse weights that are not finite: their amax would be NaN or inf.

    A NaN or inf anywhere makes the sum non-finite, so one reduction clears a healthy weight;
    only then are the bad values counted (five passes over every weight took a third of a
    one-batch calibration of Swin-T on a loaded 2-core machine)."""
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear) and module.weight_quantizer.enabled:
            if torch.isfinite(module.weight.sum()):
                continue
            bad = int((~torch.isfinite(module.weight)).sum())
            if bad:
                raise CalibrationError(f"quantizer {name}.weight_quantizer: the weight has {bad} non-finite values (NaN or inf), "
                                       "so it has no range: the checkpoint is damaged or its training diverged")


def weight_amax(module: QuantLinear) -> torch.Tensor:
    """max |W|, per output channel or over the tensor, as the weight quantizer is shaped."""
    magnitude = module.weight.detach().abs()
    return magnitude.amax(dim=1) if module.weight_quantizer.per_channel else magnitude.max()


def load_calib_amax(model: nn.Module, histograms: dict[str, Statistics], method: str, percentile: float = 99.99) -> None:
    """Set amax of every enabled quantizer: weights from their values, activations by ``method``
    (at each quantizer's bit width: set the precision before calling this)."""
    for module in model.modules():
        if isinstance(module, QuantLinear) and module.weight_quantizer.enabled:
            module.weight_quantizer.set_amax(weight_amax(module))
    for name, quantizer in named_quantizers(model):
        if name in histograms:
            histogram = histograms[name]
            if histogram.max <= 0 or float(histogram.counts.sum()) == 0:
                seen = "only zeros" if histogram.zeros > 0 else "no values"
                raise CalibrationError(f"quantizer {name} saw {seen} during calibration, so it has no range: "
                                       "check that the calibration data reaches it (more --num-calib-batch?)")
            quantizer.set_amax(histogram.amax(method, percentile, quantizer.num_bits, quantizer.quant_format))
