"""The parity gate: a deployed engine against its PyTorch fake-quant reference."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from swin_trt.console import progress


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

    def failures(self, min_agreement: float | None, max_top1_drop: float | None) -> list[str]:
        failed = []
        if min_agreement is not None and self.agreement < min_agreement:
            failed.append(f"argmax agreement {self.agreement:.2f} % < --min-agreement {min_agreement}")
        if max_top1_drop is not None and self.fakequant_top1 - self.engine_top1 > max_top1_drop:
            failed.append(f"engine top-1 {self.engine_top1:.2f} % is {self.fakequant_top1 - self.engine_top1:.2f} pt below fake-quant "
                          f"{self.fakequant_top1:.2f} % (--max-top1-drop {max_top1_drop})")
        return failed


def _topk_hits(logits: np.ndarray, targets: np.ndarray) -> tuple[int, int]:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return int((top5[:, 0] == targets).sum()), int((top5 == targets[:, None]).any(axis=1).sum())


@torch.no_grad()
def compare(fp32: torch.nn.Module, fakequant: torch.nn.Module, engine, loader, max_batches: int | None = None) -> ParityReport:
    """Run the three models over ``loader`` and measure accuracy, agreement and logit drift."""
    hits = {"fp32": [0, 0], "fakequant": [0, 0], "engine": [0, 0]}
    images, agree, max_diff, sum_diff, sum_cos, elements, engine_seconds = 0, 0, 0.0, 0.0, 0.0, 0, 0.0
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
    )
