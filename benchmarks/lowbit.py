"""Low-bit PTQ (``calibrate --ptq-method``) against today's best calibrator, per precision and recipe.

For each recipe and precision: the four calibrators without a method (the best of them, by
fake-quant top-1, is "today's best"), then every method alone and the combinations with that
calibrator; fake-quant top-1 on the val split, calibration wall and CPU seconds. The best
combination of each setting is exported and run on onnxruntime (and OpenVINO when installed):
engine top-1 on the same images. The val images are decoded once and cached under --cache with
the FP32 logits; every evaluation runs on the cached tensors.

    .venv/bin/python benchmarks/lowbit.py --checkpoint /work/data/micro/swin_micro_fashion.pth \\
        --data-path /work/data/fashion4k --name fashion_micro --settings W6A6 W4A4 --recipes trt 1

Saves benchmarks/results/lowbit_<name>.json (CPU, load average, versions) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from machine import machine

from swin_trt.api import load_model, open_model
from swin_trt.console import print_table
from swin_trt.data.datasets import build_dataset
from swin_trt.data.transforms import eval_transform
from swin_trt.distributed import DistContext
from swin_trt.io import write_json
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.quantization.recipes import CALIBRATORS
from swin_trt.settings import PTQ_METHODS, CalibrationRequest
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results"
COMBINATIONS = {
    "all": tuple(PTQ_METHODS),
    "exact+adaround": ("ln-reparam", "adaround", "bias-correction"),
    "ln-reparam+qwt+bias": ("ln-reparam", "qwt", "bias-correction"),
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def method_seconds(report: dict) -> dict[str, float]:
    """Seconds per method from a checkpoint's ``quantization.ptq`` report (FP rewrites and unit methods)."""
    found = {name: entry["seconds"] for name, entry in report.items() if isinstance(entry, dict) and "seconds" in entry and name != "seconds"}
    found.update(report.get("seconds", {}))
    if "statistics_seconds" in report:
        found["statistics"] = report["statistics_seconds"]
    return found


def cached_val(checkpoint: str, data_path: str, cache: Path, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Val images, labels and FP32 logits, computed once per checkpoint."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{Path(checkpoint).stem}_{Path(data_path).name}_{limit or 'all'}.pt"
    if path.is_file():
        found = torch.load(path, weights_only=True)
        return found["images"], found["labels"], found["logits"]
    model = load_model(checkpoint=checkpoint)
    val = build_dataset(data_path, "val", eval_transform(model.swin_trt_config.data), num_classes=model.swin_trt_config.num_classes)
    count = min(limit or len(val), len(val))
    samples = [val[i] for i in range(count)]
    images, labels = torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])
    logits = predict(model, images)
    torch.save({"images": images, "labels": labels, "logits": logits}, path)
    return images, labels, logits


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch: int = 250) -> torch.Tensor:
    model.eval()
    return torch.cat([model(part) for part in torch.split(images, batch)])


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(dim=1) == labels).float().mean())


