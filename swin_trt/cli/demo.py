"""``swin-trt demo``: the whole pipeline on the bundled digits and ``swin_micro``.

Stages done by an earlier run are reused (the dataset, and the trained model when its recipe and
config are unchanged), so a second ``make demo`` takes seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from swin_trt.cli.common import emit_json
from swin_trt.io import check_writable
from swin_trt.lazy import lazy_import
from swin_trt.models.zoo import MICRO
from swin_trt.quantization.recipes import RECIPES
from swin_trt.settings import CalibrationRequest, TrainRecipe

api = lazy_import("swin_trt.api")
console = lazy_import("swin_trt.console")
ddp = lazy_import("swin_trt.distributed")
digits = lazy_import("swin_trt.data.digits")
ort_runtime = lazy_import("swin_trt.runtimes.onnxruntime")
workflows = lazy_import("swin_trt.workflows")

NAME = "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="run the pipeline on bundled data",
        description="digits dataset -> train swin_micro (cached) -> FP32 eval (folder and zip layouts) -> "
        "PTQ calibration in each int8 mode -> fake-quant eval -> ONNX export -> onnxruntime engine -> parity table.",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="where data and checkpoints go (default runs/demo)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a matching checkpoint exists")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_writable(args.workdir, "--workdir", "folder")
    context = ddp.DistContext()
    stages: list[tuple[str, str, str]] = []
    data_dir = args.workdir / "digits"

    start = time.perf_counter()
    if digits.is_digits_dataset(data_dir):
        stages.append(("data", f"reused {data_dir}", "-"))
    else:
        summary = digits.write_digits(data_dir, overwrite=True)
        stages.append(("data", f"digits: {summary['train']} train / {summary['val']} val", f"{time.perf_counter() - start:.1f}"))

    recipe = TrainRecipe()
    start = time.perf_counter()
    print(f"training {MICRO.name} for {recipe.epochs} epochs (a few minutes on 2 CPU cores) unless {args.workdir} has it ...", flush=True)
    trained, reused = workflows.reuse_or_train(MICRO.name, data_dir, args.workdir, recipe, context, retrain=args.retrain)
    checkpoint = trained.checkpoint
    done = f"reused {checkpoint}" if reused else f"{recipe.epochs} epochs, final loss {trained.losses[-1]:.3f}"
    stages.append(("train", done, f"{time.perf_counter() - start:.1f}"))

    model = api.load_model(checkpoint=checkpoint)
    results = {}
    for layout, use_zip in (("folder", False), ("zip", True)):
        start = time.perf_counter()
        result = results[layout] = workflows.evaluate_split(model, data_dir, use_zip, 128, context, workers=0)
        stages.append((f"eval FP32 ({layout})", f"top-1 {result.top1:.2f} %  top-5 {result.top5:.2f} %  ({result.images} images)", f"{time.perf_counter() - start:.1f}"))

    fp32 = results["folder"]
    int8_rows, parity_rows, int8_json = [], [], {}
    for mode in RECIPES:
        start = time.perf_counter()
        request = CalibrationRequest(int8_mode=mode)
        outcome = workflows.calibrate_checkpoint(None, None, checkpoint, data_dir, False, request, args.workdir / "calib" / mode, context, workers=0)
        result = workflows.evaluate_split(outcome.model, data_dir, False, 128, context, workers=0)
        stages.append((f"calibrate + eval INT8 mode {mode}", f"{request.calibrator}, {outcome.images} images -> {outcome.checkpoint}", f"{time.perf_counter() - start:.1f}"))
        int8_rows.append((mode, request.calibrator, fp32.top1, result.top1, result.top1 - fp32.top1))
        int8_json[f"int8_mode_{mode}_top1"] = result.top1

        start = time.perf_counter()
        graph = workflows.export_checkpoint(outcome.checkpoint, args.workdir / "export" / f"{MICRO.name}_int8-mode{mode}.onnx")
        engine_path = args.workdir / "engines" / f"{MICRO.name}_int8-mode{mode}.ort.onnx"
        built = ort_runtime.build(graph["onnx"], engine_path, "auto")
        bench = workflows.bench_engine(outcome.checkpoint, engine_path, data_dir, workers=0)
        report = bench.report
        stages.append((f"export + build + bench mode {mode}", f"{graph['q_nodes']} Q/DQ pairs -> {engine_path} ({built['ort_mode']})", f"{time.perf_counter() - start:.1f}"))
        parity_rows.append((mode, built["ort_mode"], report.fakequant_top1, report.engine_top1, report.agreement, f"{report.rel_error_median:.3g}",
                            f"{report.rel_error_p95:.3g}", "passed" if bench.verdict.passed else "FAILED", f"{report.images_per_s:.0f}"))
        int8_json[f"engine_mode_{mode}_agreement"] = report.agreement
        int8_json[f"engine_mode_{mode}_passed"] = bench.verdict.passed
        auto = built["ort_mode"], built["ort_mode_reason"]

    console.print_table(f"swin-trt demo: {MICRO.name} on digits", ("stage", "result", "seconds"), stages)
    console.print_table("FP32 vs INT8 fake-quant (digits val, 360 images)", ("int8 mode", "calibrator", "FP32 top-1 %", "INT8 top-1 %", "delta (pt)"), int8_rows)
    console.print_table(f"engine (onnxruntime, --ort-mode auto -> {auto[0]}) vs fake-quant reference, default gate (docs/parity.md)",
                        ("int8 mode", "ort mode", "fake-quant top-1 %", "engine top-1 %", "argmax agreement %", "r median", "r p95", "gate", "engine images/s"),
                        parity_rows)
    print(f"--ort-mode auto chose {auto[0]}: {auto[1]}")
    print(f"swin_micro FP32 top-1: {fp32.top1:.2f} %")
    emit_json(args, {"checkpoint": str(checkpoint), **fp32.as_json(), **int8_json})
    return 0
