"""`bench --localize` on a deliberately broken engine: one activation scale of the mode-1 graph
multiplied by a factor (the chain still verifies), built with --ort-mode auto, benched with the
default gate against the mode-1 reference. The first point above the bound must be that quantizer.

    python -m swin_trt demo --workdir runs/demo
    python benchmarks/parity_localize.py --workdir runs/demo [--quantizer NAME --factor 2]

Saves benchmarks/results/parity_localize.json (with the CPU model and ISA flags).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from swin_trt.cli import demo
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.parity.localize import perturb_scale
from swin_trt.pipelines.deploy import bench_engine
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.runtimes.onnxruntime import build
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "parity_localize.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="a `swin-trt demo` workdir")
    parser.add_argument("--quantizer", default="layers.1.blocks.0.mlp.fc1.input_quantizer")
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    reference = demo.calibration_dir(args.workdir, demo.setting_tag("1")) / "swin_micro_calib.pth"
    if not reference.is_file():
        parser.error(f"{reference} not found: run `python -m swin_trt demo --workdir {args.workdir}` first")

    with tempfile.TemporaryDirectory() as folder:
        graph = export_checkpoint(reference, Path(folder) / "mode1.onnx")["onnx"]
        broken = perturb_scale(graph, Path(folder) / "broken.onnx", args.quantizer, args.factor)
        engine = build(broken, Path(folder) / "broken_engine.onnx")
        outcome = bench_engine(reference, engine["engine"], demo.data_root(args.workdir), workers=0, localize_images=args.images)
    layers = outcome.localization.layers
    first = outcome.localization.first_outside
    index = layers.index(first) if first else len(layers)
    before = layers[:index]
    summary = {
        "first_outside": first.name if first else None, "first_outside_rel_error": first.rel_error if first else None,
        "named_first": first is not None and first.name == args.quantizer, "points_before": len(before),
        "points_before_max_rel_error": max((layer.rel_error for layer in before), default=0.0),
        "points_before_max_abs_diff": max((layer.max_abs_diff for layer in before), default=0.0),
        "points_after_rel_error_range": [min(layer.rel_error for layer in layers[index + 1:]), max(layer.rel_error for layer in layers[index + 1:])] if first else None,
    }
    report = outcome.report
    print_table(f"localize a scale x{args.factor:g} at {args.quantizer} ({engine['ort_mode']} engine, {read_cpu().describe()})", ("measure", "value"),
                [("provenance", outcome.provenance.label), ("gate", "passed" if outcome.verdict.passed else "; ".join(outcome.verdict.failures)),
                 ("r median / p95 (val)", f"{report.rel_error_median:.3g} / {report.rel_error_p95:.3g}"), *((k, str(v)) for k, v in summary.items())])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "model": "swin_micro", "data": "digits val", "int8_mode": "1", "quantizer": args.quantizer, "factor": args.factor,
        "ort_mode": engine["ort_mode"], "provenance": outcome.provenance.label, "images": report.images,
        "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95, "agreement": report.agreement,
        "passed": outcome.verdict.passed, "failures": list(outcome.verdict.failures), "localize_images": outcome.localization.images,
        "bound": outcome.localization.bound, **summary, "localize": [layer.__dict__ for layer in layers],
        "cpu": read_cpu().as_json(), "versions": package_versions(),
    }, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
