"""Time of ``swin-trt sensitivity`` (every group, alone disabled and alone enabled) on swin_micro,
per granularity, against a plain full-forward evaluation of each group (what the cached-unit
evaluation avoids), on the same in-memory images.

Wall time is what a user waits; CPU time over the threads used (``process_time / threads``) is
what the run would take on that many idle cores, and is reported beside it because the machine
these figures come from is shared (its load average is recorded too).

    .venv/bin/python benchmarks/sensitivity_speed.py --resume CALIB.pth --data-path DIR [--granularity layer block]
        [--max-batches 4 --batch-size 128 --threads 2 --baseline]

Prints a table and saves benchmarks/results/sensitivity_speed.json (with the CPU model and ISA flags).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from swin_trt.api import open_model
from swin_trt.console import print_table
from swin_trt.cpu import read_cpu
from swin_trt.pipelines.sensitivity import split_probe
from swin_trt.quantization.sensitivity import quantizer_groups
from swin_trt.versions import package_versions

RESULTS = Path(__file__).resolve().parent / "results" / "sensitivity_speed.json"


def timed(work) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", required=True)
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--granularity", nargs="+", default=["layer", "block"])
    parser.add_argument("--max-batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also time full-forward evaluations of the first granularity's groups")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = open_model(checkpoint=args.resume).model
    setup_wall, setup_cpu, probe = timed(lambda: split_probe(model, args.data_path, False, "val", args.max_batches * args.batch_size,
                                                             args.batch_size, 0, torch.device("cpu")))
    rows, results = [], {}
    for granularity in args.granularity:
        groups = quantizer_groups(model, granularity)
        wall, cpu, _ = timed(lambda groups=groups: probe.measure(groups))
        results[granularity] = {"groups": len(groups), "evaluations": 2 * len(groups), "wall_s": wall, "cpu_s": cpu,
                                "cpu_s_per_thread": cpu / args.threads, "with_setup_wall_s": wall + setup_wall}
        rows.append((granularity, len(groups), f"{wall + setup_wall:.1f}", f"{wall:.1f}", f"{cpu / args.threads:.1f}"))
    if args.baseline:
        groups = quantizer_groups(model, args.granularity[0])
        wall, cpu, _ = timed(lambda: [probe.logits(probe.baseline - set(g.quantizers), 0, from_fp=False) for g in groups]
                             + [probe.logits(frozenset(g.quantizers), 0, from_fp=True) for g in groups])
        results["full_forward_" + args.granularity[0]] = {"groups": len(groups), "wall_s": wall, "cpu_s": cpu, "cpu_s_per_thread": cpu / args.threads}
        rows.append((f"{args.granularity[0]}, every evaluation from the input", len(groups), "-", f"{wall:.1f}", f"{cpu / args.threads:.1f}"))
    print_table(f"sensitivity of {args.resume}: {len(probe.labels)} images, {args.threads} threads (setup {setup_wall:.1f} s: load + 2 cached passes)",
                ("granularity", "groups", "total wall s", "groups wall s", "CPU s / thread"), rows)
    payload = {"checkpoint": args.resume, "images": len(probe.labels), "threads": args.threads, "setup_wall_s": setup_wall, "setup_cpu_s": setup_cpu,
               "results": results, "load_average": os.getloadavg(), "cpu": read_cpu().as_json(), "versions": package_versions()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
