"""FP32, the fake-quant reference and an engine over the same images: accuracy, agreement, and
the engine's logit error in units of the quantization's own perturbation.

Why that unit: argmax agreement and absolute logit differences depend on how easy the dataset is
and how large the logits are. ``||engine - fakequant|| / ||fakequant - fp32||`` per image asks
instead "is the engine's error small next to what quantization itself changed?". The same
arithmetic run by another runtime differs only where a float summation order flips a rounding
tie (0 on most images), while a different quantized model (another recipe, other scales) is as
far from the reference as the reference is from FP32 (about 1). Measured in docs/parity.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from swin_trt.console import progress


def relative_errors(engine: np.ndarray, reference: np.ndarray, fp32: np.ndarray) -> np.ndarray:
    """Per row (image): ``||engine - reference||_2 / ||reference - fp32||_2`` over the row's values.

    0 where engine and reference agree exactly (even if the reference equals FP32); infinite
    where they differ but quantization changed nothing, so such a row always counts as an error.
    """
    rows = len(engine)
    engine, reference, fp32 = (np.asarray(a, dtype=np.float64).reshape(rows, -1) for a in (engine, reference, fp32))
    error = np.linalg.norm(engine - reference, axis=1)
    perturbation = np.linalg.norm(reference - fp32, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(error == 0, 0.0, error / perturbation)


def quantile(values: np.ndarray, q: float) -> float:
    """An observed value (never interpolated, so an infinite error is not averaged away), the
    upper one where the quantile falls between two; NaN for no values."""
    return float(np.quantile(values, q, method="higher")) if len(values) else float("nan")


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

    @property
    def rel_error_median(self) -> float:
        return quantile(self.rel_errors, 0.5)

    @property
    def rel_error_p95(self) -> float:
        return quantile(self.rel_errors, 0.95)

    @property
    def top1_drop(self) -> float:
        return self.fakequant_top1 - self.engine_top1


def _topk_hits(logits: np.ndarray, targets: np.ndarray) -> tuple[int, int]:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return int((top5[:, 0] == targets).sum()), int((top5 == targets[:, None]).any(axis=1).sum())


@torch.no_grad()
def compare(fp32: torch.nn.Module, fakequant: torch.nn.Module, engine, loader, max_batches: int | None = None) -> ParityReport:
    """Run the three models over ``loader`` and measure accuracy, agreement and logit error."""
    hits = {"fp32": [0, 0], "fakequant": [0, 0], "engine": [0, 0]}
    images, agree, max_diff, sum_diff, sum_cos, elements, engine_seconds = 0, 0, 0.0, 0.0, 0.0, 0, 0.0
    rel_errors = []
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    for step, (batch, targets) in enumerate(progress(loader, total=total, desc="bench", unit="batch")):
        if step == total:
            break
        targets = targets.numpy()
        start = time.perf_counter()
        engine_logits = engine(batch.numpy())
        engine_seconds += time.perf_counter() - start
        outputs = {"fp32": fp32(batch).numpy(), "fakequant": fakequant(batch).numpy(), "engine": engine_logits}
        for name, logits in outputs.items():
            top1, top5 = _topk_hits(logits, targets)
            hits[name][0] += top1
            hits[name][1] += top5
        reference = outputs["fakequant"]
        diff = np.abs(engine_logits - reference)
        max_diff = max(max_diff, float(diff.max()))
        sum_diff += float(diff.sum())
        elements += diff.size
        agree += int((engine_logits.argmax(1) == reference.argmax(1)).sum())
        norms = np.linalg.norm(engine_logits, axis=1) * np.linalg.norm(reference, axis=1)
        sum_cos += float(((engine_logits * reference).sum(1) / np.maximum(norms, 1e-12)).sum())
        rel_errors.append(relative_errors(engine_logits, reference, outputs["fp32"]))
        images += len(targets)
    pct = 100.0 / max(images, 1)
    return ParityReport(
        images=images,
        fp32_top1=hits["fp32"][0] * pct, fp32_top5=hits["fp32"][1] * pct,
        fakequant_top1=hits["fakequant"][0] * pct, fakequant_top5=hits["fakequant"][1] * pct,
        engine_top1=hits["engine"][0] * pct, engine_top5=hits["engine"][1] * pct,
        agreement=agree * pct,
        max_abs_diff=max_diff,
        mean_abs_diff=sum_diff / max(elements, 1),
        cosine=sum_cos / max(images, 1),
        images_per_s=images / engine_seconds if engine_seconds > 0 else 0.0,
        rel_errors=np.concatenate(rel_errors) if rel_errors else np.zeros(0),
    )
