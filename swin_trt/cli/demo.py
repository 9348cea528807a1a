"""``swin-trt demo``: the whole pipeline on both bundled datasets.

digits (scikit-learn, ``swin_micro``) and Fashion-MNIST (Debian's ``dataset-fashion-mnist``,
``swin_micro_fashion``), each: data -> FP32 training -> FP32 eval -> for every setting (int8 mode
x precision): PTQ calibration -> QAT with distillation from the FP model -> ONNX export of the QAT
checkpoint -> onnxruntime engine -> parity gate against its fake-quant reference. Besides the
8-bit modes, one setting at 4-bit activations shows what QAT is for: PTQ loses there and QAT wins
most of it back (small models trained from scratch lose nothing to INT8 PTQ).

Every stage also writes the ``--json`` object its command would (``train.json``,
``calib/<setting>/calibrate.json``, ``qat/<setting>/qat.json``, ``engines/bench_<engine>.json``
under ``<workdir>/<dataset>/``), which ``swin-trt report`` reads.

Stages done by an earlier run are reused (the datasets, the trained models when recipe, config
and data are unchanged, finished QAT runs of the same calibration), so a second run costs the
evaluations only. Without the Fashion-MNIST files the demo runs on digits and says how to get them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swin_trt.cli.common import emit_json
from swin_trt.io import check_writable, write_json
from swin_trt.lazy import lazy_import
from swin_trt.models.zoo import MICRO, MICRO_FASHION
from swin_trt.settings import CalibrationRequest, QatRecipe, TrainRecipe

api = lazy_import("swin_trt.api")
console = lazy_import("swin_trt.console")
ddp = lazy_import("swin_trt.distributed")
digits = lazy_import("swin_trt.data.digits")
fashion = lazy_import("swin_trt.data.fashion")
bench_cli = lazy_import("swin_trt.cli.bench")
calibrate_cli = lazy_import("swin_trt.cli.calibrate")
ort_runtime = lazy_import("swin_trt.runtimes.onnxruntime")
report = lazy_import("swin_trt.report")
sensitivity = lazy_import("swin_trt.quantization.sensitivity")
calibrate_stage = lazy_import("swin_trt.pipelines.calibrate")
deploy_stage = lazy_import("swin_trt.pipelines.deploy")
evaluate_stage = lazy_import("swin_trt.pipelines.evaluate")
export_stage = lazy_import("swin_trt.pipelines.export")
qat_stage = lazy_import("swin_trt.pipelines.qat")
sensitivity_stage = lazy_import("swin_trt.pipelines.sensitivity")
train_stage = lazy_import("swin_trt.pipelines.train")

NAME = "demo"
FASHION_TRAIN_IMAGES = 4000


@dataclass(frozen=True)
class DemoDataset:
    """One dataset's part of the demo: how to write it, what to train on it, how to QAT."""

    name: str
    key: str  # JSON key prefix ("" keeps digits' keys as they were)
    model: str
    write: Callable[[Path], dict]
    train: TrainRecipe
    settings: tuple[tuple[str, int, int, int], ...]  # (int8 mode, weight bits, activation bits, QAT epochs)
    layouts: tuple[str, ...]  # eval FP32 on these ("folder", "zip")
    sensitivity_tag: str | None = None  # the setting whose PTQ model gets a per-layer sensitivity table (its val images)


def _write_fashion(root: Path) -> dict:
    return fashion.write_fashion_mnist(root, train_images=FASHION_TRAIN_IMAGES, overwrite=True)


