"""Attacks on the parity gate, each through the real CLI: what `swin-trt bench` (and `build`,
`inspect`) answers when an engine, a graph or a sidecar is not what it claims to be.

One trained checkpoint calibrated (trt recipe), exported and built (onnxruntime exact) as a user
would; then, each in its own folder under ``--workdir``:
1. the genuine engine (the control): exit 0, gate passed;
2. another engine's bytes (a max-calibrated model's) under the genuine engine's sidecar: refused,
   exit 2 in one line, also with --allow-foreign-engine;
3. an ``fp16`` claim on the FP32 graph, in the graph's sidecar and in the engine's: refused, exit 2;
4. one tensor element edited in the graph (a bias, a LayerNorm gamma, a Q scale, a zero point, a
   position-bias entry), its sidecar rewritten for the new bytes and an engine rebuilt from it (a
   consistent provenance chain): exit 1, the graph check naming the tensor;
5. a graph and an engine with the same stem in one folder (base.onnx, base.ort-exact): four files,
   bench passes; ``build --output base`` is refused;
6. a corrupt (non-ONNX) file given to build, inspect and bench --onnx: one line, exit 2.
Every bench runs on --max-batches 2 (128 val images) with --workers 0 and writes --json. The CLI
runs in this process (``swin_trt.cli.main``), so the gate's fresh export of the reference is
traced once and reused from the export cache.

    python benchmarks/gate_attacks.py --checkpoint benchmarks/models/swin_micro.pth --data-path DIGITS --workdir /tmp/attacks  # DIGITS: swin-trt data digits --output DIGITS

Prints one line per attack (attack | expected | exit status | first line of stderr, or the gate
verdict) and saves benchmarks/results/gate_attacks_<model>.json: every row with its
``as_expected``, the setup commands, the CPU, load average before and after, versions, seconds.
Exits 1 if any row is not as expected.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import onnx

from swin_trt.cli import main as swin_trt
from swin_trt.cpu import read_cpu
from swin_trt.io import atomic_path, read_sidecar, sidecar_path, write_sidecar
from swin_trt.parity.edits import EDITS
from swin_trt.parity.localize import save_edited
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = ("--max-batches", "2", "--workers", "0")  # 2 x 64 val images per bench: the refusals and the graph check read no images


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cli(*args) -> tuple[int, str, str]:
    """``swin-trt ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = swin_trt([str(a) for a in args])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def setup(*args) -> None:
    log("swin-trt " + " ".join(map(str, args)))
    code, _, err = cli(*args)
    if code != 0:
        raise SystemExit(f"setup failed (exit {code}): swin-trt {' '.join(map(str, args))}\n{err}")


def refused(says: str):
    """Exit 2, one line on stderr saying ``says`` (a regular expression), no traceback, no --json written."""
    return lambda r: r["exit"] == 2 and r["stderr"].count("\n") == 1 and re.search(says, r["stderr"]) and "Traceback" not in r["stderr"] and r["json"] is None


def gate_passed(r) -> bool:
    return r["exit"] == 0 and r["json"]["passed"] is True and r["json"]["provenance"] == "verified" and r["json"]["graph_mismatches"] == []


