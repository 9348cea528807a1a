"""Every GPU check in one run (``benchmarks/gpu_check.sh`` runs this; see there for how).

Built to fit 8 minutes on one data-centre GPU: the checks run in this one process (swin-trt's CLI
called in-process, no interpreter start per step; only torchrun, the CUDA baselines and the
parity-gate script start processes of their own); the micro model is trained and calibrated
once and reused; Swin-T is calibrated and exported once (INT8 and FP16 TensorRT graphs) for
every check that uses it; parity engines get the narrow profile they need (batch 1 to the gate's
batch), only the throughput engines the 1-128 sweep; every TensorRT build reads and extends one
timing cache (kept between runs). Each step prints its seconds.

Ends with a table of every check: passed, failed, or skipped with the reason. Exit status: 1 when
a check failed; 3 when a check was skipped (no CUDA GPU, TensorRT not importable), unless only
TensorRT checks were skipped and --cuda-only was given; 0 when everything ran and passed. Every
figure goes to ``benchmarks/results/gpu/<gpu name>.json`` with the GPU name, driver, CUDA,
TensorRT and torch versions; each check's output to ``<workdir>/logs/<check>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from machine import machine

from swin_trt.runtimes.tensorrt import FP8_MIN_CAPABILITY

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "gpu"
MICRO = "swin_micro"
SWIN_T = "swin_tiny_patch4_window7_224"
GATE_BATCH = 64  # the parity engines' profile: batch 1 to this (the gate's --batch-size)
SWEEP_BATCHES = [1, 8, 32, 128]  # the throughput engines' profile: 1 to 128
AMAX_TOLERANCE = 1e-3  # CUDA vs CPU calibration, both in exact float32 (swin_trt/float32.py)


class Skip(Exception):
    """A check that cannot run here: the reason."""


@dataclass
class Check:
    name: str
    run: Callable[[Run], dict | None]
    on_device: bool = False  # runs on --device (a GPU unless --device cpu)
    needs_cuda: bool = False  # a GPU whatever --device says (CUDA baselines, TensorRT)
    needs_tensorrt: bool = False
    after: tuple[str, ...] = ()  # checks whose outputs this one uses


@dataclass
class Outcome:
    check: str
    status: str  # passed / failed / skipped
    seconds: float
    note: str = ""
    figures: dict = field(default_factory=dict)


class Run:
    """What the checks share: the options, the work folder, and the paths earlier checks made."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = args.device
        self.work = args.workdir
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.digits = self.work / "digits"
        self.fp = self.work / "micro" / f"{MICRO}.pth"
        self.timing_cache = args.timing_cache
        self.paths: dict[str, Path] = {}

    def cli(self, *argv: object) -> None:
        """``swin-trt ARGV`` in this process; a non-zero exit fails the check with its last line."""
        from swin_trt.cli import main as cli_main

        try:
            code = cli_main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
        if code:
            raise RuntimeError(f"swin-trt {argv[0]} exited with {code}")

    def process(self, *argv: object, env: dict | None = None) -> None:
        """A command in its own process (torchrun, the CUDA baselines, the parity-gate script)."""
        done = subprocess.run([str(a) for a in argv], env={**os.environ, **(env or {})}, stdout=sys.stdout, stderr=sys.stderr)
        if done.returncode:
            raise RuntimeError(f"{Path(str(argv[0])).name} {' '.join(str(a) for a in argv[1:3])} ... exited with {done.returncode}")


