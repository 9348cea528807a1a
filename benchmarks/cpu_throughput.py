"""CPU throughput of Swin-T 224 in every engine swin-trt builds, beside the FP32 runtimes a user would pick instead.

One run measures torch FP32, onnxruntime FP32, OpenVINO FP32 and, for each recipe and precision
(weights/activations bits), the onnxruntime INT8 engines (exact and fast, built by
``swin_trt.runtimes.onnxruntime.build``; ``auto`` is whichever of them ``choose_mode`` picks on
this CPU) and OpenVINO INT8 on the same Q/DQ graph; for the first recipe and precision also
the exporter's graph without swin-trt's fusion passes, the graph in timm's token layout
(``--layout timm``) and each mode's engine without swin-trt's engine passes (the source optimized by
onnxruntime in memory), to measure what each gains. Random weights, amax from a short
calibration on random images (speed does not depend on the values). Each engine is also put
against its PyTorch fake-quant model with the parity gate's own criterion
(:func:`swin_trt.parity.compare.relative_errors`, median and 95th percentile against the default
bounds of :class:`swin_trt.parity.gate.Bounds`).

Memory: freed blocks stay in the process (``swin_trt.allocator``), as in swin-trt's commands; without it the
torch runner page-faults its activations in again at every call.

Timing (``timing.time_by_duration``): images/s at each batch size with a fixed thread count; each
repeat calls a runner until --min-seconds have passed, the runners take turns within each repeat,
so machine noise hits them alike; medians of the repeats, with the slowest and fastest repeat kept;
ratios are to torch FP32 (and to the best FP32 peer) in the same run. Results are kept per CPU kind:
``benchmarks/results/cpu_throughput/<cpu-kind>.json`` (model, ISA flags, load average, versions).

    python benchmarks/cpu_throughput.py [--batches 1 8 --threads 2 --repeats 5 --min-seconds 2 --recipes trt 1 --precisions 8:8 7:8 7:7]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from machine import cpu_kind
from timing import time_by_duration

try:  # a benchmark-only dependency: pip install -e .[bench]
    import openvino
except ImportError:
    openvino = None

from swin_trt.allocator import keep_freed_memory
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.distributed import DistContext
from swin_trt.io import sidecar_path
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config
from swin_trt.onnx.export import export_onnx, save_onnx, sidecar
from swin_trt.parity.compare import quantile, relative_errors
from swin_trt.parity.gate import Bounds
from swin_trt.quantization.calibrate import collect_statistics, load_calib_amax
from swin_trt.quantization.model import quantize_model, set_precision
from swin_trt.quantization.recipes import get_recipe
from swin_trt.runtimes.onnxruntime import build, fast_source, resolve_mode, session_options
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_throughput"
Runner = Callable[[np.ndarray], np.ndarray]


def openvino_runner(path: Path, threads: int) -> Runner:
    """OpenVINO's CPU plugin on an ONNX graph, FP32 outside Q/DQ (the precision hint pinned: on
    CPUs with bf16 or AMX its default would run the non-quantized layers in bf16)."""
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                                                          "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda batch: request.infer({0: batch})[compiled.output(0)].copy()


def ort_runner(path: Path, mode: str, threads: int) -> Runner:
    session = ort.InferenceSession(str(path), session_options(mode, threads), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"images": batch})[0]


def profile_by_op(path: Path, mode: str, batch: np.ndarray, threads: int, runs: int = 3) -> dict[str, float]:
    """onnxruntime's own profiler: % of operator time by operator type."""
    options = session_options(mode, threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, {"images": batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event.get("dur", 0)
    total = sum(by_op.values()) or 1.0
    return {op: round(100.0 * t / total, 2) for op, t in sorted(by_op.items(), key=lambda item: -item[1])}


def parity(logits: np.ndarray, fakequant: np.ndarray, fp32: np.ndarray) -> dict[str, float]:
    """The gate's criterion for one engine: r = ||engine - fq|| / ||fq - fp32|| per image."""
    errors = relative_errors(logits, fakequant, fp32)
    bounds = Bounds()
    median, p95 = quantile(errors, 0.5), quantile(errors, 0.95)
    return {"rel_error_median": median, "rel_error_p95": p95, "max_abs_diff": float(np.abs(logits - fakequant).max()),
            "agreement": float(100.0 * (logits.argmax(1) == fakequant.argmax(1)).mean()),
            "within_default_bounds": bool(median <= bounds.max_rel_error and p95 <= bounds.max_rel_error_p95)}


@dataclasses.dataclass
class Lineup:
    """The runners to time, and for each quantized engine what the result file records of it with its
    parity against its fake-quant model (measured once, when the engine joins)."""

    parity_images: np.ndarray
    fp32_logits: np.ndarray
    runners: dict[str, Runner] = dataclasses.field(default_factory=dict)
    engines: dict[str, dict] = dataclasses.field(default_factory=dict)

    def add_engine(self, name: str, run: Runner, fakequant: np.ndarray, **record) -> None:
        self.runners[name] = run
        self.engines[name] = {**record, "parity": parity(run(self.parity_images), fakequant, self.fp32_logits)}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cpu_throughput_") as folder:
        measure(Path(folder))


def measure(folder: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="repeats per runner and batch; medians are reported, min and max kept")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="each repeat calls its runner until this long has passed (timing by duration)")
    parser.add_argument("--recipes", nargs="+", default=["trt", "1"])
    parser.add_argument("--precisions", nargs="+", default=["8:8", "7:8", "7:7"], help="weight:activation bits")
    parser.add_argument("--parity-images", type=int, default=16)
    parser.add_argument("--no-openvino", action="store_true", help="skip OpenVINO (also skipped when it is not installed)")
    parser.add_argument("--output", type=Path, help=f"result file (default {RESULTS}/<cpu kind>.json)")
    args = parser.parse_args()
    args.no_openvino = args.no_openvino or openvino is None
    allocator = "keep-freed" if keep_freed_memory() else "glibc-default (mallopt unavailable)"  # as swin-trt's commands run
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = read_cpu()
    load_before = os.getloadavg()
    config = get_config(args.model)
    shape = (config.in_chans, config.img_size, config.img_size)
    rng = np.random.default_rng(0)
    parity_images = rng.standard_normal((args.parity_images, *shape), dtype=np.float32)
    fp32 = build_model(config).eval()
    with torch.no_grad():
        fp32_logits = fp32(torch.from_numpy(parity_images)).numpy()

    lineup = Lineup(parity_images, fp32_logits)
    runners, engines = lineup.runners, lineup.engines
    runners["torch FP32"] = lambda batch: fp32(torch.from_numpy(batch))
    fp32_onnx = save_onnx(export_onnx(fp32), folder / "fp32.onnx")
    runners["onnxruntime FP32"] = ort_runner(fp32_onnx, "fast", args.threads)
    if not args.no_openvino:
        runners["OpenVINO FP32"] = openvino_runner(fp32_onnx, args.threads)
    first = True
    for recipe in args.recipes:
        quantized = quantize_model(copy.deepcopy(fp32), get_recipe(recipe)).eval()
        calibration = [(torch.from_numpy(rng.standard_normal((4, *shape), dtype=np.float32)), None) for _ in range(2)]
        histograms, _ = collect_statistics(quantized, calibration, len(calibration), DistContext())
        load_calib_amax(quantized, histograms, "percentile")
        for precision in args.precisions:
            wbits, abits = (int(b) for b in precision.split(":"))
            set_precision(quantized, wbits, abits)
            with torch.no_grad():
                fakequant = quantized(torch.from_numpy(parity_images)).numpy()
            graph = save_onnx(export_onnx(quantized), folder / f"int8_{recipe}_w{wbits}a{abits}.onnx")
            sidecar_path(graph).write_text(json.dumps(sidecar(graph, quantized, None, "fp32")))
            label = f"mode {recipe} W{wbits}A{abits}"
            setting = {"recipe": recipe, "weight_bits": wbits, "activation_bits": abits}
            if first:  # what swin-trt's fusion passes gain: the exporter's graph in plain onnxruntime fast mode
                plain = save_onnx(export_onnx(quantized, fusions=False), folder / "int8_plain.onnx")
                lineup.add_engine(f"onnxruntime INT8 fast, no swin-trt fusions ({label})", ort_runner(plain, "fast", args.threads), fakequant,
                                  **setting, backend="onnxruntime", ort_mode="fast", engine=str(plain))
                timm = save_onnx(export_onnx(quantized, token_layout="timm"), folder / "int8_timm_layout.onnx")  # what the gather layout gains
                sidecar_path(timm).write_text(json.dumps(sidecar(timm, quantized, None, "fp32")))
                for mode in ("exact", "fast"):
                    details = build(timm, folder / f"int8_timm_layout.{mode}.onnx", mode)
                    lineup.add_engine(f"onnxruntime INT8 {mode}, timm layout ({label})", ort_runner(Path(details["engine"]), mode, args.threads),
                                      fakequant, **setting, backend="onnxruntime", ort_mode=mode, engine=details["engine"])
                    # what the engine passes gain: the same source optimized by onnxruntime in memory, where they do not run
                    source = onnx.load(str(graph))
                    source = fast_source(source, resolve_mode(graph, "fast").unsigned) if mode == "fast" else source
                    unpassed = folder / f"int8_no_engine_passes.{mode}.onnx"
                    onnx.save(source, str(unpassed))
                    lineup.add_engine(f"onnxruntime INT8 {mode}, without engine passes ({label})", ort_runner(unpassed, mode, args.threads),
                                      fakequant, **setting, backend="onnxruntime", ort_mode=mode, engine=str(unpassed))
                first = False
            for mode in ("exact", "fast", "auto"):
                details = build(graph, folder / f"{graph.stem}.{mode}.onnx", mode)
                name = f"onnxruntime INT8 {mode} ({label})"
                record = {**setting, "backend": "onnxruntime", "ort_mode": details["ort_mode"], "ort_mode_reason": details["ort_mode_reason"],
                          "engine": details["engine"]}
                if mode == "auto":  # the same engine as the one it chose: its parity and figures are copied below, not measured twice
                    engines[name] = record
                else:
                    lineup.add_engine(name, ort_runner(Path(details["engine"]), details["ort_mode"], args.threads), fakequant, **record)
            if not args.no_openvino:
                lineup.add_engine(f"OpenVINO INT8 ({label})", openvino_runner(graph, args.threads), fakequant, **setting, backend="openvino")
    for name, engine in engines.items():
        if engine.get("ort_mode") and name.startswith("onnxruntime INT8 auto"):
            engine["parity"] = engines[name.replace(" auto ", f" {engine['ort_mode']} ")]["parity"]

    images_per_s: dict[str, dict[str, float]] = {name: {} for name in runners}
    spread: dict[str, dict[str, dict]] = {name: {} for name in runners}
    with torch.no_grad():
        for size in args.batches:
            batch = rng.standard_normal((size, *shape), dtype=np.float32)
            timings = time_by_duration({name: functools.partial(run, batch) for name, run in runners.items()}, args.repeats, args.min_seconds)
            for name, timing in timings.items():
                rate = timing.rate(size)
                images_per_s[name][str(size)] = rate["median"]
                spread[name][str(size)] = {"images_per_s_min": rate["min"], "images_per_s_max": rate["max"], **timing.as_json()}
    for name, engine in engines.items():  # auto: the figures of the engine it chose
        if name not in images_per_s:
            chosen = name.replace(" auto ", f" {engine['ort_mode']} ")
            images_per_s[name], spread[name] = images_per_s[chosen], spread[chosen]
    largest = max(args.batches)
    default = f"onnxruntime INT8 auto (mode {args.recipes[0]} W{args.precisions[0].replace(':', 'A')})"
    profile_batch = rng.standard_normal((largest, *shape), dtype=np.float32)
    # the fast engines and the exact one of the first recipe and precision: where a target is missed, the default engine's
    # own profile (exact on AVX2 without VNNI, fast elsewhere) says why
    profiles = {name: profile_by_op(Path(engines[name]["engine"]), engines[name]["ort_mode"], profile_batch, args.threads)
                for name in engines if name.startswith(("onnxruntime INT8 fast", "onnxruntime INT8 exact"))
                and name.endswith(f"(mode {args.recipes[0]} W{args.precisions[0].replace(':', 'A')})")}

    peers = [name for name in ("onnxruntime FP32", "OpenVINO FP32") if name in images_per_s]
    rows = []
    for name, by_batch in images_per_s.items():
        row = [name]
        for size in args.batches:
            value = by_batch[str(size)]
            best_peer = max(images_per_s[p][str(size)] for p in peers)
            low, high = spread[name][str(size)]["images_per_s_min"], spread[name][str(size)]["images_per_s_max"]
            row += [f"{value:.2f} ({low:.2f}-{high:.2f})", f"{value / images_per_s['torch FP32'][str(size)]:.2f}x", f"{value / best_peer:.2f}x"]
        found = engines.get(name, {}).get("parity")
        row += [f"{found['rel_error_median']:.3g} / {found['rel_error_p95']:.3g}" if found else "-",
                ("yes" if found["within_default_bounds"] else "NO") if found else "-"]
        rows.append(row)
    columns = ["runtime"] + [c for size in args.batches for c in (f"img/s b{size} (min-max)", f"vs torch b{size}", f"vs best FP32 peer b{size}")]
    print_table(f"{args.model} on {args.threads} threads, {cpu.describe()} (median of {args.repeats} repeats of >= {args.min_seconds:g} s)", columns + ["r median / p95", "gate"], rows)
    for name, profile in profiles.items():
        print_table(f"where the time goes: {name}, batch {largest} (share of operator time, %)", ("operator", "%"),
                    [(op, f"{share:.1f}") for op, share in list(profile.items())[:12]])

    output = args.output or RESULTS / f"{cpu_kind(cpu)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "model": args.model, "threads": args.threads, "repeats": args.repeats, "min_seconds": args.min_seconds, "batches": args.batches,
        "recipes": args.recipes, "precisions": args.precisions, "parity_images": args.parity_images,
        "default_engine": default, "fp32_peers": peers,
        "images_per_s": images_per_s, "timing": spread, "engines": {name: {k: v for k, v in e.items() if k != "engine"} for name, e in engines.items()},
        "ort_op_time_share": {f"{name} b{largest}": profile for name, profile in profiles.items()},
        "cpu": cpu.as_json(), "allocator": allocator, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "versions": {**package_versions(), "openvino": openvino.__version__ if openvino else None},
    }, indent=2) + "\n")
    print(f"saved {output}")


if __name__ == "__main__":
    main()
