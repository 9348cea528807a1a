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


def swin_graphs(model: str, data_path: str | Path, work: Path, device: str = "cuda", fp8: bool = False) -> dict[str, str]:
    """The model with random weights, calibrated (--int8-mode trt, 4 x 8 images of ``data_path``)
    on ``device`` and exported for TensorRT: ``{"INT8": Q/DQ graph, "FP16": the same without
    Q/DQ}``, and with ``fp8`` ``"FP8"``: calibrated with --format fp8 (max). No GPU needed on the
    CPU; ``gpu_check.sh`` makes them once for every check."""
    config = get_config(model)
    fp = save_checkpoint(work / f"{config.name}.pth", build_model(config), {"config": config.to_dict()})
    formats = {"INT8": CalibrationRequest(int8_mode="trt", num_calib_batch=4, calib_batchsz=8)}
    if fp8:
        formats["FP8"] = CalibrationRequest(int8_mode="trt", num_calib_batch=4, calib_batchsz=8, format="fp8", calibrator="max")
    graphs = {}
    for name, request in formats.items():
        calibrated = calibrate_checkpoint(None, None, fp, data_path, False, request, work / name.lower(), DistContext(device=torch.device(device)), workers=2)
        graphs[name] = export_checkpoint(calibrated.checkpoint, work / f"{name.lower()}.onnx", target="tensorrt")["onnx"]
    return {**graphs, "FP16": export_checkpoint(fp, work / "fp16.onnx", target="tensorrt")["onnx"]}


def build_engines(graphs: dict[str, str], work: Path, batches: list[int], timing_cache: Path | None = None,
                  builder_optimization_level: int | None = None) -> dict[str, Path]:
    """One engine per graph, with the profile the sweep needs (min..max of ``batches``, tuned for
    a quarter of the largest) and one timing cache shared by all builds."""
    engines = {}
    for name, graph in graphs.items():
        engines[name] = work / f"{name.lower()}.plan"
        trt_runtime.build(graph, engines[name], min_batch=min(batches), opt_batch=max(batches) // 4 or 1, max_batch=max(batches),
                          timing_cache=timing_cache or work / "timing.cache", builder_optimization_level=builder_optimization_level)
    return engines


def measure(engine_paths: dict[str, Path], batches: list[int], warmup: int, iters: int) -> dict:
    """The sweep of every engine and its ratio to FP16 per batch: ``{"engines", "int8_over_fp16"[, "fp8_over_fp16"]}``."""
    engines = {name: trt_runtime.Engine(path) for name, path in engine_paths.items()}
    image_shape = engines["INT8"].opt_shape[1:]
    figures = {name: {str(p.batch): p.as_json() for p in sweep(engine, image_shape, batches, warmup, iters, label=name)} for name, engine in engines.items()}
    ratios = {f"{name.lower()}_over_fp16": {str(b): figures[name][str(b)]["images_per_s"] / figures["FP16"][str(b)]["images_per_s"] for b in batches}
              for name in figures if name != "FP16"}
    return {"engines": figures, **ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", required=True, help="images for calibration (e.g. `swin-trt data digits`)")
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--builder-optimization-level", type=int, default=None)
    parser.add_argument("--fp8", action="store_true", help="also an FP8 (E4M3) engine (compute capability 8.9+)")
    parser.add_argument("--timing-cache", type=Path, default=None, help="read and extend this timing cache (default: one in the workdir)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep checkpoints, graphs and engines here")
    args = parser.parse_args()
    trt = trt_runtime.require_tensorrt()
    trt_runtime.require_cuda()
    where = machine()

    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        graphs = swin_graphs(args.model, args.data_path, work, fp8=args.fp8)
        engines = build_engines(graphs, work, args.batches, args.timing_cache, args.builder_optimization_level)
        result = measure(engines, args.batches, args.warmup, args.iters)

    figures = result["engines"]
    quantized = [name for name in ("INT8", "FP8") if name in figures]
    print_table(f"{args.model} on {where['gpu']} (TensorRT {trt.__version__})",
                ("batch", "FP16 img/s", *(f"{n} {what}" for n in quantized for what in ("img/s", "/FP16", "p50 ms", "p99 ms"))),
                [(b, figures["FP16"][str(b)]["images_per_s"],
                  *(value for n in quantized for value in (figures[n][str(b)]["images_per_s"], result[f"{n.lower()}_over_fp16"][str(b)],
                                                            figures[n][str(b)]["p50_ms"], figures[n][str(b)]["p99_ms"])))
                 for b in args.batches])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": args.model, "weights": "random", "int8_mode": "trt", "machine": where, "tensorrt": trt.__version__,
                                   "iters": args.iters, "warmup": args.warmup, **result, "versions": package_versions()}, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    try:
        main()
    except SwinTrtError as error:
        raise SystemExit(f"tensorrt_throughput.py: error: {error}") from None
