"""Automatic mixed-precision fallback: the fewest quantizer groups kept in higher precision so
that the fake-quant top-1 drop against FP32 stays within a budget.

Greedy on the sensitivity ranking (most sensitive group first, measured by KL against FP32 with
the group alone disabled) until the drop is within budget, then a pruning pass that tries to
quantize each chosen group again, last chosen first, and keeps it quantized when the budget
still holds: greedy alone keeps groups that only helped together with a later one.
"""

from __future__ import annotations

from dataclasses import dataclass

from swin_trt.quantization.sensitivity import Group, SensitivityProbe, rank


@dataclass(frozen=True)
class Fallback:
    groups: tuple[Group, ...]  # kept in higher precision
    fp32_top1: float
    quant_top1: float  # every group quantized
    top1: float  # with ``groups`` in higher precision
    evaluations: int

    @property
    def disabled(self) -> list[str]:
        return sorted(name for group in self.groups for name in group.quantizers)

    @property
    def drop(self) -> float:
        return self.fp32_top1 - self.top1


def _drop(probe: SensitivityProbe, groups: list[Group]) -> tuple[float, float]:
    top1 = probe.with_disabled(name for group in groups for name in group.quantizers).top1
    return probe.fp32.top1 - top1, top1


def choose_fallback(probe: SensitivityProbe, groups: list[Group], max_drop: float, ranking_probe: SensitivityProbe | None = None) -> Fallback:
    """Greedy + pruning over ``groups`` (see the module notes), ranked on ``ranking_probe`` (KL
    ranks on far fewer images than top-1 needs; default ``probe``) and judged on ``probe``.
    Always ends within budget: with every group disabled the model is the FP32 one, drop 0."""
    fp32, quantized = probe.fp32.top1, probe.quantized.top1
    if fp32 - quantized <= max_drop:
        return Fallback((), fp32, quantized, quantized, 0)
    ranking = [result.group for result in rank((ranking_probe or probe).measure(groups, enabled_too=False))]
    evaluations = len(groups)
    chosen: list[Group] = []
    top1 = quantized
    for group in ranking:
        chosen.append(group)
        drop, top1 = _drop(probe, chosen)
        evaluations += 1
        if drop <= max_drop:
            break
    for group in reversed(chosen[:-1]):  # the last one was needed: without it the budget did not hold
        trial = [g for g in chosen if g is not group]
        drop, trial_top1 = _drop(probe, trial)
        evaluations += 1
        if drop <= max_drop:
            chosen, top1 = trial, trial_top1
    return Fallback(tuple(chosen), fp32, quantized, top1, evaluations)