def graph_check_names(named: str):
    return lambda r: (r["exit"] == 1 and r["json"]["provenance"] == "verified" and "max_graph_mismatches" in r["json"]["failed"]
                      and named in r["json"]["graph_mismatches"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("benchmarks/models/swin_micro.pth"), help="a trained (FP) checkpoint")
    parser.add_argument("--data-path", type=Path, required=True, help="its dataset (`python -m swin_trt data digits --output DIR` for swin_micro)")
    parser.add_argument("--workdir", type=Path, required=True, help="calibrations, graphs, engines; attacks/ in it is made afresh")
    parser.add_argument("--output", type=Path, default=None, help="results file (default benchmarks/results/gate_attacks_<model>.json)")
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    work, data = args.workdir.resolve(), args.data_path
    shutil.rmtree(work / "attacks", ignore_errors=True)
    commands = [
        ("calibrate", "--resume", args.checkpoint, "--data-path", data, "--int8-mode", "trt", "--calib-output-path", work / "calib", "--workers", "0", "--skip-eval"),
        ("calibrate", "--resume", args.checkpoint, "--data-path", data, "--int8-mode", "trt", "--calibrator", "max", "--calib-output-path", work / "calib-max",
         "--workers", "0", "--skip-eval"),
    ]
    for command in commands:
        setup(*command)
    checkpoint, other_checkpoint = (next((work / folder).glob("*_calib.pth")) for folder in ("calib", "calib-max"))
    graph, engine, other_graph, other_engine = work / "model.onnx", work / "model.ort-exact.onnx", work / "other.onnx", work / "other.ort-exact.onnx"
    for source, target, built in ((checkpoint, graph, engine), (other_checkpoint, other_graph, other_engine)):
        commands += [("export", "--resume", source, "--output", target), ("build", "--onnx", target, "--ort-mode", "exact", "--output", built)]
        setup(*commands[-2])
        setup(*commands[-1])
    model = read_sidecar(graph)["model"]

    rows = []

    def record(attack: str, expected: str, check, result: dict, says: str | None = None) -> None:
        """One row; ``says``: the gate's verdict where bench ran to it, else the first line of stderr."""
        stderr_lines = result["stderr"].splitlines()
        if says is None and result["json"] is not None:
            says = "gate passed" if result["json"]["passed"] else stderr_lines[-1]  # bench prints its failed verdict last
        row = {"attack": attack, "expected": expected, "exit": result["exit"], "says": says or (stderr_lines or [""])[0],
               "as_expected": bool(check(result)), "stderr_lines": len(stderr_lines)}
        if result["json"] is not None:
            row.update({key: result["json"][key] for key in ("passed", "failed", "provenance", "images", "rel_error_median", "rel_error_p95")})
            mismatches = result["json"]["graph_mismatches"]
            row.update(graph_mismatches=len(mismatches), first_graph_mismatch=mismatches[0] if mismatches else None)
        rows.append(row)
        log(f"{attack}: exit {row['exit']}, {'as expected' if row['as_expected'] else 'NOT AS EXPECTED'}")

    def run(*command, json_path: Path | None = None) -> dict:
        code, out, err = cli(*command, *(("--json", json_path) if json_path else ()))
        found = json.loads(json_path.read_text()) if json_path is not None and json_path.is_file() else None
        return {"exit": code, "stdout": out, "stderr": err, "json": found}

    def bench(engine_path: Path, folder: Path, *extra) -> dict:
        return run("bench", "--reference", checkpoint, "--engine", engine_path, "--data-path", data, *QUICK, *extra, json_path=folder / "bench.json")

    def folder(name: str) -> Path:
        path = work / "attacks" / name
        path.mkdir(parents=True)
        return path

    # 1. the control
    record("genuine engine", "exit 0, gate passed", gate_passed, bench(engine, folder("genuine")))

    # 2. another engine's bytes under the genuine engine's sidecar
    here = folder("foreign-bytes")
    replaced = here / engine.name
    shutil.copy(sidecar_path(engine), sidecar_path(replaced))
    replaced.write_bytes(other_engine.read_bytes())
    says = f"is not the engine its sidecar {sidecar_path(replaced).name} describes"
    for flags in ((), ("--allow-foreign-engine",)):
        record(" ".join(["max-calibrated engine's bytes under the genuine sidecar", *flags]), "exit 2, one line: not the engine its sidecar describes",
               refused(re.escape(says)), bench(replaced, here, *flags))

    # 3. an fp16 claim on an FP32 graph, in either sidecar
    for which in ("graph", "engine"):
        here = folder(f"fp16-claim-{which}")
        claimed_graph, claimed_engine = here / graph.name, here / engine.name
        shutil.copy(graph, claimed_graph)
        shutil.copy(engine, claimed_engine)
        write_sidecar(claimed_graph, {**read_sidecar(graph), "precision": "fp16" if which == "graph" else "fp32"})
        write_sidecar(claimed_engine, {**read_sidecar(engine), "source_onnx": str(claimed_graph), "precision": "fp16" if which == "engine" else "fp32"})
        record(f"fp16 claim in the {which} sidecar on an FP32 graph", "exit 2, one line: says fp16, the graph computes in fp32",
               refused("says precision 'fp16', but the graph .* computes in fp32"), bench(claimed_engine, here))

    # 4. one edited tensor, a consistent chain
    for what, (edit, named) in EDITS.items():
        here = folder("edited-" + what.replace(" ", "-"))
        edited = onnx.load(graph)
        edit(edited)
        edited_graph = save_edited(edited, graph, here / "edited.onnx")
        built = run("build", "--onnx", edited_graph, "--ort-mode", "exact", "--output", here / "edited.ort-exact.onnx")
        if built["exit"] != 0:
            raise SystemExit(f"building the engine of the edited {what} failed:\n{built['stderr']}")
        record(f"one {what} edited, chain rewritten", f"exit 1, first graph mismatch: {named}", graph_check_names(named),
               bench(here / "edited.ort-exact.onnx", here))

    # 5. a graph and an engine with the same stem in one folder
    here = folder("same-stem")
    base = here / "base.onnx"
    shutil.copy(graph, base)
    write_sidecar(base, {**read_sidecar(graph), "onnx": str(base)})
    built = run("build", "--onnx", base, "--ort-mode", "exact", "--output", here / "base.ort-exact")
    listing = sorted(path.name for path in here.iterdir())
    record("same stem: build base.onnx -> base.ort-exact", "exit 0, four files (both sidecars)",
           lambda r: r["exit"] == 0 and listing == ["base.onnx", "base.onnx.json", "base.ort-exact", "base.ort-exact.json"], built, "files: " + " ".join(listing))
    record("same stem: bench base.ort-exact", "exit 0, gate passed", gate_passed, bench(here / "base.ort-exact", here))
    record("same stem: build --output base", "exit 2, one line: base.json is base.onnx's old-style sidecar",
           lambda r: refused("would be read as the old-style sidecar of")(r) and not (here / "base").exists(), run("build", "--onnx", base, "--output", here / "base"))

    # 6. a corrupt input
    here = folder("corrupt")
    bad = here / "bad.onnx"
    bad.write_bytes(b"not a graph\n")
    for name, command in (("build", ("build", "--onnx", bad, "--output", here / "e.onnx")), ("inspect", ("inspect", bad)),
                          ("bench --onnx", ("bench", "--reference", checkpoint, "--engine", engine, "--onnx", bad, "--data-path", data, *QUICK))):
        record(f"corrupt file to {name}", "exit 2, one line: not an ONNX model", refused("not an ONNX model"), run(*command))

    print("attack | expected | exit status | first line of stderr (or the gate verdict)")
    for row in rows:
        print(f"{row['attack']} | {row['expected']} | {row['exit']} | {row['says']}" + ("" if row["as_expected"] else "  <- NOT AS EXPECTED"))
    output = args.output or RESULTS / f"gate_attacks_{model}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps({
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "model": model, "checkpoint": str(args.checkpoint), "data": str(data),
            "bench_options": {"max_batches": 2, "workers": 0, "batch_size": 64,
                              "why": "speed: the refusals come before any image is read and the graph check reads none; 128 images decide the control"},
            "setup": ["swin-trt " + " ".join(map(str, command)) for command in commands],
            "all_as_expected": all(row["as_expected"] for row in rows), "attacks": rows,
            "cpu": read_cpu().as_json(), "load_average_before": load_before, "load_average_after": os.getloadavg(), "seconds": time.time() - started,
            "versions": package_versions(),
        }, indent=2) + "\n")
    log(f"saved {output}")
    if not all(row["as_expected"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
