"""The parity gate's parts that need no model: CPU facts and the auto mode, the relative error,
the verdict's semantics, and the provenance chain (on files made here)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from swin_trt.cli.bench import bound
from swin_trt.cpu import CpuInfo, parse_cpuinfo, read_cpu
from swin_trt.errors import SwinTrtError
from swin_trt.io import sidecar_path, write_sidecar
from swin_trt.onnx.hashing import file_sha256
from swin_trt.parity.compare import ParityReport, compare, quantile, relative_errors
from swin_trt.parity.gate import Bounds, bound_family, default_bounds, judge
from swin_trt.parity.provenance import ForeignEngineError, require, trace
from swin_trt.runtimes.onnxruntime import choose_mode, unsigned_operands

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


@pytest.mark.parametrize(("text", "quantized", "bits", "mode", "unsigned"), [
    (EPYC, True, 8, "fast", False), (SAPPHIRE, True, None, "fast", False), (AVX2, True, None, "exact", True), (AVX2, True, 8, "exact", True),
    (AVX2, True, 7, "fast", False), (AVX2, True, 4, "fast", False), (AVX2, False, None, "fast", False)])
def test_auto_mode_and_the_operands_fast_takes(text, quantized, bits, mode, unsigned):
    """auto is fast where signed int8 kernels are exact and held the gate; on AVX2 at 8 bits, exact, while an explicit
    fast build stores its operands unsigned (the exact u8u8 kernels)."""
    cpu = parse_cpuinfo(text)
    chosen, reason = choose_mode(cpu, quantized, bits)
    assert chosen == mode and reason
    assert (unsigned_operands(cpu, bits) if quantized else False) is unsigned
    if text == AVX2 and quantized:
        assert ("cannot saturate" in reason) is (mode == "fast") and ("u8u8" in reason) is (mode == "exact")
    # flags unknown: the safe choice
    assert choose_mode(CpuInfo("unknown", frozenset()), True, 8)[0] == "exact"
    assert choose_mode(CpuInfo("unknown", frozenset()), True)[0] == "exact"


@pytest.mark.parametrize("rows", [1, 16])  # a matrix-vector product (MLAS's GEMV kernel) and a GEMM
def test_onnxruntime_int8_kernels_saturate_only_beyond_seven_bits_without_vnni(rows):
    """What SATURATION_FREE_BITS, choose_mode and unsigned_operands rest on, measured on onnxruntime's own kernels
    (tests/integer_kernels_probe.py) on this CPU: without VNNI, u8s8 exact at 7 bits and wrong at 8; with VNNI/AMX,
    int32 accumulation, exact at 8 bits. The same 8-bit values stored unsigned (zero point 128) are exact on every CPU.
    The kernels of the other kind are the next test's."""
    from integer_kernels_probe import exact_at

    from swin_trt.runtimes.onnxruntime import SATURATION_FREE_BITS

    cpu = read_cpu()
    if "avx2" not in cpu.flags:
        pytest.skip(f"{cpu.describe()}: neither the AVX2 nor the VNNI int8 kernels")
    assert exact_at(8, rows, stored_unsigned=True)
    if cpu.int8_dot_product:
        assert exact_at(8, rows)
    else:
        assert exact_at(SATURATION_FREE_BITS, rows) and not exact_at(SATURATION_FREE_BITS + 1, rows)


EMULATED_AVX2 = ("qemu-x86_64", "-cpu", "Haswell")  # AVX2 and FMA, no AVX-512, no VNNI: what MLAS reads from CPUID there


