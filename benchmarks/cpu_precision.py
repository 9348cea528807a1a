"""What 7-bit weights cost, and whether the default CPU engine holds the default parity gate, on real data.

For each dataset (a trained FP checkpoint and its data folder) and each precision (weights /
activations bits: 8/8, 7/8, 7/7), calibrate (trt recipe by default, percentile), evaluate the
fake-quant model on val, export, build engines (onnxruntime ``auto``, ``exact``, ``fast``;
OpenVINO) and bench each against its reference through `swin-trt bench`'s own workflow with the default
gate. 7/7 is the precision whose int8 matmul operands all fit 7 bits, so ``--ort-mode auto``
chooses fast on AVX2 without VNNI too (docs/cpu.md). Results are kept per CPU kind:
``benchmarks/results/cpu_precision/<cpu kind>.json``.

    python benchmarks/cpu_precision.py [--engines auto exact fast openvino] --dataset digits:runs/demo/swin_micro.pth:runs/demo/digits \\
        --dataset fashion:runs/fashion/swin_micro_fashion.pth:runs/fashion/data
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from machine import cpu_kind

from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.distributed import DistContext
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.deploy import bench_engine
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.runtimes.onnxruntime import build
from swin_trt.runtimes.openvino import build as openvino_build
from swin_trt.settings import CalibrationRequest
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_precision"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME:CHECKPOINT:DATA", help="repeatable")
    parser.add_argument("--precisions", nargs="+", default=["8:8", "7:8", "7:7"], help="weight:activation bits")
    parser.add_argument("--int8-mode", default="trt")
    parser.add_argument("--engines", nargs="+", default=["auto"], choices=("auto", "exact", "fast", "openvino"),
                        help="onnxruntime modes, and/or openvino")
    parser.add_argument("--output", type=Path, help="result file (default benchmarks/results/cpu_precision/<cpu kind>.json)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    cpu = read_cpu()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for spec in args.dataset:
            name, checkpoint, data = spec.split(":")
            for precision in args.precisions:
                wbits, abits = (int(b) for b in precision.split(":"))
                tag = f"{name}_w{wbits}a{abits}"
                request = CalibrationRequest(int8_mode=args.int8_mode, weight_bits=wbits, activation_bits=abits)
                calibrated = calibrate_checkpoint(None, None, Path(checkpoint), Path(data), False, request, Path(folder) / tag, DistContext(), workers=0)
                graph = export_checkpoint(calibrated.checkpoint, Path(folder) / f"{tag}.onnx")["onnx"]
                for mode in args.engines:
                    if mode == "openvino":
                        details = {**openvino_build(graph, Path(folder) / f"{tag}.openvino.blob"), "ort_mode": None, "ort_mode_reason": None}
                    else:
                        details = build(graph, Path(folder) / f"{tag}.{mode}.onnx", mode)
                    outcome = bench_engine(calibrated.checkpoint, details["engine"], Path(data), batch_size=args.batch_size, workers=0)
                    report = outcome.report
                    rows.append({
                        "dataset": name, "backend": details["backend"], "weight_bits": wbits, "activation_bits": abits, "int8_mode": args.int8_mode, "requested_mode": mode,
                        "ort_mode": details["ort_mode"], "ort_mode_reason": details["ort_mode_reason"], "images": report.images,
                        "fp32_top1": report.fp32_top1, "fakequant_top1": report.fakequant_top1, "engine_top1": report.engine_top1,
                        "agreement": report.agreement, "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95,
                        "top1_drop": report.top1_drop, "passed": outcome.verdict.passed, "failed": list(outcome.verdict.failed),
                    })
    for row in rows:  # the 7-bit cost: fake-quant top-1 against the 8-bit weights of the same dataset and activation bits
        eight = next((r for r in rows if r["dataset"] == row["dataset"] and r["weight_bits"] == 8 and r["activation_bits"] == 8), None)
        row["fakequant_top1_minus_w8a8"] = row["fakequant_top1"] - eight["fakequant_top1"] if eight else None
    print_table(f"precision and parity on {cpu.describe()} (recipe {args.int8_mode}, default gate)",
                ("dataset", "W/A", "mode", "images", "FP32", "fake-quant", "vs W8A8", "engine", "r median", "r p95", "agreement %", "gate"),
                [(r["dataset"], f"{r['weight_bits']}/{r['activation_bits']}", f"{r['requested_mode']}->{r['ort_mode']}" if r["ort_mode"] else r["backend"], r["images"],
                  f"{r['fp32_top1']:.2f}", f"{r['fakequant_top1']:.2f}", f"{r['fakequant_top1_minus_w8a8']:+.2f}", f"{r['engine_top1']:.2f}",
                  f"{r['rel_error_median']:.3g}", f"{r['rel_error_p95']:.3g}", f"{r['agreement']:.2f}",
                  "passed" if r["passed"] else "FAILED " + ",".join(r["failed"])) for r in rows])
    output = args.output or RESULTS / f"{cpu_kind(cpu)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"rows": rows, "cpu": cpu.as_json(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
                                  "versions": package_versions()}, indent=2) + "\n")
    print(f"saved {output}")


if __name__ == "__main__":
    main()
