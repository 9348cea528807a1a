"""Per-group quantization sensitivity: how much each group of quantizers costs, measured by top-1
and by the KL divergence of the logits against FP32 (which ranks groups on far fewer images than
top-1 needs).

Each group is measured twice: disabled alone (everything else quantized: how much keeping it in
higher precision recovers) and enabled alone (everything else FP32: how much it loses on its
own). That is two evaluations per group, so the evaluation is arranged to be cheap and exact:

- the images are a fixed subset held in memory (no data loading per group);
- the model runs as a sequence of *units* (patch embedding, each PatchMerging, each Swin block,
  then norm and head), and the activations entering every unit are cached once for the
  all-quantized and once for the all-FP32 state. A group's quantizers all live in units from
  its first one on, and the units before it compute exactly what the cache holds (same weights,
  same quantizer states, same batch slicing), so its evaluation starts there. The tests check
  that a started-late evaluation equals the full forward pass bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from swin_trt.console import progress
from swin_trt.quantization.model import named_quantizers

GRANULARITIES = ("quantizer", "layer", "block")
RESIDUAL_GROUP = "residual"  # a block's residual-add quantizers, as one layer-level group


@dataclass(frozen=True)
class Group:
    """Quantizers measured (and kept in higher precision) together; ``first_unit`` is the index of
    the first unit that holds one of them."""

    name: str
    quantizers: tuple[str, ...]
    first_unit: int


@dataclass(frozen=True)
class Score:
    top1: float
    kl: float


@dataclass(frozen=True)
class GroupSensitivity:
    group: Group
    disabled: Score  # this group alone in higher precision, the rest quantized
    enabled: Score | None  # this group alone quantized, the rest FP32 (None when not measured)

    def as_json(self) -> dict[str, float | int | None]:
        return {
            "disabled_top1": self.disabled.top1,
            "disabled_kl": self.disabled.kl,
            "enabled_top1": self.enabled.top1 if self.enabled else None,
            "enabled_kl": self.enabled.kl if self.enabled else None,
            "quantizers": len(self.group.quantizers),
        }


def model_units(model: nn.Module) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """timm's SwinTransformer forward (``patch_embed``, ``layers`` of downsample + blocks, ``norm``,
    ``head``) split where quantizer groups begin: (module path prefix, callable)."""
    units: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [("patch_embed", model.patch_embed)]
    for index, stage in enumerate(model.layers):
        if not isinstance(stage.downsample, nn.Identity):
            units.append((f"layers.{index}.downsample", stage.downsample))
        for number, block in enumerate(stage.blocks):
            units.append((f"layers.{index}.blocks.{number}", block))
    units.append(("head", lambda x: model.forward_head(model.norm(x))))
    return units


def unit_of(name: str, units: Sequence[tuple[str, object]]) -> int:
    for index, (prefix, _) in enumerate(units):
        if name.startswith(prefix + "."):
            return index
    raise ValueError(f"quantizer {name} belongs to no unit of the model")


def group_key(name: str, granularity: str) -> str:
    """The group of quantizer ``name``: itself; its module (a linear's input/weight/output, the
    attention's q/k/v/softmax, ``<block>.residual`` for a block's residual quantizers); or its
    Swin block / PatchMerging."""
    if granularity == "quantizer":
        return name
    path = name.split(".")
    if granularity == "block":
        return ".".join(path[:4] if path[2] == "blocks" else path[:3])
    if granularity == "layer":
        owner = ".".join(path[:-1])
        return owner if len(path) > 5 or path[2] == "downsample" else f"{owner}.{RESIDUAL_GROUP}"
    raise ValueError(f"unknown granularity {granularity!r}; choose {', '.join(GRANULARITIES)}")


def quantizer_groups(model: nn.Module, granularity: str, names: Iterable[str] | None = None) -> list[Group]:
    """The groups of ``names`` (default: the model's enabled quantizers) in forward order."""
    chosen = list(names) if names is not None else [name for name, q in named_quantizers(model) if q.enabled]
    units = model_units(model)
    members: dict[str, list[str]] = {}
    for name in chosen:
        members.setdefault(group_key(name, granularity), []).append(name)
    groups = [Group(key, tuple(found), min(unit_of(n, units) for n in found)) for key, found in members.items()]
    return sorted(groups, key=lambda g: g.first_unit)


def kl_to_reference(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(P_fp32 || P_quant) per image, from logits."""
    reference = F.log_softmax(reference_logits.double(), dim=1)
    return F.kl_div(F.log_softmax(logits.double(), dim=1), reference, log_target=True, reduction="none").sum(dim=1)


class SensitivityProbe:
    """A calibrated model, a fixed image set and the per-unit activations of the all-quantized
    and all-FP32 states, for evaluating any set of disabled quantizers from where it matters."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128, show_progress: bool = True):
        self.model = model.eval()
        self.labels = labels
        self.batch_size = batch_size
        self.units = model_units(model)
        self.quantizers = dict(named_quantizers(model))
        self.baseline = frozenset(name for name, q in self.quantizers.items() if q.enabled)
        self.show_progress = show_progress
        self.batches = list(torch.split(images, batch_size))
        self.fp_cache, self.fp_logits = self._cache(frozenset())
        self.quant_cache, self.quant_logits = self._cache(self.baseline)

    @contextmanager
    def enabled(self, names: frozenset[str]):
        """Only ``names`` quantize inside the block; the model's own states come back after."""
        saved = {name: q.enabled for name, q in self.quantizers.items()}
        try:
            for name, quantizer in self.quantizers.items():
                quantizer.enabled = name in names
            yield
        finally:
            for name, quantizer in self.quantizers.items():
                quantizer.enabled = saved[name]

    @torch.no_grad()
    def _cache(self, names: frozenset[str]) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        cache: list[list[torch.Tensor]] = [[] for _ in self.units]
        logits = []
        with self.enabled(names):
            for batch in self.batches:
                x = batch
                for index, (_, unit) in enumerate(self.units):
                    cache[index].append(x)
                    x = unit(x)
                logits.append(x)
        return cache, torch.cat(logits)

    @torch.no_grad()
    def logits(self, names: frozenset[str], start: int, from_fp: bool) -> torch.Tensor:
        """Logits with only ``names`` enabled, running units from ``start`` on the cached inputs of
        the all-FP32 (``from_fp``) or the all-quantized state (the caller guarantees that the
        units before ``start`` hold no quantizer whose state differs from that cache's)."""
        cache = self.fp_cache if from_fp else self.quant_cache
        outputs = []
        with self.enabled(names):
            for x in cache[start]:
                for _, unit in self.units[start:]:
                    x = unit(x)
                outputs.append(x)
        return torch.cat(outputs)

    def score(self, logits: torch.Tensor) -> Score:
        top1 = 100.0 * float((logits.argmax(dim=1) == self.labels).double().mean())
        return Score(top1, float(kl_to_reference(self.fp_logits, logits).mean()))

    @property
    def fp32(self) -> Score:
        return self.score(self.fp_logits)

    @property
    def quantized(self) -> Score:
        return self.score(self.quant_logits)

    def first_unit(self, names: Iterable[str]) -> int:
        return min((unit_of(name, self.units) for name in names), default=len(self.units) - 1)

    def with_disabled(self, names: Iterable[str]) -> Score:
        """The baseline with ``names`` in higher precision."""
        names = frozenset(names)
        return self.score(self.logits(self.baseline - names, self.first_unit(names), from_fp=False))

    def only_enabled(self, names: Iterable[str]) -> Score:
        names = frozenset(names)
        return self.score(self.logits(names, self.first_unit(names), from_fp=True))

    def measure(self, groups: Sequence[Group], enabled_too: bool = True) -> list[GroupSensitivity]:
        """Both scores of every group, most sensitive first (lowest KL once disabled)."""
        results = []
        bar = progress(groups, show=self.show_progress, total=len(groups), desc="sensitivity", unit="group")
        for group in bar:
            results.append(GroupSensitivity(group, self.with_disabled(group.quantizers), self.only_enabled(group.quantizers) if enabled_too else None))
        bar.close()
        return rank(results)


def rank(results: Iterable[GroupSensitivity]) -> list[GroupSensitivity]:
    """Most sensitive first: the lowest KL against FP32 once the group alone is disabled, then the
    highest top-1 (KL orders groups that top-1 on a few hundred images cannot tell apart)."""
    return sorted(results, key=lambda r: (r.disabled.kl, -r.disabled.top1))
