"""``swin-trt bench``: the parity gate of an engine against its fake-quant reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from swin_trt.cli.common import add_data_args, emit_json, positive_int
from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import
from swin_trt.parity.gate import BY_PRECISION, DEFAULTS
from swin_trt.runtimes import check_result_path
from swin_trt.runtimes.timing import DEFAULT_BATCHES

compare = lazy_import("swin_trt.parity.compare")
console = lazy_import("swin_trt.console")
localize = lazy_import("swin_trt.parity.localize")
deploy_stage = lazy_import("swin_trt.pipelines.deploy")

NAME = "bench"
BOUND_FLAGS = (
    ("max_rel_error", "--max-rel-error", "R", "median r over the images"),
    ("max_rel_error_p95", "--max-rel-error-p95", "R", "95th percentile of r"),
    ("min_agreement", "--min-agreement", "PCT", "argmax agreement engine vs fake-quant, %%"),
    ("max_top1_drop", "--max-top1-drop", "PT", "engine top-1 below fake-quant top-1, points"),
    ("max_graph_mismatches", "--max-graph-mismatches", "N", "differences (tensors, nodes) between the engine's graph and a fresh export of the reference"),
)


def bound(text: str) -> float | None:
    """A bound's value, or ``off``."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="the parity gate: an engine against the fake-quant reference it was built from",
        description="Check that the engine's bytes are the ones its sidecar records (refused otherwise) and that it was built from "
        "--reference (engine sidecar -> ONNX and its SHA-256 -> ONNX sidecar -> checkpoint SHA-256; a foreign engine is refused), "
        "compare its source graph tensor by tensor with a fresh export of --reference (bounds chosen by the graph's own float type), "
        "then evaluate FP32, the fake-quant reference and the engine on val. "
        "The gate is on by default: per image, the engine's logit error in units of the quantization's own perturbation, "
        "r = ||engine - fakequant|| / ||fakequant - fp32||, bounded in median and 95th percentile, plus argmax agreement and "
        "top-1 drop. Exit 1 naming the failed bound; --no-gate reports only. Bounds and their measurement: docs/parity.md.",
    )
    parser.add_argument("--reference", type=Path, required=True, metavar="CKPT", help="calibrated checkpoint the engine was exported from")
    parser.add_argument("--engine", type=Path, required=True, metavar="FILE", help="engine from `swin-trt build`")
    parser.add_argument("--onnx", type=Path, metavar="FILE", help="the engine's source graph, if moved from where its sidecar says (its SHA-256 must match)")
    add_data_args(parser, batch_size=64)
    parser.add_argument("--max-batches", type=positive_int, default=None)
    parser.add_argument("--device", default="auto",
                        help="where the FP32 and fake-quant references run and the images are normalised: auto (where the engine computes: "
                        "the GPU for TensorRT, the CPU for onnxruntime), cpu, cuda, cuda:N")
    parser.add_argument("--json", type=Path, metavar="PATH")
    bounds = parser.add_argument_group("gate bounds (a number, or 'off'); defaults by the precision of the engine's graph, see docs/parity.md")
    for name, flag, metavar, what in BOUND_FLAGS:
        bounds.add_argument(flag, dest=name, type=bound, default=argparse.SUPPRESS, metavar=metavar,
                            help=f"{what} (default {BY_PRECISION['fp32'].as_json()[name]:g}, FP16 graphs {BY_PRECISION['fp16'].as_json()[name]:g})")
    bounds.add_argument("--no-gate", action="store_true", help="report without gating (JSON \"passed\": null)")
    bounds.add_argument("--allow-foreign-engine", action="store_true", help="compare an engine whose provenance chain does not end at --reference")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--sweep", type=positive_int, nargs="*", metavar="BATCH",
                       help=f"also time the engine at these batch sizes (default {' '.join(map(str, DEFAULT_BATCHES))}): p50/p99 latency from "
                       "CUDA events on a GPU, images/s")
    speed.add_argument("--baseline-engine", type=Path, metavar="FILE",
                       help="with --sweep: time this engine too, e.g. the FP16 engine built from the same model (`export --no-quant --target "
                       "tensorrt`), and report the ratio; its provenance is checked like --engine's")
    where = parser.add_argument_group("where it drifts")
    where.add_argument("--localize", action="store_true",
                       help="also run the engine's source graph with every quantized tensor exposed against the reference's quantizers; "
                       "print the per-layer error and the first layer above --max-rel-error")
    where.add_argument("--localize-images", type=positive_int, default=32, metavar="N", help="val images for --localize (default 32)")
    where.add_argument("--localize-plot", type=Path, metavar="FILE.png", help="save the per-layer errors as a plot (implies --localize)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.baseline_engine is not None and args.sweep is None:
        raise SwinTrtError("--baseline-engine is timed by --sweep: add --sweep [BATCH ...]")
    check_result_path(args.json, (args.engine, args.reference, args.onnx, args.baseline_engine))
    overrides = {name: getattr(args, name) for name, *_ in BOUND_FLAGS if hasattr(args, name)}
    localize_images = args.localize_images if args.localize or args.localize_plot else 0
    outcome = deploy_stage.bench_engine(args.reference, args.engine, args.data_path, args.zip, args.batch_size, args.workers, args.max_batches,
                                     not args.no_gate, overrides, args.onnx, args.allow_foreign_engine, localize_images, args.device,
                                     None if args.sweep is None else tuple(args.sweep or DEFAULT_BATCHES), args.baseline_engine)
    report, details, verdict = outcome.report, outcome.engine.details, outcome.verdict
    engine_label = f"{details.get('backend', 'onnxruntime')} {details.get('ort_mode', '')} {outcome.precision}".replace("  ", " ").strip()
    console.print_table(
        f"bench {details.get('model') or 'model'}: {args.engine} vs {args.reference} ({report.images} images on {outcome.device}; "
        f"provenance {'verified' if outcome.provenance.verified else 'FOREIGN'})",
        ("model", "top-1 %", "top-5 %"),
        [("FP32", report.fp32_top1, report.fp32_top5), ("INT8 fake-quant (reference)", report.fakequant_top1, report.fakequant_top5),
         (f"engine ({engine_label})", report.engine_top1, report.engine_top5)],
    )
    console.print_table(f"engine vs fake-quant (r = ||engine - fq|| / ||fq - fp32|| per image; bounds for {outcome.precision} graphs)",
                        ("r median", "r p95", "argmax agreement %", "max |dlogit|", "mean |dlogit|", "cosine", "engine images/s"),
                        [(f"{report.rel_error_median:.3g}", f"{report.rel_error_p95:.3g}", report.agreement, f"{report.max_abs_diff:.4g}",
                          f"{report.mean_abs_diff:.4g}", f"{report.cosine:.6f}", f"{report.images_per_s:.1f}")])
    result = summary(outcome)
    if outcome.graph_mismatches:
        print(f"graph vs a fresh export of the reference: {len(outcome.graph_mismatches)} differences:", *outcome.graph_mismatches[:5], sep="\n  ")
    if outcome.sweep is not None:
        result["sweep"] = _report_sweep(outcome, args.engine, args.baseline_engine)
    if outcome.localization is not None:
        result.update(_report_localization(outcome.localization, args.localize_plot))
    emit_json(args, result)
    if not outcome.provenance.verified:
        print(f"note: foreign engine compared (--allow-foreign-engine): {outcome.provenance.broken_link}", file=sys.stderr)
    if verdict.passed is None:
        print("not gated (--no-gate or every bound off)")
        return 0
    if not verdict.passed:
        print(f"swin-trt bench: gate failed: {'; '.join(verdict.failures)}", file=sys.stderr)
        return 1
    print("gate passed")
    return 0


def _report_sweep(outcome, engine_path: Path, baseline_path: Path | None) -> list[dict]:
    """One row per batch size: the engine's latency and images/s, and beside it the baseline's and the ratio."""
    baseline = {point.batch: point for point in outcome.baseline_sweep or ()}
    rows = [{**point.as_json(), **({"baseline_images_per_s": baseline[point.batch].images_per_s,
                                    "speedup": point.images_per_s / baseline[point.batch].images_per_s} if baseline else {})}
            for point in outcome.sweep]
    columns = ("batch", "p50 ms", "p99 ms", "images/s") + (("baseline images/s", "engine / baseline") if baseline else ())
    console.print_table(f"speed: {engine_path}" + (f" vs baseline {baseline_path}" if baseline else "") + f" ({outcome.engine.device})", columns,
                        [(row["batch"], f"{row['p50_ms']:.3f}", f"{row['p99_ms']:.3f}", f"{row['images_per_s']:.1f}",
                          *((f"{row['baseline_images_per_s']:.1f}", f"{row['speedup']:.2f}x") if baseline else ())) for row in rows])
    return rows


def _report_localization(localization, plot_path: Path | None) -> dict:
    first = localization.first_outside
    console.print_table(f"where it drifts: engine graph vs fake-quant per quantized tensor ({localization.images} images, bound {localization.bound:g})",
                        ("#", "tensor (quantizer output)", "r median", "max |diff|", ""),
                        [(index, layer.name, f"{layer.rel_error:.3g}", f"{layer.max_abs_diff:.4g}",
                          " ".join(filter(None, (layer.note, "<- first above bound" if layer is first else ""))))
                         for index, layer in enumerate(localization.layers)])
    if localization.reference_only:
        print(f"localize: the reference also quantizes {len(localization.reference_only)} tensors that the graph does not "
              f"(first: {localization.reference_only[0]}): the graph is from another recipe")
    if first is None:
        print(f"localize: every quantized tensor and the engine's logits within r <= {localization.bound:g}")
    elif first.name == localize.ENGINE_LOGITS:
        print(f"localize: every quantized tensor of the graph is within the bound; only the engine's logits leave it (r {first.rel_error:.3g}): "
              "the drift is in the backend's fused kernels, which exposing tensors disables")
    else:
        print(f"localize: first above the bound: {first.name} (r {first.rel_error:.3g} > {localization.bound:g})")
    if plot_path is not None:
        print(f"localize plot: {localize.plot(localization, plot_path)}")
    return {"localize": [layer.__dict__ for layer in localization.layers], "localize_first_outside": first.name if first else None,
            "localize_reference_only": list(localization.reference_only)}


def summary(outcome: Any) -> dict[str, Any]:
    """The ``--json`` object of a ``deploy_stage.BenchOutcome`` (a public interface: keys are only
    ever added); the demo writes the same object for each engine it gates."""
    report, details = outcome.report, outcome.engine.details
    return {
        "fp32_top1": report.fp32_top1, "fakequant_top1": report.fakequant_top1, "engine_top1": report.engine_top1,
        "agreement": report.agreement, "max_abs_diff": report.max_abs_diff, "mean_abs_diff": report.mean_abs_diff,
        "cosine": report.cosine, "images_per_s": report.images_per_s, "images": report.images,
        "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95,
        **(outcome.bounds.as_json() if outcome.bounds is not None else dict.fromkeys(DEFAULTS)),
        "passed": outcome.verdict.passed, "failed": list(outcome.verdict.failed),
        "provenance": outcome.provenance.label, "engine_backend": details.get("backend"), "engine_mode": details.get("ort_mode"),
        "reference_agreement": report.reference_agreement, "engine_precision": outcome.precision, "device": str(outcome.device), "graph_mismatches": outcome.graph_mismatches,
        "rel_error_percentiles": compare.percentiles(report.rel_errors), "machine": deploy_stage.engine_machine(outcome.engine),
    }