def environment() -> dict:
    """GPU name, driver, CUDA, TensorRT and torch versions (None where absent), and the machine."""
    try:
        import tensorrt

        trt = tensorrt.__version__
    except ImportError:
        trt = None
    driver = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        driver = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    where = machine()
    return {"gpu": where.get("gpu"), "driver": driver, "cuda": torch.version.cuda, "tensorrt": trt, "torch": torch.__version__, "machine": where,
            "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0}


def tensorrt_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as error:
        return f"TensorRT does not import ({error})"
    return None


# ---------------------------------------------------------------------------------------------
# the checks


def data(run: Run) -> dict:
    run.cli("data", "digits", "--output", run.digits)
    return {}


def train(run: Run) -> dict:
    out = run.work / "train.json"
    run.cli("train", "--model", MICRO, "--data-path", run.digits, "--output", run.fp.parent, "--epochs", 12, "--device", run.device, "--json", out)
    return json.loads(out.read_text())


def _calibrate(run: Run, device: str, name: str, *extra: object) -> Path:
    out = run.work / name
    run.cli("calibrate", "--resume", run.fp, "--data-path", run.digits, "--int8-mode", "trt", "--num-calib-batch", 4, "--calib-batchsz", 16,
            "--calib-output-path", out, "--device", device, "--skip-eval", *extra, "--json", out / "calibrate.json")
    run.cli("quant-summary", "--resume", out / f"{MICRO}_calib.pth", "--json", out / "amax.json")
    return out / f"{MICRO}_calib.pth"


def calibrate(run: Run) -> dict:
    run.paths["calibrated"] = _calibrate(run, run.device, f"calib_{run.device}")
    return {}


def calibrate_cpu(run: Run) -> dict:
    run.paths["calibrated_cpu"] = _calibrate(run, "cpu", "calib_cpu_reference")
    return {}


def calibrate_device_vs_cpu(run: Run) -> dict:
    """The same images and seed calibrated on the device and on the CPU give the same amax."""
    import numpy as np

    device, cpu = (json.loads((p.parent / "amax.json").read_text()) for p in (run.paths["calibrated"], run.paths["calibrated_cpu"]))
    worst = max(float(np.max(np.abs(np.subtract(device[k], cpu[k])) / np.maximum(np.abs(cpu[k]), 1e-12))) for k in cpu if cpu[k] is not None)
    print(f"largest relative amax difference {run.device} vs CPU: {worst:.2e} over {len(cpu)} quantizers")
    if worst >= AMAX_TOLERANCE:
        raise RuntimeError(f"amax differ by {worst:.2e} (relative) between {run.device} and CPU calibration, more than {AMAX_TOLERANCE}")
    return {"largest_relative_amax_difference": worst, "quantizers": len(cpu)}


def eval_fakequant(run: Run) -> dict:
    out = run.work / "eval_fakequant.json"
    run.cli("eval", "--resume", run.paths["calibrated"], "--compare-fp", "--data-path", run.digits, "--device", run.device, "--json", out)
    return json.loads(out.read_text())


def cuda_eval(run: Run) -> dict:
    out = run.work / "cuda_eval.json"
    run.process(sys.executable, REPO / "benchmarks" / "cuda_eval.py", "--resume", run.fp, "--calibrated", run.paths["calibrated"],
                "--data-path", run.digits, "--output", out)
    return json.loads(out.read_text())["results"]


def _torchrun(run: Run, *argv: object) -> None:
    procs = 2 if torch.cuda.device_count() >= 2 else 1
    run.process(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", procs, "-m", "swin_trt", *argv)


def torchrun_eval(run: Run) -> dict:
    out = run.work / "eval_torchrun.json"
    _torchrun(run, "eval", "--resume", run.fp, "--data-path", run.digits, "--device", run.device, "--json", out)
    return json.loads(out.read_text())


def torchrun_calibrate(run: Run) -> dict:
    _torchrun(run, "calibrate", "--resume", run.fp, "--data-path", run.digits, "--int8-mode", "trt", "--num-calib-batch", 2, "--calib-batchsz", 16,
              "--calib-output-path", run.work / "calib_torchrun", "--device", run.device, "--skip-eval")
    return {}


def cuda_evaluator(run: Run) -> dict:
    """One onnxruntime engine gated with CPU references and with references on the device."""
    graph, engine = run.work / "evaluator.onnx", run.work / "evaluator.ort.onnx"
    run.cli("export", "--resume", run.paths["calibrated"], "--output", graph)
    run.cli("build", "--onnx", graph, "--output", engine, "--ort-mode", "exact")
    figures = {}
    for device in dict.fromkeys(("cpu", run.device)):
        out = run.work / f"bench_references_{device}.json"
        run.cli("bench", "--reference", run.paths["calibrated"], "--engine", engine, "--data-path", run.digits, "--device", device, "--json", out)
        figures[device] = json.loads(out.read_text())
    return figures


def swin_t_graphs(run: Run) -> dict:
    """Swin-T (random weights) calibrated on the device and exported once, INT8 and FP16, for the
    TensorRT checks that use it."""
    from tensorrt_throughput import swin_graphs

    work = run.work / "swin_t"
    work.mkdir(exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and run.device == "cuda" else "cpu"  # a preparation: it runs anywhere
    fp8 = torch.cuda.is_available() and torch.cuda.get_device_capability() >= FP8_MIN_CAPABILITY
    graphs = swin_graphs(SWIN_T, run.digits, work, device, fp8=fp8)
    run.paths.update({f"swin_t_{name}": Path(path) for name, path in graphs.items()})
    return {name: str(path) for name, path in graphs.items()}


def _bench_figures(bench: dict) -> dict:
    keys = ("passed", "rel_error_median", "rel_error_p95", "agreement", "fakequant_top1", "engine_top1", "graph_mismatches", "engine_precision")
    return {k: bench.get(k) for k in keys}


def tensorrt_parity_gate(run: Run) -> dict:
    """scripts/parity-gate.sh --backend tensorrt (the GPU CI job): the right pairing, its r."""
    gate = run.work / "gate"
    run.process(REPO / "scripts" / "parity-gate.sh", "--backend", "tensorrt", "--checkpoint", run.fp, "--data-path", run.digits, "--workdir", gate,
                "--batch-size", GATE_BATCH, "--timing-cache", run.timing_cache, env={"SWIN_TRT": f"{sys.executable} -m swin_trt"})
    run.paths["gate"] = gate
    return _bench_figures(json.loads((gate / "bench.json").read_text()))


def tensorrt_wrong_pairing(run: Run) -> dict:
    """Another calibration's engine (max calibrator) against the gate's reference: the default
    gate must fail it. Its r beside the right pairing's settles the FP16 bounds (docs/parity.md)."""
    calibrated = _calibrate(run, run.device, "calib_max", "--calibrator", "max")
    graph, engine, out = run.work / "wrong.onnx", run.work / "wrong.plan", run.work / "bench_wrong.json"
    run.cli("export", "--resume", calibrated, "--target", "tensorrt", "--output", graph)
    run.cli("build", "--backend", "tensorrt", "--onnx", graph, "--output", engine, "--min-batch", 1, "--opt-batch", GATE_BATCH, "--max-batch", GATE_BATCH,
            "--timing-cache", run.timing_cache)
    from swin_trt.cli import main as cli_main

    reference = json.loads((run.paths["gate"] / "calibrate.json").read_text())["checkpoint"]
    code = cli_main(["bench", "--reference", reference, "--engine", str(engine), "--data-path", str(run.digits), "--batch-size", str(GATE_BATCH),
                     "--allow-foreign-engine", "--json", str(out)])
    figures = _bench_figures(json.loads(out.read_text()))
    if code == 0:
        raise RuntimeError("the default gate passed another calibration's engine")
    return figures


def tensorrt_localize(run: Run) -> dict:
    gate, out = run.paths["gate"], run.work / "tensorrt_localize.json"
    reference = json.loads((gate / "calibrate.json").read_text())["checkpoint"]
    run.cli("bench", "--reference", reference, "--engine", gate / "engine.plan", "--data-path", run.digits, "--max-batches", 1, "--no-gate",
            "--localize", "--localize-plot", run.work / "tensorrt_localize.png", "--json", out)
    return {"localize_first_outside": json.loads(out.read_text()).get("localize_first_outside")}


def tensorrt_inspect(run: Run) -> dict:
    out = run.work / "tensorrt_layers.json"
    run.cli("inspect", run.paths["gate"] / "engine.plan", "--layers", "--json", out)
    return json.loads(out.read_text())


def tensorrt_fp8(run: Run) -> dict:
    """An FP8 (E4M3) engine of the micro model, gated against its own reference: the FP8 path end
    to end (calibrate --format fp8, the TensorRT-target export, a strongly typed build, bench).
    Skipped below compute capability 8.9, where build refuses FP8 (no FP8 tensor cores)."""
    capability = torch.cuda.get_device_capability()
    if capability < FP8_MIN_CAPABILITY:
        raise Skip(f"compute capability {capability[0]}.{capability[1]}: FP8 engines need {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}+")
    calibrated = _calibrate(run, run.device, "calib_fp8", "--format", "fp8", "--calibrator", "max")
    graph, engine, out = run.work / "fp8.onnx", run.work / "fp8.plan", run.work / "bench_fp8.json"
    run.cli("export", "--resume", calibrated, "--target", "tensorrt", "--output", graph)
    run.cli("build", "--backend", "tensorrt", "--onnx", graph, "--output", engine, "--min-batch", 1, "--opt-batch", GATE_BATCH, "--max-batch", GATE_BATCH,
            "--timing-cache", run.timing_cache)
    run.cli("inspect", engine, "--layers", "--json", run.work / "fp8_layers.json")
    run.cli("bench", "--reference", calibrated, "--engine", engine, "--data-path", run.digits, "--batch-size", GATE_BATCH, "--json", out)
    layers = json.loads((run.work / "fp8_layers.json").read_text())
    return {**_bench_figures(json.loads(out.read_text())), "gemm_fp8": layers.get("gemm_fp8"), "attention_fp8": layers.get("attention_fp8")}


def tensorrt_throughput(run: Run) -> dict:
    """Swin-T INT8 (and FP8 on 8.9+) vs FP16 engines (the graphs of swin_t_graphs) over batch 1, 8, 32, 128."""
    from tensorrt_throughput import build_engines, measure

    graphs = {name: run.paths[f"swin_t_{name}"] for name in ("INT8", "FP8", "FP16") if f"swin_t_{name}" in run.paths}
    start = time.perf_counter()
    engines = build_engines(graphs, run.work / "swin_t", SWEEP_BATCHES, run.timing_cache)
    built = time.perf_counter() - start
    return {"build_seconds": built, **measure(engines, SWEEP_BATCHES, warmup=20, iters=100)}


CHECKS = (
    Check("data", data),
    Check("train", train, on_device=True, after=("data",)),
    Check("calibrate", calibrate, on_device=True, after=("train",)),
    Check("calibrate_cpu", calibrate_cpu, after=("train",)),
    Check("calibrate_device_vs_cpu", calibrate_device_vs_cpu, after=("calibrate", "calibrate_cpu")),
    Check("eval", eval_fakequant, on_device=True, after=("calibrate",)),
    Check("cuda_eval", cuda_eval, needs_cuda=True, after=("calibrate",)),
    Check("torchrun_eval", torchrun_eval, on_device=True, after=("train",)),
    Check("torchrun_calibrate", torchrun_calibrate, on_device=True, after=("train",)),
    Check("cuda_evaluator", cuda_evaluator, on_device=True, after=("calibrate",)),
    Check("swin_t_graphs", swin_t_graphs, after=("data",)),
    Check("tensorrt_parity_gate", tensorrt_parity_gate, needs_cuda=True, needs_tensorrt=True, after=("train",)),
    Check("tensorrt_wrong_pairing", tensorrt_wrong_pairing, needs_cuda=True, needs_tensorrt=True, after=("tensorrt_parity_gate",)),
    Check("tensorrt_localize", tensorrt_localize, needs_cuda=True, needs_tensorrt=True, after=("tensorrt_parity_gate",)),
    Check("tensorrt_inspect", tensorrt_inspect, needs_cuda=True, needs_tensorrt=True, after=("tensorrt_parity_gate",)),
    Check("tensorrt_fp8", tensorrt_fp8, needs_cuda=True, needs_tensorrt=True, after=("train",)),
    Check("tensorrt_throughput", tensorrt_throughput, needs_cuda=True, needs_tensorrt=True, after=("swin_t_graphs",)),
)


def why_skipped(check: Check, run: Run, trt_missing: str | None, outcomes: dict[str, Outcome]) -> str | None:
    if check.needs_tensorrt and run.args.cuda_only:
        return "--cuda-only"
    if (check.needs_cuda or (check.on_device and run.device == "cuda")) and not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    if check.needs_cuda and run.device == "cpu":
        return "needs CUDA (--device cpu)"
    if check.needs_tensorrt and trt_missing:
        return trt_missing
    blocked = [name for name in check.after if outcomes[name].status != "passed"]
    return f"needs {', '.join(f'{n} ({outcomes[n].status})' for n in blocked)}" if blocked else None


def run_check(check: Check, run: Run) -> Outcome:
    log = run.logs / f"{check.name}.log"
    start = time.perf_counter()
    with open(log, "w") as stream, contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        try:
            figures = check.run(run) or {}
            status, note = "passed", ""
        except Skip as reason:  # cannot run on this machine: said, and counted as skipped (exit 3)
            figures, status, note = {}, "skipped", str(reason)
        except Exception as error:  # a failed check is reported and the others still run
            traceback.print_exc()
            figures, status, note = {}, "failed", str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return Outcome(check.name, status, time.perf_counter() - start, note, figures)


def exit_status(outcomes: list[Outcome], cuda_only: bool) -> int:
    if any(o.status == "failed" for o in outcomes):
        return 1
    if any(o.status == "skipped" and not (cuda_only and o.note == "--cuda-only") for o in outcomes):
        return 3
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuda-only", action="store_true", help="leave out the TensorRT checks (their absence then does not fail the run)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: run every check that does not need CUDA itself on the CPU (a dry run that times the plumbing)")
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--timing-cache", type=Path, default=Path.home() / ".cache" / "swin-trt" / "gpu_check.timing.cache",
                        help="TensorRT timing cache, read and extended by every build (default ~/.cache/swin-trt/gpu_check.timing.cache)")
    parser.add_argument("--output", type=Path, default=None, help="results file (default benchmarks/results/gpu/<gpu name>.json)")
    args = parser.parse_args()
    if args.workdir is None:
        import tempfile

        args.workdir = Path(tempfile.mkdtemp(prefix="gpu_check."))
    args.timing_cache.parent.mkdir(parents=True, exist_ok=True)
    run = Run(args)
    trt_missing = tensorrt_missing()
    env = environment()
    print(f"gpu_check: {env['gpu'] or 'no GPU'}, driver {env['driver']}, CUDA {env['cuda']}, TensorRT {env['tensorrt']}, torch {env['torch']}; "
          f"work in {args.workdir}", flush=True)
    outcomes: dict[str, Outcome] = {}
    total = time.perf_counter()
    for check in CHECKS:
        reason = why_skipped(check, run, trt_missing, outcomes)
        outcome = Outcome(check.name, "skipped", 0.0, reason) if reason else run_check(check, run)
        outcomes[check.name] = outcome
        print(f"== {outcome.check}: {outcome.status} ({outcome.seconds:.1f} s){' - ' + outcome.note if outcome.note else ''}", flush=True)
        if outcome.status == "failed":
            print("   " + "\n   ".join((run.logs / f"{check.name}.log").read_text().strip().splitlines()[-5:]), flush=True)
    seconds = time.perf_counter() - total
    rows = list(outcomes.values())
    width = max(len(o.check) for o in rows)
    print(f"\n{'check':<{width}}  {'status':<7}  {'seconds':>7}  note")
    for o in rows:
        print(f"{o.check:<{width}}  {o.status:<7}  {o.seconds:>7.1f}  {o.note}")
    counts = {s: sum(o.status == s for o in rows) for s in ("passed", "failed", "skipped")}
    print(f"{len(rows)} checks: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped; {seconds:.1f} s in all")
    status = exit_status(rows, args.cuda_only)
    output = args.output or RESULTS / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', env['gpu'] or 'no-gpu')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    fp16_bounds = {"right": outcomes["tensorrt_parity_gate"].figures or None, "wrong": outcomes["tensorrt_wrong_pairing"].figures or None}
    output.write_text(json.dumps({**env, "device": args.device, "cuda_only": args.cuda_only, "exit_status": status, "seconds": seconds,
                                  "checks": [{"check": o.check, "status": o.status, "seconds": o.seconds, "note": o.note} for o in rows],
                                  "figures": {o.check: o.figures for o in rows if o.figures}, "fp16_pairings_r": fp16_bounds,
                                  "load_average": os.getloadavg()}, indent=2, default=str) + "\n")
    print(f"saved {output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
