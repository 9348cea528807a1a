"""FP32, the fake-quant reference and an engine over the same images: accuracy, agreement, and
the engine's logit error in units of the quantization's own perturbation.

Why that unit: argmax agreement and absolute logit differences depend on how easy the dataset is
and how large the logits are. ``||engine - fakequant|| / ||fakequant - fp32||`` per image asks
instead "is the engine's error small next to what quantization itself changed?". The same
arithmetic run by another runtime differs only where a float summation order flips a rounding
tie (0 on most images), while a different quantized model (another recipe, other scales) is as
far from the reference as the reference is from FP32 (about 1). Measured in docs/parity.md.

Everything is computed with torch on the device the references run on (the CPU, or the GPU of
the CUDA evaluator), so an engine whose outputs are CUDA tensors (TensorRT) is compared without
copying its logits through the host; the figures are reduced in float64 and only scalars and the
per-image errors come back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import torch

from swin_trt.console import progress
from swin_trt.float32 import exact_float32


def relative_errors(engine, reference, fp32) -> np.ndarray:
    """Per row (image): ``||engine - reference||_2 / ||reference - fp32||_2`` over the row's values,
    for torch tensors (any device, any float type) or numpy arrays; a float64 numpy array.

    0 where engine and reference agree exactly (even if the reference equals FP32); infinite
    where they differ but quantization changed nothing, so such a row always counts as an error.
    """
    rows = len(engine)
    engine, reference, fp32 = (torch.as_tensor(a).to(torch.float64).reshape(rows, -1) for a in (engine, reference, fp32))
    error = torch.linalg.vector_norm(engine - reference.to(engine.device), dim=1).cpu().numpy()
    perturbation = torch.linalg.vector_norm(reference - fp32.to(reference.device), dim=1).cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(error == 0, 0.0, error / perturbation)


def quantile(values: np.ndarray, q: float) -> float:
    """An observed value (never interpolated, so an infinite error is not averaged away), the
    upper one where the quantile falls between two; NaN for no values."""
    return float(np.quantile(values, q, method="higher")) if len(values) else float("nan")


def percentiles(values: np.ndarray) -> list[float | None]:
    """The observed value at 0, 1, ..., 100 % (as :func:`quantile`), ``None`` where infinite (JSON
    has no infinity): 101 numbers that redraw the distribution of r (the report's gate plot)
    without storing one number per image."""
    if not len(values):
        return []
    return [float(v) if np.isfinite(v) else None for v in np.quantile(values, np.arange(101) / 100, method="higher")]  # one sort, not 101


@dataclass(frozen=True)
class ParityReport:
    images: int
    fp32_top1: float
    fp32_top5: float
    fakequant_top1: float
    fakequant_top5: float
    engine_top1: float
    engine_top5: float
    agreement: float  # % of images where engine and fake-quant argmax agree
    max_abs_diff: float  # max |engine logit - fake-quant logit|
    mean_abs_diff: float
    cosine: float  # mean per-image cosine similarity of the logit vectors
    images_per_s: float  # engine only
    rel_errors: np.ndarray = field(repr=False, compare=False)  # per image, see relative_errors
    reference_agreement: float  # % of images where fake-quant and FP32 argmax agree: how much quantization itself moves decisions

    @property
    def rel_error_median(self) -> float:
        return quantile(self.rel_errors, 0.5)

    @property
    def rel_error_p95(self) -> float:
        return quantile(self.rel_errors, 0.95)

    @property
    def top1_drop(self) -> float:
        return self.fakequant_top1 - self.engine_top1


class _Tally:
    """Running sums over batches, kept on the references' device (float64) until the end."""

    def __init__(self, device: torch.device):
        self.hits = {name: torch.zeros(2, dtype=torch.float64, device=device) for name in ("fp32", "fakequant", "engine")}
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)  # agreement, sum |diff|, sum cosine, elements, fq-vs-fp32 agreement
        self.max_diff = torch.zeros((), dtype=torch.float64, device=device)
        self.rel_errors: list[np.ndarray] = []
        self.images = 0

    def add(self, logits: dict[str, torch.Tensor], targets: torch.Tensor) -> None:
        for name, values in logits.items():
            top = values.topk(min(5, values.shape[1]), dim=1).indices
            self.hits[name][0] += (values.argmax(1) == targets).sum()
            self.hits[name][1] += (top == targets[:, None]).any(dim=1).sum()
        engine, reference = logits["engine"].double(), logits["fakequant"].double()
        diff = (engine - reference).abs()
        cosine = (engine * reference).sum(1) / (torch.linalg.vector_norm(engine, dim=1) * torch.linalg.vector_norm(reference, dim=1)).clamp_min(1e-12)
        self.sums += torch.stack([(logits["engine"].argmax(1) == logits["fakequant"].argmax(1)).sum().double(), diff.sum(), cosine.sum(),
                                  torch.tensor(float(diff.numel()), dtype=torch.float64, device=diff.device),
                                  (logits["fakequant"].argmax(1) == logits["fp32"].argmax(1)).sum().double()])
        self.max_diff = torch.maximum(self.max_diff, diff.max())
        self.rel_errors.append(relative_errors(engine, reference, logits["fp32"]))
        self.images += len(targets)

    def report(self, engine_seconds: float) -> ParityReport:
        pct = 100.0 / max(self.images, 1)
        hits = {name: (values * pct).tolist() for name, values in self.hits.items()}
        agree, sum_diff, sum_cos, elements, reference_agree = self.sums.tolist()
        return ParityReport(
            images=self.images,
            fp32_top1=hits["fp32"][0], fp32_top5=hits["fp32"][1],
            fakequant_top1=hits["fakequant"][0], fakequant_top5=hits["fakequant"][1],
            engine_top1=hits["engine"][0], engine_top5=hits["engine"][1],
            agreement=agree * pct,
            max_abs_diff=float(self.max_diff),
            mean_abs_diff=sum_diff / max(elements, 1),
            cosine=sum_cos / max(self.images, 1),
            images_per_s=self.images / engine_seconds if engine_seconds > 0 else 0.0,
            rel_errors=np.concatenate(self.rel_errors) if self.rel_errors else np.zeros(0),
            reference_agreement=reference_agree * pct,
        )


