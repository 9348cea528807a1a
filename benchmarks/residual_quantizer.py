"""Fake-quant top-1 of the trt placement with and without the MLP-residual quantizer.

The measurement behind dropping it from trt in 0.2: ``trt-residual`` (trt before 0.2) quantizes the
skip operand of each block's MLP residual add (``mlp_residual_quantizer``), trt does not.
For every trained model given: calibrate it as `swin-trt calibrate --int8-mode trt` did (its
default images and calibrator), evaluate the fake-quant model on every val image, then disable
the MLP-residual quantizers (the other quantizers' amax do not depend on them: calibration
collects on FP activations) and evaluate again. Reports top-1 both ways, the difference, and
the images whose prediction changed (right only with / only without the quantizer).

    .venv/bin/python benchmarks/residual_quantizer.py --case digits /tmp/micro/swin_micro.pth /tmp/digits \\
        [--case fashion fashion.pth data/fashion ...] [--workdir DIR] [--output PATH]

Saves benchmarks/results/residual_quantizer.json (or --output) with the CPU model, ISA flags and
the load average around the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import machine

import swin_trt
from swin_trt.console import print_table
from swin_trt.data.loader import build_loader
from swin_trt.distributed import DistContext
from swin_trt.float32 import exact_float32
from swin_trt.io import write_json
from swin_trt.quantization.model import named_quantizers
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "residual_quantizer.json"
RESIDUAL = "mlp_residual_quantizer"


@torch.no_grad()
def predictions(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax, label) of every image in the loader, in order."""
    model.eval()
    found, labels = [], []
    with exact_float32():
        for images, targets in loader:
            found.append(model(images).argmax(dim=1))
            labels.append(targets)
    return torch.cat(found), torch.cat(labels)


def measure(name: str, checkpoint: Path, data_path: Path, work: Path, workers: int) -> dict:
    start = time.perf_counter()
    out = work / name
    subprocess.run([sys.executable, "-m", "swin_trt", "calibrate", "--resume", str(checkpoint), "--data-path", str(data_path), "--int8-mode", "trt-residual",
                    "--calib-output-path", str(out), "--skip-eval", "--workers", str(workers), "--json", str(out / "calibrate.json")], check=True)
    calibrated = json.loads((out / "calibrate.json").read_text())["checkpoint"]
    model = swin_trt.load_model(checkpoint=calibrated)
    config = model.swin_trt_config
    dataset = swin_trt.build_dataset(data_path, "val", swin_trt.eval_transform(config.data))
    loader = build_loader(dataset, 128, DistContext(), workers=workers)
    residual = [q for n, q in named_quantizers(model) if n.endswith(RESIDUAL)]
    assert residual and all(q.enabled for q in residual), f"{calibrated}: the trt recipe should enable {RESIDUAL}"
    with_q, labels = predictions(model, loader)
    for quantizer in residual:
        quantizer.enabled = False
    without_q, _ = predictions(model, loader)
    right_with, right_without = with_q.eq(labels), without_q.eq(labels)
    result = {
        "model": config.name, "checkpoint": str(checkpoint), "calibrated": calibrated, "images": len(labels), "residual_quantizers": len(residual),
        "top1_with": 100.0 * right_with.float().mean().item(), "top1_without": 100.0 * right_without.float().mean().item(),
        "predictions_changed": int(with_q.ne(without_q).sum()),
        "right_only_with": int((right_with & ~right_without).sum()), "right_only_without": int((right_without & ~right_with).sum()),
        "seconds": time.perf_counter() - start,
    }
    result["top1_change"] = result["top1_with"] - result["top1_without"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs=3, action="append", required=True, metavar=("NAME", "CHECKPOINT", "DATA_PATH"),
                        help="a trained FP checkpoint and its dataset (train/ and val/ folders)")
    parser.add_argument("--workdir", type=Path, help="keep the calibrated checkpoints here (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        results = {name: measure(name, Path(checkpoint), Path(data), work, args.workers) for name, checkpoint, data in args.case}
    print_table("fake-quant top-1 (%), trt recipe, with and without the MLP-residual quantizer",
                ("case", "model", "images", "with", "without", "with - without", "changed", "right only with", "right only without"),
                [(name, r["model"], r["images"], r["top1_with"], r["top1_without"], r["top1_change"], r["predictions_changed"], r["right_only_with"],
                  r["right_only_without"]) for name, r in results.items()])
    write_json(args.output, {"cases": results, "machine": machine(), "load_average": {"before": load_before, "after": os.getloadavg()},
                             "versions": package_versions()})
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
