"""CPU throughput of Swin-T 224: torch FP32, onnxruntime FP32, onnxruntime INT8 (exact / fast).

Random weights, amax from a short calibration on random images (speed does not depend on the
values). Images/s at each batch size with a fixed thread count, median of repeats; ratios are to
torch FP32 measured in the same run. Saves benchmarks/results/cpu_throughput.json.

    .venv/bin/python benchmarks/cpu_throughput.py [--batches 1 8 --threads 2 --repeats 5 --int8-mode trt]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from swin_trt.console import print_table
from swin_trt.distributed import DistContext
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config
from swin_trt.onnx.export import export_onnx, save_onnx
from swin_trt.provenance import package_versions
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.model import quantize_model
from swin_trt.quantization.recipes import get_recipe
from swin_trt.runtimes.onnxruntime import session_options

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_throughput.json"


def _images_per_s(run, batch: np.ndarray, repeats: int) -> float:
    run(batch)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        seconds.append(time.perf_counter() - start)
    return len(batch) / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--int8-mode", default="trt")
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = get_config(args.model)
    fp32 = build_model(config).eval()
    int8 = quantize_model(copy.deepcopy(fp32), get_recipe(args.int8_mode)).eval()
    calibration = [(torch.randn(4, 3, config.img_size, config.img_size), None) for _ in range(2)]
    histograms, _ = collect_statistics(int8, calibration, 2, DistContext())
    load_calib_amax(int8, histograms, "percentile")

    with tempfile.TemporaryDirectory() as folder:
        paths = {"fp32": Path(folder) / "fp32.onnx", "int8": Path(folder) / "int8.onnx"}
        start = time.perf_counter()
        save_onnx(export_onnx(fp32), paths["fp32"])
        save_onnx(export_onnx(int8), paths["int8"])
        export_seconds = time.perf_counter() - start

        def ort_runner(path: Path, mode: str):
            session = ort.InferenceSession(str(path), session_options(mode, args.threads), providers=["CPUExecutionProvider"])
            return lambda batch: session.run(None, {"images": batch})

        runners = {
            "torch FP32": lambda batch: fp32(torch.from_numpy(batch)),
            "onnxruntime FP32": ort_runner(paths["fp32"], "fast"),
            f"onnxruntime INT8 (mode {args.int8_mode}) exact": ort_runner(paths["int8"], "exact"),
            f"onnxruntime INT8 (mode {args.int8_mode}) fast": ort_runner(paths["int8"], "fast"),
        }
        results: dict[str, dict[str, float]] = {name: {} for name in runners}
        with torch.no_grad():
            for size in args.batches:
                batch = np.random.default_rng(0).standard_normal((size, 3, config.img_size, config.img_size), dtype=np.float32)
                for name, run in runners.items():
                    results[name][str(size)] = _images_per_s(run, batch, args.repeats)

    rows = []
    for name, by_batch in results.items():
        row = [name]
        for size in args.batches:
            row += [f"{by_batch[str(size)]:.2f}", f"{by_batch[str(size)] / results['torch FP32'][str(size)]:.2f}x"]
        rows.append(row)
    columns = ["runtime"] + [c for size in args.batches for c in (f"images/s b{size}", f"vs torch b{size}")]
    print_table(f"{args.model} on {args.threads} CPU threads (median of {args.repeats})", columns, rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "model": args.model, "threads": args.threads, "repeats": args.repeats, "int8_mode": args.int8_mode,
        "images_per_s": results, "export_seconds": export_seconds, "versions": package_versions(),
    }, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
