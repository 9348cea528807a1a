"""``swin-trt bench``: the parity gate of an engine against its fake-quant reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swin_trt.cli.common import add_data_args, emit_json, positive_int
from swin_trt.lazy import lazy_import
from swin_trt.parity.gate import DEFAULTS, Bounds

console = lazy_import("swin_trt.console")
localize = lazy_import("swin_trt.parity.localize")
workflows = lazy_import("swin_trt.workflows")

NAME = "bench"


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
        description="Check that the engine was built from --reference (engine sidecar -> ONNX and its SHA-256 -> ONNX sidecar -> "
        "checkpoint SHA-256; a foreign engine is refused), then evaluate FP32, the fake-quant reference and the engine on val. "
        "The gate is on by default: per image, the engine's logit error in units of the quantization's own perturbation, "
        "r = ||engine - fakequant|| / ||fakequant - fp32||, bounded in median and 95th percentile, plus argmax agreement and "
        "top-1 drop. Exit 1 naming the failed bound; --no-gate reports only. Bounds and their measurement: docs/parity.md.",
    )
    parser.add_argument("--reference", type=Path, required=True, metavar="CKPT", help="calibrated checkpoint the engine was exported from")
    parser.add_argument("--engine", type=Path, required=True, metavar="FILE", help="engine from `swin-trt build`")
    parser.add_argument("--onnx", type=Path, metavar="FILE", help="the engine's source graph, if moved from where its sidecar says (its SHA-256 must match)")
    add_data_args(parser, batch_size=64)
    parser.add_argument("--max-batches", type=positive_int, default=None)
    parser.add_argument("--json", type=Path, metavar="PATH")
    bounds = parser.add_argument_group("gate bounds (a number, or 'off')")
    bounds.add_argument("--max-rel-error", type=bound, default=DEFAULTS["max_rel_error"], metavar="R",
                        help=f"median r over the images (default {DEFAULTS['max_rel_error']:g})")
    bounds.add_argument("--max-rel-error-p95", type=bound, default=DEFAULTS["max_rel_error_p95"], metavar="R",
                        help=f"95th percentile of r (default {DEFAULTS['max_rel_error_p95']:g})")
    bounds.add_argument("--min-agreement", type=bound, default=DEFAULTS["min_agreement"], metavar="PCT",
                        help=f"argmax agreement engine vs fake-quant, %% (default {DEFAULTS['min_agreement']:g})")
    bounds.add_argument("--max-top1-drop", type=bound, default=DEFAULTS["max_top1_drop"], metavar="PT",
                        help=f"engine top-1 below fake-quant top-1, points (default {DEFAULTS['max_top1_drop']:g})")
    bounds.add_argument("--no-gate", action="store_true", help="report without gating (JSON \"passed\": null)")
    bounds.add_argument("--allow-foreign-engine", action="store_true", help="compare an engine whose provenance chain does not end at --reference")
    where = parser.add_argument_group("where it drifts")
    where.add_argument("--localize", action="store_true",
                       help="also run the engine's source graph with every quantized tensor exposed against the reference's quantizers; "
                       "print the per-layer error and the first layer above --max-rel-error")
    where.add_argument("--localize-images", type=positive_int, default=8, metavar="N", help="val images for --localize (default 8)")
    where.add_argument("--localize-plot", type=Path, metavar="FILE.png", help="save the per-layer errors as a plot (implies --localize)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    bounds = None if args.no_gate else Bounds(args.max_rel_error, args.max_rel_error_p95, args.min_agreement, args.max_top1_drop)
    localize_images = args.localize_images if args.localize or args.localize_plot else 0
    outcome = workflows.bench_engine(args.reference, args.engine, args.data_path, args.zip, args.batch_size, args.workers, args.max_batches,
                                     bounds, args.onnx, args.allow_foreign_engine, localize_images)
    report, details, verdict = outcome.report, outcome.engine.details, outcome.verdict
    engine_label = f"{details.get('backend', 'onnxruntime')} {details.get('ort_mode', '')}".strip()
    console.print_table(
        f"bench {details.get('model') or 'model'}: {args.engine} vs {args.reference} ({report.images} images; provenance {'verified' if outcome.provenance.verified else 'FOREIGN'})",
        ("model", "top-1 %", "top-5 %"),
        [("FP32", report.fp32_top1, report.fp32_top5), ("INT8 fake-quant (reference)", report.fakequant_top1, report.fakequant_top5),
         (f"engine ({engine_label})", report.engine_top1, report.engine_top5)],
    )
    console.print_table("engine vs fake-quant (r = ||engine - fq|| / ||fq - fp32|| per image)",
                        ("r median", "r p95", "argmax agreement %", "max |dlogit|", "mean |dlogit|", "cosine", "engine images/s"),
                        [(f"{report.rel_error_median:.3g}", f"{report.rel_error_p95:.3g}", report.agreement, f"{report.max_abs_diff:.4g}",
                          f"{report.mean_abs_diff:.4g}", f"{report.cosine:.6f}", f"{report.images_per_s:.1f}")])
    result = {
        "fp32_top1": report.fp32_top1, "fakequant_top1": report.fakequant_top1, "engine_top1": report.engine_top1,
        "agreement": report.agreement, "max_abs_diff": report.max_abs_diff, "mean_abs_diff": report.mean_abs_diff,
        "cosine": report.cosine, "images_per_s": report.images_per_s, "images": report.images,
        "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95,
        **(bounds.as_json() if bounds is not None else dict.fromkeys(DEFAULTS)),
        "passed": verdict.passed, "failed": list(verdict.failed),
        "provenance": outcome.provenance.label, "engine_backend": details.get("backend"), "engine_mode": details.get("ort_mode"),
    }
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
