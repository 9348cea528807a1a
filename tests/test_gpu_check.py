"""benchmarks/gpu_check.py's bookkeeping, on the CPU: which checks are skipped and why, and the
exit status (a skipped TensorRT check fails the run unless --cuda-only)."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_check  # noqa: E402  (a benchmark script, importable from its folder)

CHECKS = {check.name: check for check in gpu_check.CHECKS}


def _run(tmp_path, device="cuda", cuda_only=False):
    return gpu_check.Run(Namespace(device=device, cuda_only=cuda_only, workdir=tmp_path, timing_cache=tmp_path / "t.cache"))


def _outcome(name, status, note=""):
    return gpu_check.Outcome(name, status, 0.0, note)


def test_skips_say_why(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    run, passed = _run(tmp_path), {name: _outcome(name, "passed") for name in CHECKS}
    assert gpu_check.why_skipped(CHECKS["train"], run, None, passed) == "no CUDA GPU (torch.cuda.is_available() is False)"
    assert gpu_check.why_skipped(CHECKS["swin_t_graphs"], run, None, passed) is None  # a preparation that runs anywhere
    cpu = _run(tmp_path, device="cpu")
    assert gpu_check.why_skipped(CHECKS["train"], cpu, None, passed) is None  # --device cpu: runs on the CPU
    assert gpu_check.why_skipped(CHECKS["cuda_eval"], cpu, None, passed) == "no CUDA GPU (torch.cuda.is_available() is False)"
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    assert gpu_check.why_skipped(CHECKS["cuda_eval"], cpu, None, passed) == "needs CUDA (--device cpu)"
    missing = "TensorRT does not import (No module named 'tensorrt')"
    assert gpu_check.why_skipped(CHECKS["tensorrt_inspect"], run, missing, passed) == missing
    assert gpu_check.why_skipped(CHECKS["tensorrt_inspect"], _run(tmp_path, cuda_only=True), None, passed) == "--cuda-only"
    blocked = {**passed, "tensorrt_parity_gate": _outcome("tensorrt_parity_gate", "failed", "exit 1")}
    assert gpu_check.why_skipped(CHECKS["tensorrt_localize"], run, None, blocked) == "needs tensorrt_parity_gate (failed)"


@pytest.mark.parametrize("statuses, cuda_only, expected", [
    ((("train", "passed", ""), ("tensorrt_inspect", "passed", "")), False, 0),
    ((("train", "passed", ""), ("tensorrt_inspect", "skipped", "TensorRT does not import (x)")), False, 3),
    ((("train", "passed", ""), ("tensorrt_inspect", "skipped", "TensorRT does not import (x)")), True, 3),  # --cuda-only leaves them out, not this
    ((("train", "passed", ""), ("tensorrt_inspect", "skipped", "--cuda-only")), True, 0),
    ((("train", "skipped", "no CUDA GPU"), ("tensorrt_inspect", "skipped", "--cuda-only")), True, 3),
    ((("train", "failed", "boom"), ("tensorrt_inspect", "skipped", "--cuda-only")), True, 1),
])
def test_exit_status(statuses, cuda_only, expected):
    assert gpu_check.exit_status([_outcome(*s) for s in statuses], cuda_only) == expected
