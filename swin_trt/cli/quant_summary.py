"""``swin-trt quant-summary``: every quantizer of a calibrated checkpoint, its state and amax."""

from __future__ import annotations

import argparse
from pathlib import Path

from swin_trt.cli.calibrate import add_int8_mode
from swin_trt.cli.common import add_model_args, emit_json
from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import

api = lazy_import("swin_trt.api")
console = lazy_import("swin_trt.console")
qmodel = lazy_import("swin_trt.quantization.model")

NAME = "quant-summary"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help="list quantizers with state and amax", description="List every quantizer of a calibrated checkpoint: on/off, granularity, amax.")
    add_model_args(parser, resume_help="calibrated checkpoint (required)")
    add_int8_mode(parser, default=None)
    parser.add_argument("--enabled-only", action="store_true", help="hide quantizers the recipe leaves off")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write {quantizer: amax or null} as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.resume:
        raise SwinTrtError("--resume is required: a calibrated checkpoint")
    loaded = api.open_model(args.model, args.cfg, args.resume, args.int8_mode)
    if not loaded.quantized:
        raise SwinTrtError(f"{args.resume} is not a calibrated checkpoint (no amax): run `swin-trt calibrate` first")
    rows, payload = [], {}
    kept = set(loaded.model.disabled_quantizers)
    for name, quantizer in qmodel.named_quantizers(loaded.model):
        if args.enabled_only and not quantizer.enabled:
            continue
        amax = quantizer.amax
        shown = "-" if not quantizer.calibrated else (f"{float(amax):.4g}" if amax.ndim == 0 else f"{float(amax.min()):.3g}..{float(amax.max()):.3g} ({amax.numel()} ch)")
        state = "on" if quantizer.enabled else ("off (fallback)" if name in kept else "off")
        rows.append((name, state, "per-channel" if quantizer.per_channel else "per-tensor", shown))
        payload[name] = amax.tolist() if quantizer.calibrated else None
    quant = loaded.meta["quantization"]
    console.print_table(
        f"quantizers of {args.resume} (int8-mode {loaded.model.quant_recipe.name}, calibrator {quant['calibrator']})",
        ("quantizer", "state", "granularity", "amax"),
        rows,
    )
    enabled = sum(1 for _, q in qmodel.named_quantizers(loaded.model) if q.enabled)
    print(f"{enabled} enabled of {len(list(qmodel.named_quantizers(loaded.model)))} quantizers"
          + (f"; {len(kept)} kept in higher precision by the mixed-precision fallback (quantization.disabled)" if kept else ""))
    emit_json(args, payload)
    return 0
