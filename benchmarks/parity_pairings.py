"""Crosswise parity pairings: every engine (recipe x graph precision x runtime) against every
calibrated reference, scored with the gate's own functions; the margins its default bounds rest on.

References: recipes 1, 2 and trt calibrated from one trained checkpoint as `swin-trt demo`
calibrates (percentile, 10 x 8 images), and three more calibrations of the trt recipe (max and
entropy calibrators, percentile with another seed), the subtlest wrong models there are.
Graphs: FP32 (default export) and FP16 (`--target tensorrt` for the trt recipe; recipes 1 and 2
quantize GEMM outputs, which TensorRT cannot take, so theirs is `--precision fp16`). Engines:
onnxruntime exact and fast and OpenVINO from each recipe's graphs; onnxruntime exact from each
variant's; and faults: the trt graphs with one activation scale doubled, their sidecars rewritten
for the new bytes (a consistent chain). Right pairings (an engine against the reference its graph
was exported from) must pass; wrong ones and faults must fail.

Each model's and engine's logits over the val split are computed once (cached under
``--workdir``) and each pairing is scored from them by ``swin_trt.parity``: ``score`` (the
report ``bench`` computes), ``bound_family`` of the graph's own tensor types, ``check_graph``
(the complete graph check against a fresh export of the reference), ``judge`` with the family's
default bounds; the provenance label by ``trace``. So a row is what ``swin-trt bench`` would say.

    python benchmarks/parity_pairings.py --checkpoint /work/data/micro/swin_micro.pth --data-path /work/data/digits --workdir /tmp/pairings/micro
    python benchmarks/parity_pairings.py --checkpoint /work/data/tiny/swin_tiny_fashion.pth --data-path /work/data/fashion60k --workdir /tmp/pairings/tiny

Saves benchmarks/results/parity_pairings_<model>.json: every pairing, a summary per bound family
(the largest r p95 of a right pairing against the smallest r median of a wrong one), the CPU model
and ISA flags, load average before and after, versions, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from swin_trt.api import open_model
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.data.datasets import build_dataset
from swin_trt.data.device_transforms import Normalize, uint8_eval_transform
from swin_trt.distributed import DistContext
from swin_trt.float32 import exact_float32
from swin_trt.io import read_sidecar
from swin_trt.onnx.graph import read_model, tensor_types
from swin_trt.parity.compare import quantile, score
from swin_trt.parity.gate import BY_PRECISION, bound_family, default_bounds, judge
from swin_trt.parity.localize import perturb_scale
from swin_trt.parity.provenance import trace
from swin_trt.pipelines.calibrate import calibrate_checkpoint
from swin_trt.pipelines.deploy import check_graph
from swin_trt.pipelines.export import export_checkpoint
from swin_trt.quantization.model import set_scale_dtype
from swin_trt.quantization.recipes import INT8_MODES
from swin_trt.runtimes import backend_module, open_engine
from swin_trt.settings import CalibrationRequest
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"trt-max": {"calibrator": "max"}, "trt-entropy": {"calibrator": "entropy"}, "trt-seed1": {"seed": 1}}
RUNTIMES = (("onnxruntime", "exact"), ("onnxruntime", "fast"), ("openvino", None))
FAULT = ("layers.1.blocks.0.mlp.fc1.input_quantizer", 2.0)  # the quantizer docs/parity.md's localize example perturbs


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def references(checkpoint: Path, data: Path, workdir: Path, variants: bool) -> dict[str, Path]:
    """The three recipes and the trt variants, calibrated once (as the demo calibrates: 10 x 8 images)."""
    found = {}
    chosen = VARIANTS if variants else {}
    for name, options in [*((mode, {"int8_mode": mode}) for mode in INT8_MODES), *((n, {"int8_mode": "trt", **o}) for n, o in chosen.items())]:
        folder = workdir / "calib" / name
        calibrated = next(folder.glob("*_calib.pth"), None)
        if calibrated is None:
            log(f"calibrating {name}")
            calibrated = calibrate_checkpoint(None, None, checkpoint, data, False, CalibrationRequest(**options), folder, DistContext(), workers=0).checkpoint
        found[name] = Path(calibrated)
    return found


def fp16_export(name: str) -> dict:
    """The FP16 graph of a reference: the TensorRT form where the recipe allows it."""
    return {"target": "tensorrt"} if name == "trt" or name in VARIANTS else {"precision": "fp16"}


def engines(checkpoints: dict[str, Path], workdir: Path) -> list[dict]:
    """Graphs and engines (built once, kept in ``workdir``): one dict per engine."""
    built = []
    for name, checkpoint in checkpoints.items():
        for precision in ("fp32", "fp16"):
            graph = workdir / "export" / f"{name}_{precision}.onnx"
            if not graph.is_file():
                log(f"exporting {graph.name}")
                export_checkpoint(checkpoint, graph, **({} if precision == "fp32" else fp16_export(name)))
            graphs = [(graph, False)]
            if name == "trt":
                broken = workdir / "export" / f"{name}_{precision}_fault.onnx"
                if not broken.is_file():
                    perturb_scale(graph, broken, *FAULT)
                graphs.append((broken, True))
            for source, fault in graphs:
                runtimes = RUNTIMES if name in INT8_MODES and not fault else RUNTIMES[:1]
                for backend, mode in runtimes:
                    suffix = f"ort-{mode}.onnx" if backend == "onnxruntime" else "openvino.blob"
                    engine = workdir / "engines" / f"{source.stem}.{suffix}"
                    if not engine.is_file():
                        log(f"building {engine.name}")
                        module = backend_module(backend)
                        module.build(source, engine, mode) if backend == "onnxruntime" else module.build(source, engine)
                    built.append({"engine": engine, "graph": source, "calibration": name, "precision": precision, "backend": backend,
                                  "mode": mode, "fault": fault})
    return built


def val_images(checkpoint: Path, data: Path, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole val split, normalised as bench normalises it (uint8 -> device transform), once."""
    config = open_model(checkpoint=checkpoint).model.swin_trt_config
    dataset = build_dataset(data, "val", uint8_eval_transform(config.data), False, config.num_classes)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    pixels, targets = zip(*(dataset[i] for i in range(count)))
    return Normalize(config.data)(torch.stack(pixels)), torch.as_tensor(targets)


