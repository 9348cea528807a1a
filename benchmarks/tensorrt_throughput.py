"""TensorRT throughput of an INT8 engine against the FP16 engine of the same model.

Random weights (speed does not depend on the values), calibrated with --int8-mode trt on a few
batches of the images under --data-path; both engines are built from the TensorRT-target graph
(``export --target tensorrt``, the FP16 one with --no-quant), so the only difference is the Q/DQ.
Latency per batch from CUDA events around each inference after warm-up (p50 and p99), images/s
= batch / p50, and the ratio INT8/FP16 at each batch (``swin_trt.runtimes.timing.sweep``, the
same sweep as ``swin-trt bench --sweep --baseline-engine``). Needs TensorRT and a GPU.

    python benchmarks/tensorrt_throughput.py --data-path data/digits [--model swin_tiny_patch4_window7_224]
        [--batches 1 8 32 128] [--iters 100] [--workdir DIR]

Saves benchmarks/results/tensorrt_throughput.json with the GPU, TensorRT version, CPU model and
ISA flags.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from machine import machine

from swin_trt.console import print_table
from swin_trt.distributed import DistContext
from swin_trt.errors import SwinTrtError
from swin_trt.models.checkpoint import save_checkpoint
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.runtimes import tensorrt as trt_runtime
from swin_trt.runtimes.timing import DEFAULT_BATCHES, sweep
from swin_trt.settings import CalibrationRequest
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "tensorrt_throughput.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", required=True, help="images for calibration (e.g. `swin-trt data digits`)")
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--builder-optimization-level", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep checkpoints, graphs and engines here")
    args = parser.parse_args()
    trt = trt_runtime.require_tensorrt()
    trt_runtime.require_cuda()
    where = machine()

    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        config = get_config(args.model)
        fp = save_checkpoint(work / f"{config.name}.pth", build_model(config), {"config": config.to_dict()})
        request = CalibrationRequest(int8_mode="trt", num_calib_batch=4, calib_batchsz=8)
        calibrated = calibrate_checkpoint(None, None, fp, args.data_path, False, request, work, DistContext(device=torch.device("cuda")), workers=2)
        graphs = {"INT8": export_checkpoint(calibrated.checkpoint, work / "int8.onnx", target="tensorrt"),
                  "FP16": export_checkpoint(fp, work / "fp16.onnx", target="tensorrt")}
        engines = {}
        for name, graph in graphs.items():
            trt_runtime.build(graph["onnx"], work / f"{name.lower()}.plan", min_batch=min(args.batches), opt_batch=max(args.batches) // 4 or 1,
                              max_batch=max(args.batches), timing_cache=work / "timing.cache", builder_optimization_level=args.builder_optimization_level)
            engines[name] = trt_runtime.Engine(work / f"{name.lower()}.plan")
        image_shape = engines["INT8"].opt_shape[1:]
        figures = {name: {str(p.batch): p.as_json() for p in sweep(engine, image_shape, args.batches, args.warmup, args.iters, label=name)}
                   for name, engine in engines.items()}

    ratio = {str(b): figures["INT8"][str(b)]["images_per_s"] / figures["FP16"][str(b)]["images_per_s"] for b in args.batches}
    print_table(f"{args.model} on {where['gpu']} (TensorRT {trt.__version__})", ("batch", "FP16 img/s", "INT8 img/s", "INT8/FP16", "INT8 p50 ms", "INT8 p99 ms"),
                [(b, figures["FP16"][str(b)]["images_per_s"], figures["INT8"][str(b)]["images_per_s"], ratio[str(b)],
                  figures["INT8"][str(b)]["p50_ms"], figures["INT8"][str(b)]["p99_ms"]) for b in args.batches])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": args.model, "weights": "random", "int8_mode": "trt", "machine": where, "tensorrt": trt.__version__,
                                   "iters": args.iters, "warmup": args.warmup, "engines": figures, "int8_over_fp16": ratio,
                                   "versions": package_versions()}, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    try:
        main()
    except SwinTrtError as error:
        raise SystemExit(f"tensorrt_throughput.py: error: {error}") from None