DATASETS = (
    DemoDataset("digits", "", MICRO.name, lambda root: digits.write_digits(root, overwrite=True), TrainRecipe(),
                (("1", 8, 8, 1), ("2", 8, 8, 1), ("trt", 8, 8, 1), ("trt", 8, 4, 3)), ("folder", "zip"), "mode_trt_w8a4"),
    DemoDataset("fashion-mnist", "fashion_", MICRO_FASHION.name, _write_fashion, TrainRecipe(epochs=6),
                (("trt", 8, 8, 1), ("trt", 8, 4, 1)), ("folder",)),
)
# QAT as `swin-trt qat --distill --qat-lr 1e-3 --no-mixup`: a micro model trained at lr 2e-3 needs a larger fine-tuning LR
# than Swin-T's 1e-5 to move within one or two epochs (measured: benchmarks/results/qat_recovery_*.json)
QAT_LR = 1e-3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="run the pipeline on the bundled datasets",
        description="digits and Fashion-MNIST: data -> train micro Swin (cached) -> FP32 eval -> per int8 mode and precision: "
        "PTQ calibration -> QAT with distillation -> ONNX export -> onnxruntime engine -> parity gate; FP32 / PTQ / QAT side by side.",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="where data and checkpoints go (default runs/demo)")
    parser.add_argument("--retrain", action="store_true", help="train and fine-tune again even if matching checkpoints exist")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as one JSON object")
    parser.set_defaults(run=run)


def setting_tag(mode: str, weight_bits: int = 8, activation_bits: int = 8) -> str:
    return f"mode_{mode}" if (weight_bits, activation_bits) == (8, 8) else f"mode_{mode}_w{weight_bits}a{activation_bits}"


# The workdir layout (benchmarks that reuse a demo workdir read it through these)
def data_root(workdir: Path, dataset: str = "digits") -> Path:
    return Path(workdir) / "data" / dataset


def output_dir(workdir: Path, dataset: str = "digits") -> Path:
    """The trained ``<model>.pth`` and ``train.json``, and ``calib/``, ``qat/``, ``export/``, ``engines/`` below it."""
    return Path(workdir) / dataset


def calibration_dir(workdir: Path, tag: str, dataset: str = "digits") -> Path:
    """``<model>_calib.pth`` and ``calibrate.json`` of one setting (``setting_tag``)."""
    return output_dir(workdir, dataset) / "calib" / tag


