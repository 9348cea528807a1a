"""How much of PTQ's accuracy drop QAT (with distillation) wins back, per int8 mode and precision.

For each setting (int8 mode x ``--wprec``/``--aprec``): ``swin-trt calibrate`` (the default
calibrator, per-channel weights, 10 x 8 train images) then ``swin-trt qat --distill`` from it with
the FP checkpoint as teacher, exactly as the CLI runs them (``pipelines.calibrate.calibrate_checkpoint``,
``pipelines.qat.qat_checkpoint``). Top-1 on the whole val split: FP32, PTQ, QAT after each epoch.
``recovered`` = (QAT - PTQ) / (FP32 - PTQ), the share of the PTQ drop won back (None when PTQ lost
nothing).

    .venv/bin/python benchmarks/qat_recovery.py --checkpoint runs/demo/digits/swin_micro.pth \\
        --data-path runs/demo/data/digits --name digits --settings 1:8:8 2:8:8 trt:8:8 trt:8:4 --epochs 3

Prints a table and saves benchmarks/results/qat_recovery_<name>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.distributed import DistContext
from swin_trt.io import write_json
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.qat import qat_checkpoint
from swin_trt.settings import CalibrationRequest, QatRecipe
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results"


def setting(text: str) -> tuple[str, int, int]:
    """``MODE:WBITS:ABITS``, e.g. ``trt:8:4``."""
    mode, weight_bits, activation_bits = text.split(":")
    return mode, int(weight_bits), int(activation_bits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="FP checkpoint (swin-trt train output); also the teacher")
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--name", required=True, help="dataset name for the result file")
    parser.add_argument("--settings", nargs="+", type=setting, default=[setting(s) for s in ("1:8:8", "2:8:8", "trt:8:8")], metavar="MODE:W:A")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--qat-lr", type=float, default=QatRecipe().qat_lr, help="as `swin-trt qat --qat-lr` (peak LR = qat-lr x batch / 512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-mixup", dest="mixup", action="store_false", help="as `swin-trt qat --no-mixup`")
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default=QatRecipe().lr_schedule)
    parser.add_argument("--select-images", type=int, default=QatRecipe().selection_images, help="as `swin-trt qat --select-images` (0: keep the last epoch)")
    parser.add_argument("--select-alpha", type=float, default=QatRecipe().selection_alpha, help="as `swin-trt qat --select-alpha`")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    context = DistContext()
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for mode, weight_bits, activation_bits in args.settings:
            tag = f"mode {mode} W{weight_bits}A{activation_bits}"
            request = CalibrationRequest(int8_mode=mode, weight_bits=weight_bits, activation_bits=activation_bits)
            calibrated = calibrate_checkpoint(None, None, args.checkpoint, args.data_path, False, request, Path(scratch) / tag, context, workers=0)
            recipe = QatRecipe(epochs=args.epochs, batch_size=args.batch_size, qat_lr=args.qat_lr, distill=True, mixup=args.mixup,
                               lr_schedule=args.lr_schedule, selection_images=args.select_images,
                               selection_alpha=args.select_alpha)
            outcome = qat_checkpoint(None, None, calibrated.checkpoint, args.data_path, False, recipe, Path(scratch) / tag, context,
                                     teacher=args.checkpoint, workers=0)
            fp32, ptq = outcome.progress.baseline["fp_top1"], outcome.progress.baseline["ptq_top1"]
            per_epoch = [h["top1"] for h in outcome.progress.history]
            drop = fp32 - ptq
            recovered = (per_epoch[-1] - ptq) / drop if drop > 0 else None
            held_out = [outcome.progress.baseline.get("held_out_ptq_top1")] + [h.get("held_out_top1") for h in outcome.progress.history]
            rows.append({"int8_mode": mode, "weight_bits": weight_bits, "activation_bits": activation_bits, "calibrator": request.calibrator,
                         "fp32_top1": fp32, "ptq_top1": ptq, "qat_top1": per_epoch[-1], "qat_top1_per_epoch": per_epoch, "recovered": recovered,
                         "selected_epoch": outcome.selected_epoch, "selected_top1": outcome.top1, "held_out_top1_per_epoch": held_out,
                         "held_out_p_per_epoch": [h.get("held_out_p") for h in outcome.progress.history]})
            print(f"{tag}: FP32 {fp32:.2f}  PTQ {ptq:.2f}  QAT {' -> '.join(f'{t:.2f}' for t in per_epoch)}  held-out {held_out}  "
                  f"kept epoch {outcome.selected_epoch}: {outcome.top1:.2f}", flush=True)
    results = {
        "dataset": args.name,
        "checkpoint": args.checkpoint,
        "qat": {"epochs": args.epochs, "qat_lr": args.qat_lr, "batch_size": args.batch_size, "distill": True, "mixup": args.mixup,
                "lr_schedule": args.lr_schedule, "select_images": args.select_images, "select_alpha": args.select_alpha,
                "peak_lr": QatRecipe(qat_lr=args.qat_lr, batch_size=args.batch_size).peak_lr(1)},
        "rows": rows,
        "load_average_end": os.getloadavg(),
        "seconds": time.perf_counter() - start,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": read_cpu().as_json(),
        "threads": args.threads,
        "versions": package_versions(),
    }
    table = [(r["int8_mode"], f"W{r['weight_bits']}A{r['activation_bits']}", r["fp32_top1"], r["ptq_top1"], r["qat_top1"],
              "-" if r["recovered"] is None else f"{100 * r['recovered']:.0f} %", r["selected_epoch"], r["selected_top1"]) for r in rows]
    print_table(f"QAT recovery: {args.name} ({args.epochs} epochs, qat-lr {args.qat_lr:g}, distillation{'' if args.mixup else ', no mixup'})",
                ("int8 mode", "precision", "FP32 top-1 %", "PTQ top-1 %", "QAT top-1 % (last)", "drop recovered", "kept epoch", "kept top-1 %"), table)
    print(f"saved {write_json(RESULTS / ('qat_recovery_' + args.name + '.json'), results)}")


if __name__ == "__main__":
    main()
