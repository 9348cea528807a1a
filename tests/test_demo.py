"""`swin-trt demo` end to end on a reduced plan: digits only, trained with the demo's own recipe (which must
reach 96 % val top-1: the other tests use a shorter one, tests/conftest.py), one 4-bit-activation trt
setting with one QAT epoch; a second run reuses the model and the QAT run."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from swin_trt.cli import demo

pytestmark = pytest.mark.slow


def test_demo_reduced_plan(digits_dir, tmp_path, monkeypatch, run_cli):
    digits = dataclasses.replace(demo.DATASETS[0], settings=(("trt", 8, 4, 1),), sensitivity_tag=None)
    monkeypatch.setattr(demo, "DATASETS", (digits,))
    workdir = tmp_path / "demo"
    shutil.copytree(digits_dir, workdir / "data" / "digits")

    code, out, err = run_cli("demo", "--workdir", workdir, "--json", tmp_path / "demo.json")
    assert code == 0, err
    assert f"digits: train: {digits.train.epochs} epochs" in out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["top1"] >= 96.0 and summary["images"] == 360  # the demo's recipe (design notes: 98 % after 41 epochs)
    for tag in ("mode_trt_w8a4",):
        assert 0 < summary[f"int8_{tag}_top1"] <= 100 and 0 < summary[f"qat_{tag}_top1"] <= 100
        assert summary[f"engine_{tag}_passed"] is True and summary[f"engine_{tag}_agreement"] >= 99
    # the stage files swin-trt report reads, with their commands' keys
    out_dir = workdir / "digits"
    qat = json.loads((out_dir / "qat" / "mode_trt_w8a4" / "qat.json").read_text())
    assert qat["top1"] == summary["qat_mode_trt_w8a4_top1"] and qat["ptq_top1"] == summary["int8_mode_trt_w8a4_top1"]
    calibrate = json.loads((out_dir / "calib" / "mode_trt_w8a4" / "calibrate.json").read_text())
    assert (calibrate["weight_bits"], calibrate["activation_bits"]) == (8, 4)
    bench = json.loads((out_dir / "engines" / "bench_swin_micro_mode_trt_w8a4_qat.json").read_text())
    assert bench["passed"] is True and bench["provenance"] == "verified"
    assert json.loads((out_dir / "train.json").read_text())["top1"] == summary["top1"]
    assert f"{summary['qat_mode_trt_w8a4_top1']:.2f}" in (workdir / "report.html").read_text()  # the demo ends with its report
    # a second run reuses the finished QAT runs: same figures
    code, out, err = run_cli("demo", "--workdir", workdir, "--json", tmp_path / "again.json")
    assert code == 0, err
    assert "digits: train: reused" in out
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["qat_mode_trt_w8a4_top1"] == summary["qat_mode_trt_w8a4_top1"]
