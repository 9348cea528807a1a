"""PTQ top-1 against bit width (``--wprec`` / ``--aprec``) on a real dataset.

For int8 modes 1 and trt and calibrators percentile and max (per-channel weights): W8A8, weights at
7/6/5/4 bits with 8-bit activations and activations at 6/5/4 bits with 8-bit weights. Each setting is
what ``swin-trt calibrate --wprec W --aprec A`` does (10 batches x 8 train images, seed 0), then the
fake-quant model is evaluated on the whole val split against the FP32 model. The val images are
decoded and transformed once (the eval transform is deterministic) and shared by all evaluations.

    .venv/bin/python benchmarks/precision_sweep.py --checkpoint runs/demo/digits/swin_micro.pth --data-path runs/demo/data/digits --name digits

Prints a table and saves benchmarks/results/precision_<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from swin_trt.api import load_model
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.data.datasets import build_dataset
from swin_trt.data.transforms import eval_transform
from swin_trt.distributed import DistContext
from swin_trt.io import write_json
from swin_trt.loops.evaluate import evaluate
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.settings import CalibrationRequest
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results"
PRECISIONS = [(8, 8), (7, 8), (6, 8), (5, 8), (4, 8), (8, 6), (8, 5), (8, 4)]
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="FP checkpoint (swin-trt train output)")
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--name", required=True, help="dataset name for the result file")
    parser.add_argument("--modes", nargs="+", default=["1", "trt"])
    parser.add_argument("--calibrators", nargs="+", default=["percentile", "max"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    context = DistContext()
    start = time.perf_counter()
    model = load_model(checkpoint=args.checkpoint)
    val = build_dataset(args.data_path, "val", eval_transform(model.swin_trt_config.data), num_classes=model.swin_trt_config.num_classes)
    samples = [val[i] for i in range(len(val))]
    loader = DataLoader(TensorDataset(torch.stack([image for image, _ in samples]), torch.tensor([label for _, label in samples])), batch_size=256)
    fp32 = evaluate(model, loader, context)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for mode in args.modes:
            for calibrator in args.calibrators:
                for weight_bits, activation_bits in PRECISIONS:
                    request = CalibrationRequest(int8_mode=mode, calibrator=calibrator, weight_bits=weight_bits, activation_bits=activation_bits)
                    outcome = calibrate_checkpoint(None, None, args.checkpoint, args.data_path, False, request, scratch, context, workers=0)
                    result = evaluate(outcome.model, loader, context)
                    rows.append({"int8_mode": mode, "calibrator": calibrator, "weight_bits": weight_bits, "activation_bits": activation_bits,
                                 "top1": result.top1, "drop": fp32.top1 - result.top1})
                    print(f"mode {mode} {calibrator} W{weight_bits}A{activation_bits}: {result.top1:.2f} % ({result.top1 - fp32.top1:+.2f} pt vs FP32)", flush=True)
    results = {
        "dataset": args.name,
        "checkpoint": args.checkpoint,
        "val_images": fp32.images,
        "fp32_top1": fp32.top1,
        "calibration": {"num_calib_batch": CalibrationRequest().num_calib_batch, "calib_batchsz": CalibrationRequest().calib_batchsz,
                        "per_channel_weights": True},
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": read_cpu().as_json(),
        "threads": args.threads,
        "versions": package_versions(),
    }
    table = [(r["int8_mode"], r["calibrator"], f"W{r['weight_bits']}A{r['activation_bits']}", r["top1"], r["top1"] - fp32.top1) for r in rows]
    print_table(f"PTQ top-1 vs bits: {args.name} ({fp32.images} val images, FP32 {fp32.top1:.2f} %)",
                ("int8 mode", "calibrator", "precision", "top-1 %", "vs FP32 (pt)"), table)
    print(f"saved {write_json(RESULTS / ('precision_' + args.name + '.json'), results)}")


if __name__ == "__main__":
    main()
