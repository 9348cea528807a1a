"""Crosswise parity pairings: onnxruntime engines (recipe x calibration x graph precision x mode)
against calibrated references, through `swin-trt bench`'s own workflow with the default gate
(bounds chosen by the graph's precision, and the graph check).

Right pairings (engine built from its reference's export) must pass; wrong ones (another recipe's
or another calibration's export, compared with --allow-foreign-engine) and faults (one activation
scale of the right graph changed, sidecar kept: the provenance chain still verifies) must fail.
The margins are what the gate's defaults rest on (docs/parity.md). References: the three recipes
of `swin-trt demo`, plus three more calibrations of the trt recipe made here (max and entropy
calibrators, percentile with another seed), the subtlest wrong models there are:

    python -m swin_trt demo --workdir runs/demo
    python benchmarks/parity_pairings.py --workdir runs/demo

FP32 graphs are run in both onnxruntime modes, FP16 graphs (`export --precision fp16`, the
TensorRT form) in exact mode (Q/DQ explicit). Saves benchmarks/results/parity_pairings.json (with
the CPU model and ISA flags).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from swin_trt.cli import demo
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.distributed import DistContext
from swin_trt.parity.gate import BY_PRECISION
from swin_trt.parity.localize import perturb_scale
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.deploy import bench_engine
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.quantization.recipes import RECIPES
from swin_trt.runtimes.onnxruntime import MODES, build, choose_mode
from swin_trt.settings import CalibrationRequest
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "parity_pairings.json"
VARIANTS = {"trt-max": {"calibrator": "max"}, "trt-entropy": {"calibrator": "entropy"}, "trt-seed1": {"seed": 1}}
FAULT = ("layers.1.blocks.0.mlp.fc1.input_quantizer", 2.0)  # the quantizer docs/parity.md's localize example perturbs


def references(workdir: Path) -> dict[str, Path]:
    """The demo's calibrated checkpoints, and the trt-recipe variants (calibrated here once, as the demo calibrates: 10 x 8 images)."""
    found = {mode: demo.calibration_dir(workdir, demo.setting_tag(mode)) / "swin_micro_calib.pth" for mode in sorted(RECIPES)}
    missing = [str(path) for path in found.values() if not path.is_file()]
    if missing:
        raise SystemExit(f"parity_pairings.py: error: {missing[0]} not found: run `python -m swin_trt demo --workdir {workdir}` first")
    for name, options in VARIANTS.items():
        found[name] = workdir / "pairings" / name / "swin_micro_calib.pth"
        if not found[name].is_file():
            request = CalibrationRequest(int8_mode="trt", num_calib_batch=10, calib_batchsz=8, **options)
            calibrate_checkpoint(None, None, demo.output_dir(workdir) / "swin_micro.pth", demo.data_root(workdir), False, request, found[name].parent, DistContext(), workers=0)
    return found


def pairings_of(engine: str) -> list[str]:
    """Which references an engine is benched against: recipes against every recipe; a variant
    against itself and the trt reference (and the trt engines against every variant)."""
    if engine in VARIANTS:
        return [engine, "trt"]
    return sorted(RECIPES) + (list(VARIANTS) if engine == "trt" else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="a `swin-trt demo` workdir")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    data = demo.data_root(args.workdir)
    checkpoints = references(args.workdir)
    cpu = read_cpu()
    pairings = []
    with tempfile.TemporaryDirectory() as folder:
        engines = {}  # (calibration, precision, mode, fault) -> engine path
        for name, checkpoint in checkpoints.items():
            for precision in ("fp32", "fp16"):
                graph = export_checkpoint(checkpoint, Path(folder) / f"{name}_{precision}.onnx", precision=precision)["onnx"]
                modes = MODES if precision == "fp32" and name in RECIPES else ("exact",)
                for mode in modes:
                    engines[(name, precision, mode, False)] = build(graph, Path(folder) / f"{name}_{precision}.{mode}.onnx", mode)["engine"]
                if name == "trt":
                    broken = perturb_scale(graph, Path(folder) / f"{name}_{precision}_fault.onnx", *FAULT)
                    engines[(name, precision, "exact", True)] = build(broken, Path(folder) / f"{name}_{precision}_fault.exact.onnx", "exact")["engine"]
        for (name, precision, mode, fault), engine in engines.items():
            for reference in [name] if fault else pairings_of(name):
                outcome = bench_engine(checkpoints[reference], engine, data, batch_size=args.batch_size, workers=0, allow_foreign=True)
                report = outcome.report
                pairings.append({
                    "engine": name, "precision": precision, "ort_mode": mode, "reference": reference,
                    "pairing": "fault" if fault else "right" if reference == name else "wrong", "provenance": outcome.provenance.label.split(":")[0],
                    "images": report.images, "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95,
                    "agreement": report.agreement, "reference_agreement": report.reference_agreement, "top1_drop": report.top1_drop,
                    "max_abs_diff": report.max_abs_diff, "mean_abs_diff": report.mean_abs_diff,
                    "graph_mismatches": len(outcome.graph_mismatches), "passed": outcome.verdict.passed, "failed": list(outcome.verdict.failed),
                })

    summary = {}
    for precision in ("fp32", "fp16"):
        rows = [p for p in pairings if p["precision"] == precision]
        right = [p for p in rows if p["pairing"] == "right"]
        others = [p for p in rows if p["pairing"] != "right"]
        summary[precision] = {
            "bounds": BY_PRECISION[precision].as_json(),
            "right_max_rel_error_median": max(p["rel_error_median"] for p in right), "right_max_rel_error_p95": max(p["rel_error_p95"] for p in right),
            "wrong_min_rel_error_median": min(p["rel_error_median"] for p in others if p["pairing"] == "wrong"),
            "wrong_min_rel_error_p95": min(p["rel_error_p95"] for p in others if p["pairing"] == "wrong"),
            "fault_rel_error_median": [p["rel_error_median"] for p in others if p["pairing"] == "fault"],
            "right_min_agreement": min(p["agreement"] for p in right), "wrong_min_agreement": min(p["agreement"] for p in others),
            "right_all_passed": all(p["passed"] for p in right), "wrong_and_faults_all_failed": all(p["passed"] is False for p in others),
            "wrong_and_faults_failing_on_logits": sum(bool(set(p["failed"]) - {"max_graph_mismatches"}) for p in others),
            "wrong_and_faults_failing_graph_check": sum("max_graph_mismatches" in p["failed"] for p in others),
            "wrong_and_faults": len(others),
        }
    auto_mode, auto_reason = choose_mode(cpu, quantized=True)
    print_table(f"parity pairings on {cpu.describe()} (digits val, default gate by graph precision)",
                ("engine", "precision", "mode", "reference", "pairing", "r median", "r p95", "agreement %", "top-1 drop", "graph mismatches", "gate"),
                [(p["engine"], p["precision"], p["ort_mode"], p["reference"], p["pairing"], f"{p['rel_error_median']:.3g}", f"{p['rel_error_p95']:.3g}",
                  f"{p['agreement']:.2f}", f"{p['top1_drop']:.2f}", p["graph_mismatches"], "passed" if p["passed"] else "FAILED " + ",".join(p["failed"]))
                 for p in pairings])
    print(json.dumps(summary, indent=2))
    print(f"--ort-mode auto on this CPU: {auto_mode} ({auto_reason})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "model": "swin_micro", "data": "digits val", "auto_mode": auto_mode, "auto_reason": auto_reason, "fault": {"quantizer": FAULT[0], "scale_factor": FAULT[1]},
        "summary": summary, "pairings": pairings, "cpu": cpu.as_json(), "versions": package_versions(),
    }, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
