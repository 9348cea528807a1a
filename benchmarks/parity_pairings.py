"""Crosswise parity pairings: every onnxruntime engine (recipe x mode) against every calibrated
reference, through `swin-trt bench`'s own workflow with the default gate.

Right pairings (engine built from its reference's export) must pass and wrong ones (another
recipe's export, compared with --allow-foreign-engine) must fail; the margins between them are
what the gate's defaults rest on (docs/parity.md). FP16 graphs (`export --precision fp16`) are
measured against their own reference too. Needs the checkpoints of `swin-trt demo`:

    python -m swin_trt demo --workdir runs/demo
    python benchmarks/parity_pairings.py --workdir runs/demo

Saves benchmarks/results/parity_pairings.json (with the CPU model and ISA flags).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.parity.gate import Bounds
from swin_trt.provenance import package_versions
from swin_trt.quantization.recipes import RECIPES
from swin_trt.runtimes.onnxruntime import MODES, build, choose_mode
from swin_trt.workflows import bench_engine, export_checkpoint

RESULTS = Path(__file__).resolve().parent / "results" / "parity_pairings.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="a `swin-trt demo` workdir (calib/<mode>/ and digits/)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    data = args.workdir / "digits"
    references = {mode: args.workdir / "calib" / mode / "swin_micro_calib.pth" for mode in sorted(RECIPES)}
    missing = [str(path) for path in references.values() if not path.is_file()]
    if missing:
        parser.error(f"{missing[0]} not found: run `python -m swin_trt demo --workdir {args.workdir}` first")

    cpu = read_cpu()
    pairings = []
    with tempfile.TemporaryDirectory() as folder:
        engines = {}
        for recipe, checkpoint in references.items():
            for precision in ("fp32", "fp16"):
                graph = export_checkpoint(checkpoint, Path(folder) / f"{recipe}_{precision}.onnx", precision=precision)
                for mode in MODES:
                    engines[(recipe, precision, mode)] = Path(folder) / f"{recipe}_{precision}.{mode}.onnx"
                    build(graph["onnx"], engines[(recipe, precision, mode)], mode)
        for (recipe, precision, mode), engine in engines.items():
            for reference_recipe, reference in references.items():
                if precision == "fp16" and reference_recipe != recipe:
                    continue
                outcome = bench_engine(reference, engine, data, batch_size=args.batch_size, workers=0, bounds=Bounds(), allow_foreign=True)
                report = outcome.report
                pairings.append({
                    "engine_recipe": recipe, "precision": precision, "ort_mode": mode, "reference_recipe": reference_recipe,
                    "right": reference_recipe == recipe, "provenance": outcome.provenance.label.split(":")[0],
                    "images": report.images, "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95,
                    "agreement": report.agreement, "top1_drop": report.top1_drop, "max_abs_diff": report.max_abs_diff,
                    "mean_abs_diff": report.mean_abs_diff, "engine_images_per_s": report.images_per_s,
                    "passed": outcome.verdict.passed, "failed": list(outcome.verdict.failed),
                })

    fp32 = [p for p in pairings if p["precision"] == "fp32"]
    summary = {}
    for mode in MODES:
        right = [p for p in fp32 if p["right"] and p["ort_mode"] == mode]
        wrong = [p for p in fp32 if not p["right"] and p["ort_mode"] == mode]
        summary[mode] = {
            "right_max_rel_error_median": max(p["rel_error_median"] for p in right), "right_max_rel_error_p95": max(p["rel_error_p95"] for p in right),
            "wrong_min_rel_error_median": min(p["rel_error_median"] for p in wrong), "wrong_min_rel_error_p95": min(p["rel_error_p95"] for p in wrong),
            "right_min_agreement": min(p["agreement"] for p in right), "wrong_min_agreement": min(p["agreement"] for p in wrong),
            "right_all_passed": all(p["passed"] for p in right), "wrong_all_failed": all(p["passed"] is False for p in wrong),
        }
    auto_mode, auto_reason = choose_mode(cpu, quantized=True)
    print_table(f"parity pairings on {cpu.describe()} (digits val, default gate {Bounds().as_json()})",
                ("engine", "precision", "mode", "reference", "pairing", "r median", "r p95", "agreement %", "top-1 drop", "max |dlogit|", "gate"),
                [(p["engine_recipe"], p["precision"], p["ort_mode"], p["reference_recipe"], "right" if p["right"] else "wrong",
                  f"{p['rel_error_median']:.3g}", f"{p['rel_error_p95']:.3g}", f"{p['agreement']:.2f}", f"{p['top1_drop']:.2f}",
                  f"{p['max_abs_diff']:.3g}", "passed" if p["passed"] else "FAILED " + ",".join(p["failed"])) for p in pairings])
    print(f"--ort-mode auto on this CPU: {auto_mode} ({auto_reason})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "model": "swin_micro", "data": "digits val", "bounds": Bounds().as_json(), "auto_mode": auto_mode, "auto_reason": auto_reason,
        "summary": summary, "pairings": pairings, "cpu": cpu.as_json(), "versions": package_versions(),
    }, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
