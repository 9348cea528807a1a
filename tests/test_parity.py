"""The parity gate's parts that need no model: CPU facts and the auto mode, the relative error,
the verdict's semantics, and the provenance chain (on files made here)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from swin_trt.cli.bench import bound
from swin_trt.cpu import CpuInfo, parse_cpuinfo, read_cpu
from swin_trt.errors import SwinTrtError
from swin_trt.onnx.hashing import file_sha256
from swin_trt.parity.compare import ParityReport, quantile, relative_errors
from swin_trt.parity.gate import Bounds, judge
from swin_trt.parity.provenance import ForeignEngineError, require, trace
from swin_trt.runtimes.onnxruntime import choose_mode

EPYC = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_vnni avx_vnni amx_tile amx_int8 amx_bf16\n"


def test_cpuinfo_first_processor_and_tracked_flags_only():
    cpu = parse_cpuinfo(EPYC)
    assert cpu.model == "AMD EPYC 9654 96-Core Processor"
    assert cpu.flags == {"avx2", "avx512f", "avx512_vnni"} and cpu.int8_dot_product
    assert parse_cpuinfo(AVX2).flags == {"avx2"} and not parse_cpuinfo(AVX2).int8_dot_product
    assert parse_cpuinfo(SAPPHIRE).flags == {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8"}
    record = cpu.as_json()
    assert record["model"] == cpu.model and record["flags"] == ["avx2", "avx512_vnni", "avx512f"]


def test_read_cpu_on_this_machine():
    cpu = read_cpu()
    assert cpu.model and json.dumps(cpu.as_json())


@pytest.mark.parametrize(("text", "quantized", "mode"), [(EPYC, True, "fast"), (SAPPHIRE, True, "fast"), (AVX2, True, "exact"), (AVX2, False, "fast")])
def test_auto_mode_is_fast_only_where_int8_kernels_cannot_saturate(text, quantized, mode):
    chosen, reason = choose_mode(parse_cpuinfo(text), quantized)
    assert chosen == mode and reason
    assert choose_mode(CpuInfo("unknown", frozenset()), True)[0] == "exact"  # flags unknown: the safe choice


def test_relative_error_is_in_units_of_the_quantization_perturbation():
    rng = np.random.default_rng(0)
    fp32 = rng.standard_normal((4, 10))
    fakequant = fp32 + 0.1 * rng.standard_normal((4, 10))
    engine = fakequant + 0.5 * (fakequant - fp32)  # half the quantization's own perturbation
    assert np.allclose(relative_errors(engine, fakequant, fp32), 0.5)
    # independent of the logits' scale (so of how confident the model is)
    assert np.allclose(relative_errors(100 * engine, 100 * fakequant, 100 * fp32), 0.5)
    assert (relative_errors(fakequant, fakequant, fp32) == 0).all()
    same = relative_errors(engine, fp32, fp32)  # quantization changed nothing, engine did: always an error
    assert np.isinf(same).all()
    assert relative_errors(fp32, fp32, fp32).tolist() == [0, 0, 0, 0]


def test_quantile_takes_an_observed_value():
    assert quantile(np.array([0.0, 0.0, 1.0, np.inf]), 0.5) == 1.0  # upper median, never averaged
    assert quantile(np.array([0.0] * 39 + [np.inf]), 0.95) == 0.0  # one image in 40 may be far off
    assert quantile(np.array([0.0] * 37 + [np.inf] * 3), 0.95) == np.inf
    assert math.isnan(quantile(np.zeros(0), 0.5))


def _report(rel_errors, agreement=100.0, fakequant_top1=98.0, engine_top1=98.0, images=None) -> ParityReport:
    rel_errors = np.asarray(rel_errors, dtype=float)
    images = len(rel_errors) if images is None else images
    return ParityReport(images, 98.0, 100.0, fakequant_top1, 100.0, engine_top1, 100.0, agreement, 0.1, 0.01, 1.0, 100.0, rel_errors)


def test_passed_only_when_every_enabled_bound_was_checked_and_held():
    good = _report([0.0] * 19 + [0.9])
    assert judge(good, Bounds()).passed is True
    assert judge(good, None).passed is None  # --no-gate
    assert judge(good, Bounds(None, None, None, None)).passed is None  # every bound off: nothing was checked
    verdict = judge(_report([1.1] * 20, agreement=98.0, engine_top1=97.0), Bounds())
    assert verdict.passed is False and verdict.failed == ("max_rel_error", "min_agreement", "max_top1_drop")
    assert "median relative logit error 1.1 > --max-rel-error 0.5" in verdict.failures[0]
    tail = judge(_report([0.0] * 18 + [2.0] * 2), Bounds())  # wrong on 10 % of the images
    assert tail.failed == ("max_rel_error_p95",)
    assert judge(_report([0.0] * 18 + [2.0] * 2), Bounds(max_rel_error_p95=None)).passed is True
    empty = judge(_report([], agreement=0.0, images=0), Bounds())  # nothing measured fails, never passes
    assert empty.passed is False and set(empty.failed) == {"max_rel_error", "max_rel_error_p95", "min_agreement", "max_top1_drop"}


def test_bound_values():
    assert bound("off") is None and bound("0.25") == 0.25
    with pytest.raises(argparse.ArgumentTypeError):
        bound("loose")


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, Path]:
    """checkpoint -> exported graph (+ sidecar) -> engine (+ sidecar), as export and build write them."""
    checkpoint, graph, engine = tmp_path / "calib.pth", tmp_path / "export" / "m.onnx", tmp_path / "engines" / "m.ort.onnx"
    graph.parent.mkdir()
    engine.parent.mkdir()
    checkpoint.write_bytes(b"calibrated weights")
    graph.write_bytes(b"graph")
    graph.with_suffix(".json").write_text(json.dumps({"source_checkpoint": str(checkpoint), "source_sha256": file_sha256(checkpoint)}))
    engine.write_bytes(b"engine")
    engine.with_suffix(".json").write_text(json.dumps({"backend": "onnxruntime", "source_onnx": str(graph.resolve()), "source_onnx_sha256": file_sha256(graph)}))
    return {"checkpoint": checkpoint, "graph": graph, "engine": engine}


def test_provenance_verified(chain):
    provenance = trace(chain["engine"], chain["checkpoint"])
    assert provenance.verified and provenance.label == "verified" and provenance.onnx == chain["graph"].resolve()
    require(provenance)


def _broken(chain, onnx=None) -> str:
    provenance = trace(chain["engine"], chain["checkpoint"], onnx)
    assert not provenance.verified and provenance.label.startswith("foreign: ")
    with pytest.raises(ForeignEngineError) as refused:
        require(provenance)
    assert "\n" not in str(refused.value) and "--allow-foreign-engine" in str(refused.value)
    return provenance.broken_link


def test_engine_without_sidecar_is_foreign(chain):
    chain["engine"].with_suffix(".json").unlink()
    assert "has no sidecar" in _broken(chain)


def test_graph_reexported_in_place_breaks_the_chain(chain):
    chain["graph"].write_bytes(b"graph, exported again")
    assert "is not the graph the engine was built from" in _broken(chain)


def test_graph_without_sidecar_is_foreign(chain):
    chain["graph"].with_suffix(".json").unlink()
    assert "has no sidecar" in _broken(chain)


def test_other_checkpoint_is_foreign(chain):
    chain["checkpoint"].write_bytes(b"another calibration")
    assert f"not from --reference {chain['checkpoint']}" in _broken(chain)


def test_moved_graph_found_with_onnx_and_checked(chain, tmp_path):
    moved = tmp_path / "moved.onnx"
    chain["graph"].rename(moved)
    assert "is not there" in _broken(chain)
    chain["graph"].with_suffix(".json").rename(moved.with_suffix(".json"))
    assert trace(chain["engine"], chain["checkpoint"], moved).verified
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not it")
    assert "is not the graph the engine was built from" in _broken(chain, other)


def test_missing_reference_is_an_error(chain, tmp_path):
    with pytest.raises(SwinTrtError, match="not found"):
        trace(chain["engine"], tmp_path / "missing.pth")
