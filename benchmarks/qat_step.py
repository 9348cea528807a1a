"""QAT step time over an FP32 training step, on Swin-T 224 (random weights and images: speed does
not depend on them).

One step = forward, loss, backward, grad-norm clip, AdamW update. Measured for:
- FP32: the FP model with cross-entropy;
- QAT: the fake-quant model (each --int8-mode given), scales fixed;
- QAT + distillation: the same plus the FP teacher's forward (no grad) and the KL term, the teacher
  run as ``swin-trt qat --distill`` runs it on the CPU (onnxruntime, ``swin_trt.loops.teacher``), and
  once more with the teacher in PyTorch (``, torch teacher``: what the teacher's runtime gains);
each QAT kind also with the compiled one-pass fake-quant kernel (``--compile-fake-quant``)
where torch.compile works (its compile time is excluded: it is paid once per process).
Timed by duration (``timing.time_by_duration``): each repeat runs steps of one kind until
--min-seconds have passed; the kinds are interleaved within each repeat so that machine noise hits
them alike; medians of the repeats (min and max kept) and the median of the per-repeat ratios are
reported. Every turn opens with --turn-warmup untimed steps: a step that
follows another kind's runs 1.5-2x slower for two or three steps while the allocator re-fits
memory the other model freed, a cost a training run (one model throughout) never pays.

    .venv/bin/python benchmarks/qat_step.py [--batch-size 8 --threads 2 --repeats 5 --min-seconds 4 --int8-mode 1 trt]

Prints a table and saves benchmarks/results/qat_step/<cpu kind>.json (with the CPU model and ISA flags, the allocator setting
and the load average; ``--allocator glibc-default`` writes <cpu kind>_glibc-default.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_kind
from timing import time_by_duration

from swin_trt.allocator import keep_freed_memory
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.distributed import DistContext
from swin_trt.loops.distillation import DistillationLoss, StudentTeacherLoss
from swin_trt.loops.teacher import OnnxruntimeTeacher, choose_teacher_runtime
from swin_trt.loops.train import optimizer_step, parameter_groups
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.model import quantize_model, use_compiled_kernel
from swin_trt.quantization.recipes import get_recipe
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "qat_step"  # one file per CPU kind
TARGETS = {"qat": 1.3, "distill": 1.6}  # issue 20: QAT step <= 1.3x the FP32 step, with distillation <= 1.6x


def target(kind: str) -> float:
    return TARGETS["distill" if "distill" in kind else "qat"]


def calibrated(fp32: torch.nn.Module, int8_mode: str, images: torch.Tensor) -> torch.nn.Module:
    model = quantize_model(copy.deepcopy(fp32), get_recipe(int8_mode))
    histograms, _ = collect_statistics(model, [(images, None)], 1, DistContext())
    load_calib_amax(model, histograms, "max")
    return model


def stepper(model: torch.nn.Module, loss_fn, images: torch.Tensor, targets: torch.Tensor):
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-6)
    model.train()

    def step() -> None:
        loss = loss_fn(model(images), targets, images)
        optimizer_step(model, loss, optimizer, 5.0, "benchmark step", DistContext())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each kind (after one warm-up step; each turn also opens with --turn-warmup untimed steps); medians are reported")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="each repeat runs steps until this long has passed (timing by duration)")
    parser.add_argument("--int8-mode", nargs="+", default=["1", "trt"])
    parser.add_argument("--turn-warmup", type=int, default=2,
                        help="untimed steps at the start of every turn: a step right after another kind's runs slow (timing.time_by_duration)")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled-kernel variants")
    parser.add_argument("--allocator", choices=("keep-freed", "glibc-default"), default="keep-freed",
                        help="keep-freed (what swin-trt's commands do, swin_trt.allocator) or glibc's defaults (every large tensor mmapped afresh)")
    args = parser.parse_args()
    allocator = args.allocator if args.allocator == "glibc-default" or keep_freed_memory() else "glibc-default (mallopt unavailable)"
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = get_config(args.model)
    images = torch.randn(args.batch_size, 3, config.img_size, config.img_size)
    targets = torch.randint(0, config.num_classes, (args.batch_size,))
    fp32 = build_model(config)
    teacher = copy.deepcopy(fp32).eval().requires_grad_(False)

    cross_entropy = StudentTeacherLoss(F.cross_entropy)  # no teacher: the criterion alone
    distillation = DistillationLoss(10000.0, 3.0, config.num_classes)
    runtime = choose_teacher_runtime("auto", "cpu")  # onnxruntime: as `swin-trt qat --distill` runs its teacher on the CPU
    distill = StudentTeacherLoss(F.cross_entropy, OnnxruntimeTeacher(teacher, args.threads), distillation)
    torch_teacher = StudentTeacherLoss(F.cross_entropy, teacher, distillation)  # what the teacher's runtime gains
    kinds = {"fp32": stepper(fp32, cross_entropy, images, targets)}
    compiled_note = "skipped" if args.no_compiled else None
    for mode in args.int8_mode:
        student = calibrated(fp32, mode, images)
        for kernel in ("eager", "compiled"):
            if kernel == "compiled":
                if compiled_note:
                    continue
                student = copy.deepcopy(student)
                compiled_note = use_compiled_kernel(student)
                if compiled_note:
                    continue
            suffix = "" if kernel == "eager" else ", compiled"
            kinds[f"qat mode {mode}{suffix}"] = stepper(student, cross_entropy, images, targets)
            kinds[f"qat mode {mode} + distill{suffix}"] = stepper(copy.deepcopy(student), distill, images, targets)
            if kernel == "eager":
                kinds[f"qat mode {mode} + distill, torch teacher"] = stepper(copy.deepcopy(student), torch_teacher, images, targets)

    timings = time_by_duration(kinds, args.repeats, args.min_seconds, turn_warmup=args.turn_warmup)
    times = {kind: timing.seconds_per_call for kind, timing in timings.items()}
    ratios = {kind: statistics.median(t / f for t, f in zip(times[kind], times["fp32"])) for kind in kinds if kind != "fp32"}

    results = {
        "teacher_runtime": runtime,
        "model": args.model,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "min_seconds": args.min_seconds,
        "turn_warmup": args.turn_warmup,
        "step_s_median": {kind: statistics.median(t) for kind, t in times.items()},
        "step_s_all": times,
        "steps_per_repeat": {kind: timing.calls for kind, timing in timings.items()},
        "ratio_to_fp32_median": ratios,
        "target_ratio": {kind: target(kind) for kind in ratios},
        "compiled_kernel": compiled_note or "used",
        "allocator": allocator,
        "cpu": read_cpu().as_json(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "versions": package_versions(),
    }
    rows = [(kind, f"{statistics.median(t):.3f} ({min(t):.3f}-{max(t):.3f})", "1.00x" if kind == "fp32" else f"{ratios[kind]:.2f}x",
             "" if kind == "fp32" else f"{'yes' if ratios[kind] <= target(kind) else 'no'} (<= {target(kind)}x)") for kind, t in times.items()]
    print_table(f"training step: {args.model}, batch {args.batch_size}, {args.threads} threads, median of {args.repeats} ({results['cpu']['model']})",
                ("step", "seconds (min-max)", "/ FP32 step", "target met"), rows)
    output = RESULTS / f"{cpu_kind(read_cpu())}{'' if args.allocator == 'keep-freed' else '_glibc-default'}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {output}")


if __name__ == "__main__":
    main()