def engine_top1(checkpoint: Path, images: torch.Tensor, labels: torch.Tensor, scratch: Path) -> dict[str, float]:
    """Export, build on onnxruntime (exact mode, and OpenVINO where installed) and evaluate."""
    from swin_trt.runtimes import onnxruntime as ort_runtime

    graph = export_checkpoint(checkpoint, scratch / "graph.onnx")
    found = {}
    ort_runtime.build(graph["onnx"], scratch / "graph.ort.onnx", "exact")
    engine = ort_runtime.Engine(scratch / "graph.ort.onnx")
    found["onnxruntime"] = top1(torch.cat([engine.run(part) for part in torch.split(images, 250)]), labels)
    try:
        from swin_trt.runtimes import openvino as ov_runtime

        ov_runtime.require_openvino()
        ov_runtime.build(graph["onnx"], scratch / "graph.xml")
        engine = ov_runtime.Engine(scratch / "graph.xml")
        found["openvino"] = top1(torch.cat([engine.run(part) for part in torch.split(images, 250)]), labels)
    except Exception as error:  # not installed, or it failed: say so in the results
        found["openvino_error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--settings", nargs="+", default=["W8A8", "W6A6", "W4A8", "W4A4"])
    parser.add_argument("--recipes", nargs="+", default=["trt", "1"])
    parser.add_argument("--calibrators", nargs="+", default=list(CALIBRATORS))
    parser.add_argument("--methods", nargs="*", default=list(PTQ_METHODS), help="methods to measure alone")
    parser.add_argument("--combinations", nargs="*", default=list(COMBINATIONS))
    parser.add_argument("--num-calib-batch", type=int, default=32)
    parser.add_argument("--calib-batchsz", type=int, default=16)
    parser.add_argument("--ptq-iters", type=int, default=200)
    parser.add_argument("--val-images", type=int, default=None, help="first N val images (default all)")
    parser.add_argument("--rank-images", type=int, default=None,
                        help="rank calibrators and methods on N val images (a seeded random subset), then evaluate the best calibrator and the best "
                        "method of each setting on all of them (default: every run on all)")
    parser.add_argument("--no-engine", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/lowbit/cache"))
    parser.add_argument("--workdir", type=Path, default=None, help="keep every calibrated checkpoint here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels, fp_logits = cached_val(args.checkpoint, args.data_path, args.cache, args.val_images)
    fp32 = top1(fp_logits, labels)
    output = RESULTS / f"lowbit_{args.name}.json"
    rows, results = [], []
    config = open_model(checkpoint=args.checkpoint).model.swin_trt_config
    # a seeded random subset: the val folders are sorted by class, so a prefix would hold one or two classes
    subset = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:args.rank_images] if args.rank_images else torch.arange(len(labels))

    def save() -> None:
        write_json(output, {
            "benchmark": "lowbit", "model": config.name, "checkpoint": args.checkpoint, "data_path": args.data_path, "val_images": len(labels),
            "fp32_top1": fp32, "calibration_images": args.num_calib_batch * args.calib_batchsz, "ptq_iters": args.ptq_iters,
            "threads": args.threads, "load_average_end": os.getloadavg(), "cpu": machine(),
            "versions": package_versions(), "results": results,
        })

    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.workdir or Path(temporary)

        def run(recipe: str, weight_bits: int, activation_bits: int, calibrator: str, methods: tuple[str, ...], label: str) -> dict:
            request = CalibrationRequest(int8_mode=recipe, calibrator=calibrator, weight_bits=weight_bits, activation_bits=activation_bits,
                                         num_calib_batch=args.num_calib_batch, calib_batchsz=args.calib_batchsz, ptq_methods=methods,
                                         ptq_iters=args.ptq_iters)
            load, wall, cpu = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
            where = scratch / f"{recipe}_W{weight_bits}A{activation_bits}_{calibrator}_{'+'.join(methods) or 'none'}"
            outcome = calibrate_checkpoint(None, None, args.checkpoint, args.data_path, False, request, where, DistContext(), workers=0)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            ranked = len(subset)
            quant = top1(predict(outcome.model, images[subset]), labels[subset])
            entry = {"recipe": recipe, "precision": f"W{weight_bits}A{activation_bits}", "calibrator": calibrator, "methods": list(methods), "label": label,
                     "ranking_images": ranked, "ranking_top1": quant, "ranking_fp32_top1": top1(fp_logits[subset], labels[subset]), "calibration_seconds": wall, "calibration_cpu_seconds": cpu, "load_average_start": load,
                     "ptq_seconds": method_seconds(outcome.meta["quantization"].get("ptq", {})), "checkpoint": str(outcome.checkpoint)}
            results.append(entry)
            if ranked == len(labels):
                entry["fakequant_top1"], entry["drop"] = quant, fp32 - quant
            rows.append((recipe, entry["precision"], calibrator, label, f"{quant:.2f}", f"{entry['ranking_fp32_top1'] - quant:+.2f}", f"{wall:.0f}", f"{cpu:.0f}"))
            print(rows[-1], flush=True)
            save()
            return entry

        for recipe in args.recipes:
            for setting in args.settings:
                weight_bits, activation_bits = int(setting[1]), int(setting[3])
                baselines = [run(recipe, weight_bits, activation_bits, c, (), "none") for c in args.calibrators]
                best = max(baselines, key=lambda e: e["ranking_top1"])
                best["best_calibrator"] = True
                tried = [run(recipe, weight_bits, activation_bits, best["calibrator"], (m,), m) for m in args.methods]
                tried += [run(recipe, weight_bits, activation_bits, best["calibrator"], COMBINATIONS[c], c) for c in args.combinations]
                winner = max(tried, key=lambda e: e["ranking_top1"]) if tried else best
                winner["best"] = True
                for entry in {id(best): best, id(winner): winner}.values():
                    if "fakequant_top1" not in entry:
                        model = open_model(checkpoint=entry["checkpoint"]).model
                        entry["fakequant_top1"] = top1(predict(model, images), labels)
                        entry["drop"] = fp32 - entry["fakequant_top1"]
                        print("all images:", entry["label"], entry["calibrator"], f"{entry['fakequant_top1']:.2f}", flush=True)
                save()
                if not args.no_engine:
                    winner["engine_top1"] = engine_top1(Path(winner["checkpoint"]), images, labels, Path(winner["checkpoint"]).parent)
                    print("engine", winner["engine_top1"], flush=True)
                    save()
    print_table(f"low-bit PTQ, {config.name} (FP32 {fp32:.2f} %, {len(labels)} val images)",
                ("recipe", "precision", "calibrator", "methods", "top-1 % (ranking images)", "vs FP32", "wall s", "CPU s"), rows)
    print(f"saved {output}")


if __name__ == "__main__":
    main()
