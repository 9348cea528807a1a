"""The gate's bounds and verdict.

Defaults come from the crosswise measurement in docs/parity.md (benchmarks/parity_pairings.py),
per precision of the engine's graph.

FP32 graphs (benchmarks/results/parity_pairings_<model>.json, onnxruntime exact on an AVX2 CPU):
engines built from their own reference's graph have a median relative logit error of at most
2.4e-5 (swin_micro, digits) / 3.3e-5 (swin_tiny_fashion, Swin-T's depth, Fashion-MNIST; 0.3's exact
engines, with folded weights) and a 95th percentile of at most 0.61 / 0.70; engines from another
recipe's or another calibration's graph have a median of at least 0.98 / 0.81 and a 95th percentile
of at least 1.41 / 1.24. The median bound (0.5) sits 1.6x below the closest wrong median, with room
for a runtime whose float summation order differs; the p95 bound (1.2) sits 1.7x above the largest
right p95, for the few images where a flipped rounding tie propagates, while an engine wrong on more
than 5 % of the images still fails. On the deeper model the margin by one statistic is thin
(largest right p95 0.70, 0.86 with 0.2.2's engines, against smallest wrong median 0.81): it takes
both bounds.

FP16 graphs: rounding to float16 before each quantizer flips a few values by one step and the
flips cascade, so a right FP16 engine redraws much of the quantization noise: r median up to 1.02,
p95 up to 2.26, where wrong pairings start at a median of 0.84. No logit bound separates them
(and no reference does, short of reproducing one runtime's float16 rounding bit for bit: measured
in docs/parity.md); the graph check does, exactly, in every precision. The FP16 r bounds (1.5,
3.0) sit 1.3-1.5x above the right pairings: they catch an engine that computes something else,
not a wrong scale.

Argmax agreement and top-1 drop stay as further bounds: they are what a user reads first. The
graph check (``max_graph_mismatches``, 0) requires the engine's graph to quantize the same tensors
with the same scales and weights as the reference (:mod:`swin_trt.parity.conformance`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swin_trt.errors import SwinTrtError

if TYPE_CHECKING:  # only for the annotation: this module stays light for `swin-trt bench --help`
    from swin_trt.parity.compare import ParityReport

DEFAULT_MAX_REL_ERROR = 0.5
DEFAULT_MAX_REL_ERROR_P95 = 1.2
DEFAULT_MIN_AGREEMENT = 99.0
DEFAULT_MAX_TOP1_DROP = 0.5
FP16_MAX_REL_ERROR = 1.5  # right FP16 pairings measured at most 1.02 (docs/parity.md)
FP16_MAX_REL_ERROR_P95 = 3.0  # right FP16 pairings measured at most 2.26


@dataclass(frozen=True)
class Bounds:
    """Each bound, or None when switched off."""

    max_rel_error: float | None = DEFAULT_MAX_REL_ERROR  # on the median over images
    max_rel_error_p95: float | None = DEFAULT_MAX_REL_ERROR_P95  # on the 95th percentile
    min_agreement: float | None = DEFAULT_MIN_AGREEMENT  # argmax agreement, %
    max_top1_drop: float | None = DEFAULT_MAX_TOP1_DROP  # fake-quant top-1 minus engine top-1, points
    max_graph_mismatches: float | None = 0  # differences between the engine's graph and a fresh export of the reference

    def as_json(self) -> dict[str, float | None]:
        return dict(self.__dict__)


DEFAULTS = Bounds().as_json()
FP16_BOUNDS = Bounds(max_rel_error=FP16_MAX_REL_ERROR, max_rel_error_p95=FP16_MAX_REL_ERROR_P95)
# FP8 (E4M3) Q/DQ in an FP32 graph: measured in docs/fp8.md (benchmarks/fp8_accuracy.py)
FP8_MAX_REL_ERROR = 0.5
FP8_MAX_REL_ERROR_P95 = 1.2
FP8_BOUNDS = Bounds(max_rel_error=FP8_MAX_REL_ERROR, max_rel_error_p95=FP8_MAX_REL_ERROR_P95)
BY_PRECISION = {"fp32": Bounds(), "fp16": FP16_BOUNDS, "fp8": FP8_BOUNDS}
FAMILY_PRECISION = {"fp32": "fp32", "fp16": "fp16", "fp8": "fp32"}  # what a family's graph computes in outside Q/DQ (a sidecar's ``precision``)
FP8_TYPE = "float8_e4m3fn"  # the numpy name of an FP8 QuantizeLinear's output type (swin_trt.onnx.graph.tensor_types)


def bound_family(float_types: Collection[str], quantized_types: Collection[str]) -> str:
    """The bound family of a graph, from its own tensor types (:func:`swin_trt.onnx.graph.tensor_types`
    of the graph whose SHA-256 the provenance chain checked), never from a sidecar's claim:
    ``fp32`` when its float constants are float32, ``fp16`` when they are float16.
    ``quantized_types`` (the types its QuantizeLinear nodes produce) tell FP8 apart: FP8 (E4M3)
    Q/DQ in a float32 graph get the ``fp8`` family; a float16 graph keeps the ``fp16`` family,
    whose float16 rounding dominates."""
    floats = set(float_types)
    if floats <= {"float32"}:
        return "fp8" if FP8_TYPE in quantized_types else "fp32"
    if floats == {"float16"}:
        return "fp16"
    raise SwinTrtError(f"the engine's graph holds {' and '.join(sorted(floats))} constants: the gate has bounds for graphs in float32 or in float16")


def default_bounds(family: str) -> Bounds:
    """The default bounds of a bound family (:func:`bound_family`)."""
    if family not in BY_PRECISION:
        raise SwinTrtError(f"the engine's graph is {family!r}; the gate has default bounds for {' and '.join(BY_PRECISION)} graphs")
    return BY_PRECISION[family]


@dataclass(frozen=True)
class Verdict:
    passed: bool | None  # None: nothing was gated
    failures: tuple[str, ...]  # one phrase per failed bound
    failed: tuple[str, ...]  # the failed bounds' names (the JSON keys)


def judge(report: ParityReport, bounds: Bounds | None, graph_mismatches: Sequence[str] | None) -> Verdict:
    """Check every enabled bound; ``bounds=None`` (``--no-gate``) or all bounds off gates nothing.

    ``graph_mismatches`` are the differences between the engine's graph and a fresh export of the
    reference (:func:`swin_trt.parity.conformance.graph_differences`), None when the graph could not be compared.
    A figure that could not be measured (no images, no graph) fails its bound instead of passing it.
    """
    if bounds is None:
        return Verdict(None, (), ())
    first = f" (first: {graph_mismatches[0]})".replace("{", "{{").replace("}", "}}") if graph_mismatches else ""
    checks = (
        ("max_rel_error", report.rel_error_median, bounds.max_rel_error, False,
         "median relative logit error {value:.3g} > --max-rel-error {bound:g}"),
        ("max_rel_error_p95", report.rel_error_p95, bounds.max_rel_error_p95, False,
         "95th-percentile relative logit error {value:.3g} > --max-rel-error-p95 {bound:g}"),
        ("min_agreement", report.agreement if report.images else math.nan, bounds.min_agreement, True,
         "argmax agreement {value:.2f} % < --min-agreement {bound:g}"),
        ("max_top1_drop", report.top1_drop if report.images else math.nan, bounds.max_top1_drop, False,
         "engine top-1 is {value:.2f} pt below fake-quant (--max-top1-drop {bound:g})"),
        ("max_graph_mismatches", len(graph_mismatches) if graph_mismatches is not None else math.nan, bounds.max_graph_mismatches, False,
         "{value:g} differences between the engine's graph and a fresh export of the reference" + first + " (--max-graph-mismatches {bound:g})"
         if graph_mismatches is not None else "the engine's source graph or its export settings (its sidecar) were not found, so it could not be "
         "compared with a fresh export of the reference (pass --onnx, or --max-graph-mismatches off)"),
    )
    enabled = [check for check in checks if check[2] is not None]
    if not enabled:
        return Verdict(None, (), ())
    failures, failed = [], []
    for name, value, bound, at_least, message in enabled:
        holds = not math.isnan(value) and (value >= bound if at_least else value <= bound)
        if not holds:
            failed.append(name)
            failures.append(message.format(value=value, bound=bound))
    return Verdict(not failed, tuple(failures), tuple(failed))