def score(fp32, fakequant, engine, targets, engine_seconds: float = 0.0) -> ParityReport:
    """The report :func:`compare` gives, from logits already computed (numpy arrays or tensors,
    one row per image, in the same order as ``targets``): for scoring many engine x reference
    pairings from logits computed once each (``benchmarks/parity_pairings.py``)."""
    logits = {name: torch.as_tensor(values).to(torch.float32) for name, values in (("fp32", fp32), ("fakequant", fakequant), ("engine", engine))}
    tally = _Tally(torch.device("cpu"))
    tally.add(logits, torch.as_tensor(targets))
    return tally.report(engine_seconds)


def wait_for(tensor: torch.Tensor) -> torch.Tensor:
    """Block until the work producing ``tensor`` is done (CUDA runs asynchronously: a timer
    stopped before this would time the launch, not the inference)."""
    if tensor.is_cuda:
        torch.cuda.current_stream(tensor.device).synchronize()
    return tensor


@torch.no_grad()
def compare(fp32: torch.nn.Module, fakequant: torch.nn.Module, engine, loader, max_batches: int | None = None,
            device: torch.device | str = "cpu", preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ParityReport:
    """Run the three models over ``loader`` and measure accuracy, agreement and logit error.

    The references run on ``device``; each batch goes there once (``preprocess`` then turns it
    into the model's input there, e.g. a uint8 batch normalised on the GPU) and the same tensor
    feeds the engine, whose ``run`` takes torch tensors and returns logits on its own device.
    ``images_per_s`` times the engine alone, up to its logits being ready."""
    device = torch.device(device)
    fp32, fakequant = fp32.to(device).eval(), fakequant.to(device).eval()
    tally, engine_seconds = _Tally(device), 0.0
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    with exact_float32():
        for batch, targets in progress(islice(loader, total), total=total, desc="bench", unit="batch"):  # islice: no batch loaded past the last
            images = batch.to(device, non_blocking=True)
            images = preprocess(images) if preprocess is not None else images
            wait_for(images)
            start = time.perf_counter()
            engine_logits = wait_for(engine.run(images))
            engine_seconds += time.perf_counter() - start
            logits = {"fp32": fp32(images), "fakequant": fakequant(images), "engine": engine_logits.to(device, torch.float32)}
            tally.add(logits, targets.to(device))
    return tally.report(engine_seconds)
