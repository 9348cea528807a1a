"""Calibration speed on Swin-T 224 (random weights and images: speed does not depend on them).

(a) statistics collection time / FP32 forward time over the same batches (median of repeats);
(b) seconds to compute every amax of the model for each calibrator.

    .venv/bin/python benchmarks/calibration.py [--batches 5 --batch-size 8 --threads 2 --repeats 3]

Prints a table and saves benchmarks/results/calibration/<cpu kind>.json (one file per CPU kind,
with the load average around the run: the machine is shared).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch
from machine import cpu_kind

from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.distributed import DistContext
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.model import quantize_model
from swin_trt.quantization.recipes import CALIBRATORS, get_recipe
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "calibration"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of all batches; medians are reported")
    parser.add_argument("--int8-mode", default="1")
    parser.add_argument("--output", type=Path, help="result file (default benchmarks/results/calibration/<cpu kind>.json)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = get_config(args.model)
    batches = [torch.randn(args.batch_size, 3, config.img_size, config.img_size) for _ in range(args.batches)]

    fp32 = build_model(config).eval()
    quantized = quantize_model(copy.deepcopy(fp32), get_recipe(args.int8_mode)).eval()

    labelled = [(batch, None) for batch in batches]
    with torch.no_grad():
        fp32(batches[0])  # warm-up
    forward, collect = [], []
    for _ in range(args.repeats):  # alternate the two so that machine noise hits both alike
        start = time.perf_counter()
        with torch.no_grad():
            for batch in batches:
                fp32(batch)
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        histograms, _ = collect_statistics(quantized, labelled, len(batches), DistContext())
        collect.append(time.perf_counter() - start)
    amax_seconds = {}
    for method in CALIBRATORS:
        start = time.perf_counter()
        load_calib_amax(quantized, histograms, method)
        amax_seconds[method] = time.perf_counter() - start

    results = {
        "model": args.model,
        "int8_mode": args.int8_mode,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "threads": args.threads,
        "activation_quantizers": len(histograms),
        "repeats": args.repeats,
        "fp32_forward_s_median": statistics.median(forward),
        "collect_s_median": statistics.median(collect),
        "collect_over_forward": statistics.median(c / f for c, f in zip(collect, forward)),
        "amax_s": amax_seconds,
        "cpu": read_cpu().as_json(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "versions": package_versions(),
    }
    rows = [(f"FP32 forward, {args.batches} batches (s)", f"{results['fp32_forward_s_median']:.3f}"),
            (f"statistics collection, same {args.batches} batches (s)", f"{results['collect_s_median']:.3f}"),
            ("collection / FP32 forward", f"{results['collect_over_forward']:.2f}x")]
    rows += [(f"amax, {method} ({len(histograms)} activation quantizers + weights) (s)", f"{seconds:.2f}") for method, seconds in amax_seconds.items()]
    print_table(f"calibration speed: {args.model}, batch {args.batch_size}, {args.threads} threads, median of {args.repeats} runs", ("measure", "value"), rows)
    output = args.output or RESULTS / f"{cpu_kind(read_cpu())}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {output}")


if __name__ == "__main__":
    main()