def cached_logits(path: Path, run, images: torch.Tensor, batch: int) -> tuple[np.ndarray, float]:
    """``run(batch) -> logits`` over ``images`` once; the logits and the seconds spent in ``run``
    (kept as ``<path less its suffix>.npy`` and ``.json`` so a second invocation scores without
    running; the caller names each path uniquely after that)."""
    if path.with_suffix(".npy").is_file():
        return np.load(path.with_suffix(".npy")), json.loads(path.with_suffix(".json").read_text())["seconds"]
    outputs, seconds = [], 0.0
    with torch.no_grad(), exact_float32():
        for chunk in images.split(batch):
            start = time.perf_counter()
            outputs.append(torch.as_tensor(run(chunk)).float().cpu().numpy())
            seconds += time.perf_counter() - start
    logits = np.concatenate(outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".npy"), logits)
    path.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "images": len(images)}))
    return logits, seconds


def reference_logits(name: str, checkpoint: Path, images: torch.Tensor, batch: int, cache: Path) -> dict[str, np.ndarray]:
    """FP32 (the reference's own FP weights) and fake-quant logits, with float32 scales and with
    the float16-rounded scales an FP16 graph holds (bench rounds the reference's scales so)."""
    loaded = open_model(checkpoint=checkpoint)
    found = {"fp32": cached_logits(cache / f"{name}_fp32", loaded.fp_model().eval(), images, batch)[0]}
    for family, dtype in (("fp32", None), ("fp16", torch.float16)):
        set_scale_dtype(loaded.model, dtype)
        found[f"fakequant_{family}"] = cached_logits(cache / f"{name}_fakequant_{family}", loaded.model.eval(), images, batch)[0]
    return found