class Stages:
    """The stage table: what each step did and how long it took."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, stage: str, result: str, start: float | None) -> None:
        self.rows.append((stage, result, "-" if start is None else f"{time.perf_counter() - start:.1f}"))
        print(f"{stage}: {result}", flush=True)


def _prepare_data(dataset: DemoDataset, root: Path, stages: Stages) -> bool:
    """Write the dataset unless ``root`` holds it; False when its source files are not installed."""
    start = time.perf_counter()
    if dataset.name == "digits":
        if digits.is_digits_dataset(root):
            stages.add(f"{dataset.name}: data", f"reused {root}", None)
            return True
    else:
        manifest = root / fashion.MANIFEST
        if manifest.is_file() and json.loads(manifest.read_text()).get("train") == FASHION_TRAIN_IMAGES:
            stages.add(f"{dataset.name}: data", f"reused {root}", None)
            return True
        if not all((fashion.DEFAULT_SOURCE / name).is_file() for names in fashion.FILES.values() for name in names):
            stages.add(f"{dataset.name}: data", f"skipped: no {fashion.DEFAULT_SOURCE} (apt-get install {fashion.PACKAGE})", None)
            return False
    summary = dataset.write(root)
    stages.add(f"{dataset.name}: data", f"{summary['train']} train / {summary['val']} val images", start)
    return True


def _run_dataset(dataset: DemoDataset, workdir: Path, retrain: bool, context: Any, stages: Stages) -> dict[str, Any] | None:
    root, out = data_root(workdir, dataset.name), output_dir(workdir, dataset.name)
    if not _prepare_data(dataset, root, stages):
        return None
    start = time.perf_counter()
    print(f"{dataset.name}: training {dataset.model} for {dataset.train.epochs} epochs (minutes on 2 CPU cores) unless {workdir} has it ...", flush=True)
    trained, reused = train_stage.reuse_or_train(dataset.model, root, out, dataset.train, context, retrain=retrain)
    checkpoint = trained.checkpoint
    stages.add(f"{dataset.name}: train", f"reused {checkpoint}" if reused else f"{dataset.train.epochs} epochs, final loss {trained.losses[-1]:.3f}", start)
    write_json(out / "train.json", {"checkpoint": str(checkpoint), "top1": trained.result.top1})

    fp_model = api.load_model(checkpoint=checkpoint)
    fp32 = {}
    for layout in dataset.layouts:
        start = time.perf_counter()
        fp32[layout] = evaluate_stage.evaluate_split(fp_model, root, layout == "zip", 128, context, workers=0)
        stages.add(f"{dataset.name}: eval FP32 ({layout})", f"top-1 {fp32[layout].top1:.2f} %  ({fp32[layout].images} images)", start)
    fp_top1 = fp32["folder"].top1
    results: dict[str, Any] = {"checkpoint": str(checkpoint), **fp32["folder"].as_json(), "settings": []}

    for mode, weight_bits, activation_bits, epochs in dataset.settings:
        tag = setting_tag(mode, weight_bits, activation_bits)
        label = f"{dataset.name} mode {mode} W{weight_bits}A{activation_bits}"
        start = time.perf_counter()
        request = CalibrationRequest(int8_mode=mode, weight_bits=weight_bits, activation_bits=activation_bits)
        calibrated = calibrate_stage.calibrate_checkpoint(None, None, checkpoint, root, False, request, calibration_dir(workdir, tag, dataset.name), context, workers=0)
        ptq = evaluate_stage.evaluate_split(calibrated.model, root, False, 128, context, workers=0)
        write_json(calibrated.checkpoint.parent / "calibrate.json", calibrate_cli.summary(calibrated, request, ptq.top1))
        stages.add(f"{label}: PTQ", f"{request.calibrator}, {calibrated.images} images: top-1 {ptq.top1:.2f} %", start)
        if tag == dataset.sensitivity_tag:
            _sensitivity(calibrated.model, root, out / f"sensitivity_{tag}.json", context, stages, label)

        start = time.perf_counter()
        recipe = QatRecipe(epochs=epochs, qat_lr=QAT_LR, distill=True, mixup=False)
        qat = qat_stage.qat_checkpoint(None, None, calibrated.checkpoint, root, False, recipe, out / "qat" / tag, context,
                                          teacher=checkpoint, restart=retrain, workers=0, baseline={"fp_top1": fp_top1, "ptq_top1": ptq.top1})
        write_json(qat.checkpoint.parent / "qat.json", {"checkpoint": str(qat.checkpoint), "top1": qat.top1, "ptq_top1": ptq.top1, "fp_top1": fp_top1})
        stages.add(f"{label}: QAT", f"{recipe.epochs} epoch(s) with distillation: top-1 {qat.top1:.2f} %", start)

        start = time.perf_counter()
        stem = f"{dataset.model}_{tag}_qat"
        graph = export_stage.export_checkpoint(qat.checkpoint, out / "export" / f"{stem}.onnx")
        engine_path = out / "engines" / f"{stem}.ort.onnx"
        built = ort_runtime.build(graph["onnx"], engine_path, "auto")
        bench = deploy_stage.bench_engine(qat.checkpoint, engine_path, root, workers=0)  # every val image
        report = bench.report
        write_json(engine_path.parent / f"bench_{stem}.json", bench_cli.summary(bench))
        stages.add(f"{label}: export + build + gate", f"{graph['q_nodes']} Q/DQ pairs, ort {built['ort_mode']}: "
                   f"{'passed' if bench.verdict.passed else 'FAILED'} on {report.images} images", start)
        results["settings"].append({
            "mode": mode, "weight_bits": weight_bits, "activation_bits": activation_bits, "tag": tag,
            "ptq_top1": ptq.top1, "qat_top1": qat.top1, "ort_mode": built["ort_mode"], "ort_mode_reason": built["ort_mode_reason"],
            "fakequant_top1": report.fakequant_top1, "engine_top1": report.engine_top1, "agreement": report.agreement,
            "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95, "passed": bench.verdict.passed,
            "images": report.images, "images_per_s": report.images_per_s,
        })
    write_json(out / "demo.json", results)
    return results


def _sensitivity(model: Any, root: Path, path: Path, context: Any, stages: Stages, label: str) -> None:
    """`swin-trt sensitivity` (layer groups, all val images) of a PTQ model, for the report."""
    start = time.perf_counter()
    probe = sensitivity_stage.split_probe(model, root, False, "val", None, 128, 0, context.device)
    results = probe.measure(sensitivity.quantizer_groups(model, "layer"))
    write_json(path, sensitivity_stage.sensitivity_payload(probe, results, "layer"))
    stages.add(f"{label}: sensitivity", f"{len(results)} layer groups, most sensitive {results[0].group.name}", start)


def _json_keys(dataset: DemoDataset, results: dict[str, Any]) -> dict[str, Any]:
    """Flat keys for CI scripts: digits keeps the unprefixed keys of earlier releases."""
    prefix = dataset.key
    flat = {f"{prefix}{key}": results[key] for key in ("checkpoint", "top1", "top5", "images", "images_per_s")}
    for row in results["settings"]:
        tag = row["tag"]
        flat[f"{prefix}int8_{tag}_top1"] = row["ptq_top1"]
        flat[f"{prefix}qat_{tag}_top1"] = row["qat_top1"]
        flat[f"{prefix}engine_{tag}_agreement"] = row["agreement"]
        flat[f"{prefix}engine_{tag}_passed"] = row["passed"]
    return flat


def run(args: argparse.Namespace) -> int:
    check_writable(args.workdir, "--workdir", "folder")
    context = ddp.DistContext()
    stages = Stages()
    done = {dataset.name: _run_dataset(dataset, args.workdir, args.retrain, context, stages) for dataset in DATASETS}
    done = {name: results for name, results in done.items() if results is not None}

    console.print_table("swin-trt demo", ("stage", "result", "seconds"), stages.rows)
    accuracy, parity = [], []
    for name, results in done.items():
        for row in results["settings"]:
            precision = f"W{row['weight_bits']}A{row['activation_bits']}"
            accuracy.append((name, row["mode"], precision, results["top1"], row["ptq_top1"], row["qat_top1"], row["qat_top1"] - row["ptq_top1"]))
            parity.append((name, row["mode"], precision, row["ort_mode"], row["fakequant_top1"], row["engine_top1"], row["agreement"],
                           f"{row['rel_error_median']:.3g}", f"{row['rel_error_p95']:.3g}", "passed" if row["passed"] else "FAILED",
                           row["images"], f"{row['images_per_s']:.0f}"))
    console.print_table("FP32 / PTQ / QAT top-1 % (val: digits 360, Fashion-MNIST 10,000 images)",
                        ("dataset", "int8 mode", "precision", "FP32", "PTQ", "QAT", "QAT - PTQ (pt)"), accuracy)
    console.print_table("QAT checkpoint's onnxruntime engine vs its fake-quant reference, default gate (docs/parity.md)",
                        ("dataset", "int8 mode", "precision", "ort mode", "fake-quant top-1 %", "engine top-1 %", "agreement %",
                         "r median", "r p95", "gate", "images", "engine images/s"), parity)
    summary: dict[str, Any] = {}
    for dataset in DATASETS:
        if dataset.name in done:
            summary.update(_json_keys(dataset, done[dataset.name]))
    page = report.write_report(args.workdir)
    print(f"report: {page}")
    if "fashion-mnist" not in done:
        print("Fashion-MNIST was skipped: `apt-get install dataset-fashion-mnist` (or `make install` as root) adds it to the demo")
    emit_json(args, summary)
    return 0 if all(row["passed"] for results in done.values() for row in results["settings"]) else 1
