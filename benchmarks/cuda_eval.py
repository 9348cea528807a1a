"""The PyTorch baselines on CUDA beside the TensorRT engines: an FP checkpoint evaluated in FP32
and in FP16 (``torch.autocast``), and its calibrated fake-quant model in FP32, on the same images.

    python benchmarks/cuda_eval.py --resume runs/micro/swin_micro.pth --calibrated calib/swin_micro_calib.pth
        --data-path data/digits [--batch-size 128]

images/s covers data loading and the forward passes (as `swin-trt eval` reports it). Saves
benchmarks/results/cuda_eval.json with the GPU and CPU; needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch
from machine import machine

from swin_trt.api import load_model
from swin_trt.console import print_table
from swin_trt.distributed import DistContext
from swin_trt.pipelines.evaluate import evaluate_split
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "cuda_eval.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", required=True, help="FP checkpoint")
    parser.add_argument("--calibrated", required=True, help="its calibrated checkpoint (fake-quant reference)")
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"result file (default {RESULTS.relative_to(RESULTS.parents[2])})")
    args = parser.parse_args()
    where = machine()
    context = DistContext(device=torch.device("cuda"))
    runs = {
        "FP32": (load_model(checkpoint=args.resume), contextlib.nullcontext()),
        "FP16 autocast": (load_model(checkpoint=args.resume), torch.autocast("cuda", dtype=torch.float16)),
        "INT8 fake-quant": (load_model(checkpoint=args.calibrated), contextlib.nullcontext()),
    }
    results = {}
    for name, (model, precision) in runs.items():
        with precision:
            evaluate_split(model, args.data_path, False, args.batch_size, context, workers=2, max_batches=1)  # warm-up (cuDNN, allocator)
            results[name] = evaluate_split(model, args.data_path, False, args.batch_size, context, workers=2).as_json()
    print_table(f"CUDA evaluation on {where['gpu']}", ("model", "top-1 %", "images", "images/s"),
                [(name, r["top1"], r["images"], r["images_per_s"]) for name, r in results.items()])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"checkpoint": args.resume, "calibrated": args.calibrated, "batch_size": args.batch_size, "machine": where,
                                       "results": results, "versions": package_versions()}, indent=2) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