def pairings_of(calibration: str, calibrations: list[str]) -> list[str]:
    """Recipes against every recipe (and trt against every variant); a variant against itself and trt."""
    if calibration in VARIANTS:
        return [calibration, "trt"]
    return [*INT8_MODES] + ([name for name in calibrations if name in VARIANTS] if calibration == "trt" else [])


def summarize(rows: list[dict]) -> dict:
    """Per bound family: the margin the defaults rest on, and how the defaults did."""
    summary = {}
    for family in sorted({row["family"] for row in rows}):
        these = [row for row in rows if row["family"] == family]
        right = [row for row in these if row["pairing"] == "right"]
        wrong = [row for row in these if row["pairing"] == "wrong"]
        faults = [row for row in these if row["pairing"] == "fault"]
        largest_right_p95, smallest_wrong_median = max(row["rel_error_p95"] for row in right), min(row["rel_error_median"] for row in wrong)
        summary[family] = {
            "bounds": BY_PRECISION[family].as_json(),
            "right": len(right), "wrong": len(wrong), "faults": len(faults),
            "right_max_rel_error_median": max(row["rel_error_median"] for row in right), "right_max_rel_error_p95": largest_right_p95,
            "wrong_min_rel_error_median": smallest_wrong_median, "wrong_min_rel_error_p95": min(row["rel_error_p95"] for row in wrong),
            "margin_wrong_median_over_right_p95": smallest_wrong_median / largest_right_p95 if largest_right_p95 else float("inf"),
            "separated_by_r": largest_right_p95 < smallest_wrong_median,
            "right_min_agreement": min(row["agreement"] for row in right), "wrong_min_agreement": min(row["agreement"] for row in wrong),
            "right_passed": sum(row["passed"] is True for row in right),
            "right_failed_bounds": sorted({name for row in right for name in row["failed"]}),
            "wrong_and_faults_failed": sum(row["passed"] is False for row in wrong + faults),
            "wrong_and_faults_failing_on_logits": sum(bool(set(row["failed"]) - {"max_graph_mismatches"}) for row in wrong + faults),
            "wrong_and_faults_failing_graph_check": sum("max_graph_mismatches" in row["failed"] for row in wrong + faults),
            "by_runtime": {f"{backend} {mode or ''}".strip(): {
                "right_max_rel_error_p95": max((row["rel_error_p95"] for row in right if (row["backend"], row["mode"]) == (backend, mode)), default=None),
                "wrong_min_rel_error_median": min((row["rel_error_median"] for row in wrong if (row["backend"], row["mode"]) == (backend, mode)), default=None)}
                for backend, mode in RUNTIMES},
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained (FP) checkpoint, e.g. /work/data/tiny/swin_tiny_fashion.pth")
    parser.add_argument("--data-path", type=Path, required=True, help="its dataset (the val split is scored)")
    parser.add_argument("--workdir", type=Path, required=True, help="calibrations, graphs, engines and cached logits (kept between runs)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--no-variants", action="store_true", help="the three recipes only (no max / entropy / seed-1 trt calibrations)")
    parser.add_argument("--max-images", type=int, default=None, help="score the first N val images only (a quick run; not for the results file)")
    parser.add_argument("--output", type=Path, default=None, help="results file (default benchmarks/results/parity_pairings_<model>.json)")
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    checkpoints = references(args.checkpoint, args.data_path, args.workdir, not args.no_variants)
    built = engines(checkpoints, args.workdir)
    images, targets = val_images(checkpoints["trt"], args.data_path, args.max_images)
    log(f"{len(images)} val images; {len(checkpoints)} references, {len(built)} engines")
    cache = args.workdir / f"logits_{len(images)}"
    logits = {}
    for name, checkpoint in checkpoints.items():
        log(f"reference {name}")
        logits[name] = reference_logits(name, checkpoint, images, args.batch_size, cache)
    rows, graph_checks = [], {}
    for item in built:
        engine = open_engine(item["engine"])
        log(f"engine {item['engine'].name}")
        # cached as 1_fp32.ort-exact.npy for 1_fp32.ort-exact.onnx
        engine_logits, seconds = cached_logits(cache / item["engine"].name, lambda chunk, e=engine: e.run(chunk), images, args.batch_size)
        graph = read_model(item["graph"])
        family = bound_family(*tensor_types(graph))
        for reference in [item["calibration"]] if item["fault"] else pairings_of(item["calibration"], list(checkpoints)):
            report = score(logits[reference]["fp32"], logits[reference][f"fakequant_{family}"], engine_logits, targets, seconds)
            key = (item["graph"], reference)  # the engines of one graph share its graph check
            if key not in graph_checks:
                graph_checks[key] = check_graph(graph, read_sidecar(item["graph"]), checkpoints[reference])
            differences = graph_checks[key]
            verdict = judge(report, default_bounds(family), differences)
            provenance = trace(item["engine"], checkpoints[reference])
            rows.append({
                "engine": item["engine"].name, "calibration": item["calibration"], "precision": item["precision"], "family": family,
                "backend": item["backend"], "mode": item["mode"], "reference": reference,
                "pairing": "fault" if item["fault"] else "right" if reference == item["calibration"] else "wrong",
                "provenance": provenance.label.split(":")[0], "images": report.images,
                "rel_error_median": report.rel_error_median, "rel_error_p95": report.rel_error_p95,
                "rel_error_p99": quantile(report.rel_errors, 0.99), "rel_error_max": float(report.rel_errors.max(initial=0.0)),
                "agreement": report.agreement, "reference_agreement": report.reference_agreement, "top1_drop": report.top1_drop,
                "fakequant_top1": report.fakequant_top1, "engine_top1": report.engine_top1,
                "max_abs_diff": report.max_abs_diff, "mean_abs_diff": report.mean_abs_diff, "engine_images_per_s": report.images_per_s,
                "graph_mismatches": len(differences), "first_graph_mismatch": differences[0] if differences else None,
                "passed": verdict.passed, "failed": list(verdict.failed),
            })
    summary = summarize(rows)
    cpu = read_cpu()
    model = open_model(checkpoint=args.checkpoint).model.swin_trt_config.name
    print_table(f"parity pairings, {model} on {len(images)} val images of {args.data_path} ({cpu.describe()}; default gate by bound family)",
                ("engine", "family", "reference", "pairing", "r median", "r p95", "agreement %", "top-1 drop", "graph diffs", "gate"),
                [(row["engine"], row["family"], row["reference"], row["pairing"], f"{row['rel_error_median']:.3g}", f"{row['rel_error_p95']:.3g}",
                  f"{row['agreement']:.2f}", f"{row['top1_drop']:.2f}", row["graph_mismatches"], "passed" if row["passed"] else "FAILED " + ",".join(row["failed"]))
                 for row in rows])
    print(json.dumps(summary, indent=2))
    output = args.output or RESULTS / f"parity_pairings_{model}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "model": model, "checkpoint": str(args.checkpoint), "data": str(args.data_path),
        "images": len(images), "fault": {"quantizer": FAULT[0], "scale_factor": FAULT[1]}, "summary": summary, "pairings": rows,
        "cpu": cpu.as_json(), "load_average_before": load_before, "load_average_after": os.getloadavg(), "seconds": time.time() - started,
        "versions": {**package_versions(), **_openvino_version()},
    }, indent=2) + "\n")
    log(f"saved {output}")


def _openvino_version() -> dict[str, str]:
    try:
        import openvino
    except ImportError:
        return {}
    return {"openvino": openvino.__version__}


if __name__ == "__main__":
    main()
