"""The tables of docs/sensitivity.md ("Measured"): W4A4 swin_micro on digits where PTQ loses, the
recipes' top-1, the layer-group sensitivity ranking and `--auto-fallback`, by the documented
`swin-trt` commands (run in-process, their --json results collected).

    python benchmarks/sensitivity_tables.py --checkpoint /work/data/micro/swin_micro.pth --data-path /work/data/digits --workdir /tmp/sens

Saves benchmarks/results/sensitivity_tables.json (each command, its JSON, the CPU model and ISA
flags, load average before and after, versions) and draws docs/sensitivity.png from the ranking.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from swin_trt.cli import main as swin_trt
from swin_trt.cpu import read_cpu
from swin_trt.report.plots import sensitivity_plot
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "sensitivity_tables.json"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "sensitivity.png"
W4A4 = ("--wprec", "4", "--aprec", "4", "--calibrator", "max", "--workers", "0")


def run(name: str, workdir: Path, *args: str) -> dict:
    """One documented command with ``--json``; its JSON, the command and its seconds."""
    result = workdir / f"{name}.json"
    start = time.perf_counter()
    code = swin_trt([*args, "--json", str(result)])
    if code != 0:
        raise SystemExit(f"sensitivity_tables.py: `swin-trt {' '.join(args)}` exited {code}")
    return {"command": "swin-trt " + " ".join(args), "seconds": time.perf_counter() - start, "result": json.loads(result.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained swin_micro (e.g. /work/data/micro/swin_micro.pth)")
    parser.add_argument("--data-path", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    load_before, data = os.getloadavg(), str(args.data_path)
    calibrate = ("calibrate", "--resume", str(args.checkpoint), "--data-path", data, *W4A4)
    runs = {
        "mode_1": run("mode_1", args.workdir, *calibrate, "--int8-mode", "1", "--calib-output-path", str(args.workdir / "c1")),
        "mode_2": run("mode_2", args.workdir, *calibrate, "--int8-mode", "2", "--calib-output-path", str(args.workdir / "c2")),
    }
    runs["sensitivity"] = run("sensitivity", args.workdir, "sensitivity", "--resume", str(args.workdir / "c1" / "swin_micro_calib.pth"),
                              "--data-path", data, "--workers", "0")
    runs["fallback"] = run("fallback", args.workdir, *calibrate, "--int8-mode", "1", "--auto-fallback", "--max-drop", "0.3",
                           "--calib-output-path", str(args.workdir / "cfb"))
    RESULTS.write_text(json.dumps({"runs": runs, "cpu": read_cpu().as_json(), "load_average_before": load_before,
                                   "load_average_after": os.getloadavg(), "versions": package_versions()}, indent=2) + "\n")
    print(f"saved {RESULTS}; plot {sensitivity_plot(runs['sensitivity']['result'], PLOT)}")


if __name__ == "__main__":
    main()
