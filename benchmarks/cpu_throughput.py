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
from swin_trt.cpu import read_cpu
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


def _profile_by_op(path: Path, size: int, img_size: int, threads: int, runs: int = 3) -> dict[str, float]:
    """onnxruntime's own profiler on the INT8 fast graph: % of operator time by operator type."""
    import onnxruntime as ort

    options = session_options("fast", threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        batch = np.random.default_rng(1).standard_normal((size, 3, img_size, img_size), dtype=np.float32)
        for _ in range(runs):
            session.run(None, {"images": batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event.get("dur", 0)
    total = sum(by_op.values()) or 1.0
    return {op: 100.0 * t / total for op, t in sorted(by_op.items(), key=lambda item: -item[1])}


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
        largest = max(args.batches)
        profile = _profile_by_op(paths["int8"], largest, config.img_size, args.threads)

    rows = []
    for name, by_batch in results.items():
        row = [name]
        for size in args.batches:
            row += [f"{by_batch[str(size)]:.2f}", f"{by_batch[str(size)] / results['torch FP32'][str(size)]:.2f}x"]
        rows.append(row)
    columns = ["runtime"] + [c for size in args.batches for c in (f"images/s b{size}", f"vs torch b{size}")]
    print_table(f"{args.model} on {args.threads} CPU threads (median of {args.repeats})", columns, rows)
    print_table(f"where the time goes: onnxruntime INT8 fast, batch {largest} (share of operator time)", ("operator", "%"),
                [(op, f"{share:.1f}") for op, share in list(profile.items())[:10]])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "model": args.model, "threads": args.threads, "repeats": args.repeats, "int8_mode": args.int8_mode,
        "images_per_s": results, "export_seconds": export_seconds, f"int8_fast_op_time_share_b{largest}": profile,
        "cpu": read_cpu().as_json(),
        "versions": package_versions(),
    }, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