@pytest.mark.parametrize("rows", [1, 16])
def test_onnxruntime_avx2_kernels_under_emulation(rows):
    """The AVX2 half of the rule on any x86 CPU: onnxruntime in QEMU's user-mode emulator, which presents a Haswell's
    CPUID, so MLAS takes its AVX2 kernels even on a VNNI machine (the emulator computes each instruction as the CPU
    would, vpmaddubsw's int16 saturation included). 7-bit signed operands exact, 8-bit ones wrong, 8-bit stored
    unsigned exact, as measured on the AVX2 EPYC. Skipped without qemu-x86_64 (``make test`` installs Debian's
    qemu-user where apt-get is available), never under CI."""
    if shutil.which(EMULATED_AVX2[0]) is None:
        message = f"{EMULATED_AVX2[0]} not found (apt-get install qemu-user)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {message}")
        pytest.skip(message)
    probe = Path(__file__).with_name("integer_kernels_probe.py")
    done = subprocess.run([*EMULATED_AVX2, sys.executable, str(probe), str(rows)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"7": True, "8": False, "8 unsigned": True}


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
    return ParityReport(images, 98.0, 100.0, fakequant_top1, 100.0, engine_top1, 100.0, agreement, 0.1, 0.01, 1.0, 100.0, rel_errors, 99.0)


def test_passed_only_when_every_enabled_bound_was_checked_and_held():
    good = _report([0.0] * 19 + [0.9])
    assert judge(good, Bounds(), []).passed is True
    assert judge(good, None, []).passed is None  # --no-gate
    assert judge(good, Bounds(None, None, None, None, None), None).passed is None  # every bound off: nothing was checked
    verdict = judge(_report([1.1] * 20, agreement=98.0, engine_top1=97.0), Bounds(), [])
    assert verdict.passed is False and verdict.failed == ("max_rel_error", "min_agreement", "max_top1_drop")
    assert "median relative logit error 1.1 > --max-rel-error 0.5" in verdict.failures[0]
    tail = judge(_report([0.0] * 18 + [2.0] * 2), Bounds(), [])  # wrong on 10 % of the images
    assert tail.failed == ("max_rel_error_p95",)
    assert judge(_report([0.0] * 18 + [2.0] * 2), Bounds(max_rel_error_p95=None), []).passed is True
    empty = judge(_report([], agreement=0.0, images=0), Bounds(), [])  # nothing measured fails, never passes
    assert empty.passed is False and set(empty.failed) == {"max_rel_error", "max_rel_error_p95", "min_agreement", "max_top1_drop"}


def test_graph_mismatches_fail_the_gate_and_an_unreachable_graph_is_not_a_pass():
    good = _report([0.0] * 20)
    wrong = judge(good, Bounds(), ["a.input_quantizer: scale 0.5 in the graph, 0.25 in the reference", "b: quantized in the graph, not in the reference"])
    assert wrong.failed == ("max_graph_mismatches",)
    assert wrong.failures[0] == ("2 differences between the engine's graph and a fresh export of the reference (first: a.input_quantizer: scale 0.5 in "
                                 "the graph, 0.25 in the reference) (--max-graph-mismatches 0)")
    unseen = judge(good, Bounds(), None)
    assert unseen.failed == ("max_graph_mismatches",) and "could not be compared" in unseen.failures[0]
    assert judge(good, Bounds(max_graph_mismatches=None), None).passed is True


def test_default_bounds_follow_the_graph_precision():
    assert default_bounds("fp32") == Bounds() and default_bounds("fp32").max_rel_error == 0.5
    fp16 = default_bounds("fp16")
    assert fp16.max_rel_error > default_bounds("fp32").max_rel_error and fp16.max_graph_mismatches == 0
    with pytest.raises(SwinTrtError, match="the engine's graph is 'bf16'"):
        default_bounds("bf16")


def test_bound_family_is_read_from_the_graphs_own_types():
    assert bound_family({"float32"}, {"int8"}) == "fp32" and bound_family(set(), set()) == "fp32"  # no float constants: nothing to loosen
    assert bound_family({"float16"}, {"int8"}) == "fp16"
    with pytest.raises(SwinTrtError, match="float16 and float32 constants"):
        bound_family({"float16", "float32"}, {"int8"})  # half-converted: neither family's bounds are known to fit


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
    write_sidecar(graph, {"onnx": str(graph), "source_checkpoint": str(checkpoint), "source_sha256": file_sha256(checkpoint)})
    engine.write_bytes(b"engine")
    write_sidecar(engine, {"engine": str(engine), "backend": "onnxruntime", "source_onnx": str(graph.resolve()), "source_onnx_sha256": file_sha256(graph)})
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
    sidecar_path(chain["engine"]).unlink()
    assert "has no sidecar" in _broken(chain)


def test_graph_reexported_in_place_breaks_the_chain(chain):
    chain["graph"].write_bytes(b"graph, exported again")
    assert "is not the graph the engine was built from" in _broken(chain)


def test_every_sidecar_records_its_files_sha256_and_size(chain):
    for artifact in (chain["graph"], chain["engine"]):
        recorded = json.loads(sidecar_path(artifact).read_text())
        assert (recorded["sha256"], recorded["bytes"]) == (file_sha256(artifact), artifact.stat().st_size)


def test_engine_bytes_replaced_under_its_sidecar_are_refused_even_when_foreign_is_allowed(chain):
    from swin_trt.parity.provenance import EngineBytesError

    chain["engine"].write_bytes(b"another engine")
    with pytest.raises(EngineBytesError, match="is not the engine its sidecar m.ort.onnx.json describes"):
        trace(chain["engine"], chain["checkpoint"])


def test_a_graph_sidecar_describing_another_graph_breaks_the_chain(chain):
    """A graph edited after export, its engine rebuilt from it, the old sidecar kept."""
    chain["graph"].write_bytes(b"graph, edited")
    write_sidecar(chain["engine"], {**json.loads(sidecar_path(chain["engine"]).read_text()), "source_onnx_sha256": file_sha256(chain["graph"])})
    assert "it describes another graph" in _broken(chain)


def test_sidecars_written_before_0_2_are_read_with_a_note_and_do_not_verify(chain, capsys):
    from swin_trt.io import read_sidecar

    legacy = chain["engine"].with_suffix(".json")  # m.ort.json, the old name
    sidecar_path(chain["engine"]).rename(legacy)
    details = json.loads(legacy.read_text())
    del details["sha256"]
    legacy.write_text(json.dumps(details))
    assert read_sidecar(chain["engine"]) == details
    assert "under the old name" in capsys.readouterr().err
    assert "records no SHA-256 of the engine" in _broken(chain)


def test_a_sidecar_under_the_old_shared_name_is_read_only_for_the_artifact_it_names(tmp_path):
    """Before 0.2 ``m.onnx`` and its engine ``m.ort`` both wrote ``m.json``: the later one's record
    must not be read as the other's."""
    from swin_trt.io import read_sidecar

    graph, engine = tmp_path / "m.onnx", tmp_path / "m.ort"
    graph.write_bytes(b"graph")
    engine.write_bytes(b"engine")
    engine_record = {"engine": str(engine), "backend": "onnxruntime", "source_onnx": str(graph)}
    (tmp_path / "m.json").write_text(json.dumps(engine_record))
    assert read_sidecar(engine) == engine_record
    assert read_sidecar(graph) is None
    graph_record = {"onnx": str(graph), "model": "swin_micro"}
    (tmp_path / "m.json").write_text(json.dumps(graph_record))
    assert read_sidecar(graph) == graph_record
    assert read_sidecar(engine) is None


def test_graph_without_sidecar_is_foreign(chain):
    sidecar_path(chain["graph"]).unlink()
    assert "has no sidecar" in _broken(chain)


def test_other_checkpoint_is_foreign(chain):
    chain["checkpoint"].write_bytes(b"another calibration")
    assert f"not from --reference {chain['checkpoint']}" in _broken(chain)


def test_moved_graph_found_with_onnx_and_checked(chain, tmp_path):
    moved = tmp_path / "moved.onnx"
    chain["graph"].rename(moved)
    assert "is not there" in _broken(chain)
    sidecar_path(chain["graph"]).rename(sidecar_path(moved))
    assert trace(chain["engine"], chain["checkpoint"], moved).verified
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not it")
    assert "is not the graph the engine was built from" in _broken(chain, other)


def test_missing_reference_is_an_error(chain, tmp_path):
    with pytest.raises(SwinTrtError, match="not found"):
        trace(chain["engine"], tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------
# the comparison on torch tensors, the device-side input pipeline, the speed sweep


def test_relative_errors_on_torch_tensors_equal_the_numpy_formula():
    rng = np.random.default_rng(1)
    fp32 = rng.standard_normal((6, 10)).astype(np.float32)
    fakequant = fp32 + 0.05 * rng.standard_normal((6, 10)).astype(np.float32)
    engine = fakequant + 0.01 * rng.standard_normal((6, 10)).astype(np.float32)
    expected = np.linalg.norm(engine.astype(np.float64) - fakequant, axis=1) / np.linalg.norm(fakequant.astype(np.float64) - fp32, axis=1)
    for convert in (np.asarray, torch.from_numpy):
        got = relative_errors(convert(engine), convert(fakequant), convert(fp32))
        assert got.dtype == np.float64 and np.allclose(got, expected, rtol=1e-12, atol=0)
    half = torch.from_numpy(engine).half()  # an FP16 engine's logits: widened exactly, not rounded again
    assert np.allclose(relative_errors(half, torch.from_numpy(fakequant), torch.from_numpy(fp32)),
                       relative_errors(half.float().numpy(), fakequant, fp32), rtol=1e-12, atol=0)


class _StandInEngine:
    """Stands for a backend's engine (a fixed linear map), with the protocol the gate uses."""

    device = torch.device("cpu")
    batch_range = (1, 16)

    def __init__(self, weight: torch.Tensor):
        self.weight, self.calls = weight, []

    def run(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(images)
        return (images.flatten(1) @ self.weight).half()  # an FP16 engine's logits


def test_compare_on_torch_tensors_matches_a_numpy_computation():
    generator = torch.Generator().manual_seed(0)
    weights = {name: torch.randn(12, 5, generator=generator) for name in ("fp32", "fakequant", "engine")}
    models = {name: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5, bias=False)) for name in ("fp32", "fakequant")}
    for name, model in models.items():
        model[1].weight.data = weights[name].T.contiguous()
    weights["engine"] = weights["fakequant"] + 0.1 * weights["engine"]
    engine = _StandInEngine(weights["engine"])
    batches = [(torch.randint(0, 256, (n, 3, 2, 2), generator=generator, dtype=torch.uint8), torch.randint(0, 5, (n,), generator=generator))
               for n in (4, 3)]
    report = compare(models["fp32"], models["fakequant"], engine, batches, preprocess=lambda pixels: pixels.float() / 255)
    images = torch.cat([b for b, _ in batches]).float().numpy().reshape(7, -1) / 255
    targets = torch.cat([t for _, t in batches]).numpy()
    logits = {name: images @ w.double().numpy() for name, w in weights.items()}
    logits["engine"] = logits["engine"].astype(np.float16).astype(np.float64)
    assert all(call.dtype == torch.float32 for call in engine.calls)  # the engine gets the preprocessed batch
    assert report.images == 7 and report.engine_top1 == pytest.approx(100 * np.mean(logits["engine"].argmax(1) == targets))
    assert report.fp32_top1 == pytest.approx(100 * np.mean(logits["fp32"].argmax(1) == targets))
    assert report.agreement == pytest.approx(100 * np.mean(logits["engine"].argmax(1) == logits["fakequant"].argmax(1)))
    assert report.reference_agreement == pytest.approx(100 * np.mean(logits["fakequant"].argmax(1) == logits["fp32"].argmax(1)))
    assert report.max_abs_diff == pytest.approx(np.abs(logits["engine"] - logits["fakequant"]).max(), rel=1e-4)
    assert np.allclose(report.rel_errors, relative_errors(logits["engine"], logits["fakequant"], logits["fp32"]), rtol=1e-4)
    assert report.images_per_s > 0


def test_uint8_pipeline_normalised_on_the_device_is_bit_identical(digits_dir):
    """What `bench` feeds the models (uint8 from the workers, normalised where the models run)
    equals the float evaluation transform to the last bit."""
    from swin_trt.data.datasets import build_dataset
    from swin_trt.data.device_transforms import Normalize, uint8_eval_transform
    from swin_trt.data.transforms import eval_transform
    from swin_trt.models.zoo import MICRO, get_config

    for config in (MICRO, get_config("swin_tiny_patch4_window7_224")):  # a plain resize, and resize + centre crop
        floats = build_dataset(digits_dir, "val", eval_transform(config.data))
        pixels = build_dataset(digits_dir, "val", uint8_eval_transform(config.data))
        batch = torch.stack([pixels[i][0] for i in range(8)])
        assert batch.dtype == torch.uint8
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
        for device in devices:
            normalised = Normalize(config.data).to(device)(batch.to(device)).cpu()
            assert torch.equal(normalised, torch.stack([floats[i][0] for i in range(8)])), device


def test_sweep_reports_each_batch_and_refuses_batches_outside_the_profile():
    from swin_trt.runtimes.timing import sweep

    engine = _StandInEngine(torch.ones(12, 5))
    points = sweep(engine, (3, 2, 2), batches=(1, 4), warmup=1, iters=5)
    assert [p.batch for p in points] == [1, 4] and all(0 < p.p50_ms <= p.p99_ms for p in points)
    assert all(p.images_per_s == pytest.approx(p.batch / p.p50_ms * 1000) for p in points)
    assert [c.shape[0] for c in engine.calls] == [1] * 6 + [4] * 6  # warm-up, then the timed runs
    with pytest.raises(SwinTrtError, match=r"--sweep batch 32 is outside e.plan's profile \(1 to 16\)"):
        sweep(engine, (3, 2, 2), batches=(1, 32), label="e.plan")
    assert engine.calls[-1].shape[0] == 4  # refused before running anything


def test_bench_device_and_exact_float32():
    from swin_trt.float32 import exact_float32
    from swin_trt.pipelines.deploy import bench_device

    engine = _StandInEngine(torch.ones(1, 1))
    assert bench_device("auto", engine) == engine.device and bench_device("cpu", engine) == torch.device("cpu")
    with pytest.raises(SwinTrtError, match="expected auto, cpu, cuda or cuda:N"):
        bench_device("gpu0", engine)
    if not torch.cuda.is_available():
        with pytest.raises(SwinTrtError, match="no CUDA GPU is visible"):
            bench_device("cuda", engine)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with exact_float32():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


_FAULTS = """
import resource, sys, torch
from swin_trt.quantization.quantizer import _FakeQuantize
if sys.argv[1] == "kept":
    from swin_trt.allocator import keep_freed_memory
    assert keep_freed_memory()
torch.set_num_threads(2)
x = torch.randn(8, 3136, 384, requires_grad=True)  # Swin-T's fc1 output at batch 8, 38.5 MB: above glibc's largest dynamic mmap threshold
amax = torch.tensor(3.0)
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _FakeQuantize.apply(x, amax / 127, amax, -128, 127, False, False).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[-6:]))
"""


def test_kept_freed_memory_stops_the_page_faults_of_every_training_step():
    """swin_trt.allocator's reason to exist, counted (not timed): with glibc's defaults every fake-quant forward and
    backward of a large activation faults its temporaries in afresh (two or three of them, every step); with freed memory
    kept, the heap settles within a few steps (how many varies from run to run: CI once saw two tensors faulted at the 5th
    step) and then faults none. So 12 steps, and the faults of the last 6 summed.
    Each setting in a fresh process (mallopt is per process and the CLI sets it)."""
    import subprocess
    import sys

    from swin_trt.allocator import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc: nothing to set")
    steady = {how: int(subprocess.run([sys.executable, "-c", _FAULTS, how], capture_output=True, text=True, check=True).stdout.split()[-1])
              for how in ("default", "kept")}
    # measured on the Zen 5 EPYC, 9 runs of 12 steps, 3 of them beside a busy core: kept 0-9,408 against 112,908
    assert 2 * steady["kept"] < steady["default"], steady
