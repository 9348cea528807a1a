"""onnxruntime backend: build (optimise and save) and run a Q/DQ graph.

Two modes: ``fast`` (ORT_ENABLE_ALL: Q/DQ pairs fused into integer MatMuls, plus the fusions of
:func:`swin_trt.onnx.fuse.onnxruntime_fusions`, BiasGelu, bias adds in the integer GEMMs, q, k and v
as three GEMMs) and ``exact`` (ORT_ENABLE_BASIC: Q/DQ stay explicit, float math between them, as in
the fake-quant model; each weight's constant Q/DQ is folded into the float weight it computes, see
:func:`session_options`). Both move the attention's head transposes onto 8-bit integers
(:func:`swin_trt.onnx.fuse.engine_passes`, which change no value).
``auto`` picks one per CPU (:func:`choose_mode`). A fast engine computes the graph's integers
exactly on every x86 CPU with AVX2: where VNNI/AMX are missing and the signed operands are wider
than 7 bits, the build stores the Q/DQ as uint8 (:func:`unsigned_operands`), which moves the
fused GEMMs from MLAS's saturating u8s8 kernels to its exact u8u8 ones. Exact integers are not
the reference's float arithmetic, though: see :func:`choose_mode` for where that decides.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from swin_trt.cpu import CpuInfo, read_cpu
from swin_trt.errors import SwinTrtError
from swin_trt.io import atomic_path, read_sidecar, write_sidecar
from swin_trt.lazy import lazy_import
from swin_trt.runtimes import has_qdq, source_record
from swin_trt.versions import package_versions

ort = lazy_import("onnxruntime")
onnx = lazy_import("onnx")
torch = lazy_import("torch")
onnx_graph = lazy_import("swin_trt.onnx.graph")
onnx_fuse = lazy_import("swin_trt.onnx.fuse")

MODES = ("exact", "fast")
ERROR_LOG_LEVEL = 3  # onnxruntime's own warnings (e.g. "hardware specific optimizations") stay out of the user's log


# u8 (0..255) x s8 products summed in int16 pairs cannot saturate when the signed operand fits
# b bits: 2 * 255 * 2**(b-1) <= 32767 holds for b <= 7 (32640), not for 8 (65280).
SATURATION_FREE_BITS = 7


def unsigned_operands(cpu: CpuInfo, operand_bits: int | None) -> bool:
    """Whether a fast engine must store its int8 Q/DQ as uint8 to stay exact on ``cpu``.

    With VNNI or AMX, onnxruntime's u8s8 kernels accumulate in int32: exact, and the fastest. On
    AVX2 without them, they sum pairs of u8*s8 products in int16 with saturation, exact only when
    every signed right-hand operand of a fused matmul (``operand_bits``: GEMM weights, and
    attention's k and v, from :func:`swin_trt.onnx.graph.integer_gemm_operand_bits`) fits in 7
    bits; wider (or unknown) operands are stored unsigned, which selects the u8u8 kernels (int16
    operands, int32 pair sums: exact at 8 bits, at about half the u8s8 kernels' multiply rate)."""
    return not cpu.int8_dot_product and (operand_bits is None or operand_bits > SATURATION_FREE_BITS)


def choose_mode(cpu: CpuInfo, quantized: bool, operand_bits: int | None = None) -> tuple[str, str]:
    """The ``--ort-mode auto`` choice for a graph on ``cpu``: (mode, the reason, for the user).

    ``fast`` where its fused int8 kernels compute the graph's integers with signed operands and
    held the default parity gate where measured (docs/parity.md, docs/cpu.md): VNNI or AMX, or
    operands of at most 7 bits. Elsewhere ``exact``: on AVX2 without VNNI a fast engine of an 8-bit
    graph stores its operands unsigned (:func:`unsigned_operands`). Its right engines of the deep
    swin_tiny_fashion failed the p95 bound there (1.22-1.35) until 0.3.5, because the unsigned rewrite
    missed the weights whose Q and DQ the exporter gave constants of their own, and those GEMMs
    saturated. With that fixed, under an emulated AVX2 CPU the fast engine lands where the VNNI
    EPYC's does (docs/parity.md section 3); auto stays exact here until the full pairings are
    measured again on an AVX2 CPU.
    """
    if not quantized:
        return "fast", "no Q/DQ in the graph: fusions do not touch quantized arithmetic"
    if cpu.int8_dot_product:
        extensions = ", ".join(sorted(cpu.flags & {"avx512_vnni", "avx_vnni", "amx_int8"}))
        return "fast", f"{extensions}: fused int8 kernels accumulate in int32 and hold the default gate (docs/parity.md)"
    if operand_bits is not None and operand_bits <= SATURATION_FREE_BITS:
        return "fast", (f"no VNNI/AMX, but every signed operand of the fused int8 matmuls fits {operand_bits} bits: "
                        "u8s8 pair sums cannot saturate int16, so the fast kernels are exact (docs/cpu.md)")
    widest = "unknown" if operand_bits is None else f"{operand_bits}-bit"
    return "exact", (f"no VNNI/AMX and {widest} signed matmul operands: --ort-mode fast stores them unsigned for onnxruntime's u8u8 "
                     "kernels (exact integers, 1.5-1.6x the speed); its default gate on a deep model is to be measured again on this kind "
                     "since 0.3.5's fix of that rewrite (docs/parity.md), so exact, which keeps the reference's arithmetic (docs/cpu.md)")


def session_options(mode: str, threads: int | None = None):
    if mode not in MODES:
        raise SwinTrtError(f"unknown --ort-mode {mode!r}; choose {' or '.join(MODES)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if mode == "fast" else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    if mode == "exact":
        # onnxruntime's QDQ handling keeps every DequantizeLinear out of constant folding (for its fusions, which exact
        # does not run), so an exact engine dequantized all its weights at every call: 20-23 % of Swin-T's operator time,
        # 2.4x the batch-1 time on the AVX2 EPYC (docs/cpu.md). Off, the weights' Q/DQ fold into the float weights they
        # compute, by the same kernels (tests/test_fuse.py), and activation Q/DQ run as before.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.log_severity_level = ERROR_LOG_LEVEL
    # engines are ONNX files whatever the user named them: onnxruntime would read a name ending in .ort as its ORT format
    options.add_session_config_entry("session.load_model_format", "ONNX")
    if threads:
        options.intra_op_num_threads = threads
    return options


def providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class Plan(NamedTuple):
    """How :func:`build` optimises a graph: the mode, why, and whether its Q/DQ go unsigned."""

    mode: str
    reason: str
    unsigned: bool


def resolve_mode(onnx_path: str | Path, mode: str) -> Plan:
    """The :class:`Plan` for ``--ort-mode`` ``mode`` (exact, fast or auto) on this CPU."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SwinTrtError(f"ONNX file not found: {onnx_path} (make one with `swin-trt export`)")
    if mode != "auto":
        session_options(mode)  # validates the name
    if mode == "exact":
        return Plan("exact", "chosen with --ort-mode", False)

    def without_rewrite(chosen: str, reason: str) -> Plan:  # graphs whose fast engine keeps its Q/DQ types
        return Plan(chosen, reason, False) if mode == "auto" else Plan(mode, "chosen with --ort-mode", False)

    quantized = has_qdq(onnx_path)
    cpu = read_cpu()
    if not quantized:
        return without_rewrite(*choose_mode(cpu, quantized))
    model = onnx_graph.read_model(onnx_path)
    # FP8 before the CPU's int8 units: an FP8 graph has no integer kernels to run on them, whatever the CPU
    if "fp8" in onnx_graph.qdq_formats(model):
        return without_rewrite("exact", "FP8 Q/DQ: onnxruntime has no fused FP8 kernels on the CPU, and exact keeps its float fusions out, "
                                        "so the graph runs as the fake-quant reference computes it (docs/fp8.md)")
    if cpu.int8_dot_product:
        return without_rewrite(*choose_mode(cpu, quantized))
    onnx.load_external_data_for_model(model, str(onnx_path.parent))  # integer_gemm_operand_bits reads the weights
    bits = onnx_graph.integer_gemm_operand_bits(model)
    chosen, reason = choose_mode(cpu, quantized, bits) if mode == "auto" else (mode, "chosen with --ort-mode")
    unsigned = chosen == "fast" and unsigned_operands(cpu, bits)
    if unsigned:
        reason += "; no VNNI/AMX: Q/DQ stored as uint8 (the same values) so that the fused GEMMs take the exact u8u8 kernels"
    return Plan(chosen, reason, unsigned)


def build(onnx_path: str | Path, engine_path: str | Path, mode: str = "auto") -> dict[str, Any]:
    """Optimise ``onnx_path`` for this machine in ``mode`` (exact, fast or auto) and save it to
    ``engine_path`` with a sidecar recording the mode, why it was chosen, whether the Q/DQ were
    stored unsigned, and the CPU (a fast engine holds fusions and operand types chosen for this
    CPU's instruction set)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    requested = mode
    plan = resolve_mode(onnx_path, mode)
    with atomic_path(engine_path) as tmp:
        options = session_options(plan.mode)
        options.optimized_model_filepath = str(tmp)
        try:
            source = onnx.load(str(onnx_path))
        except Exception as error:  # protobuf DecodeError and friends
            raise SwinTrtError(f"{onnx_path}: not an ONNX model ({error})") from None
        if plan.mode == "fast":  # exact keeps the graph's own arithmetic: no contrib fusions
            source = fast_source(source, plan.unsigned)
        try:
            ort.InferenceSession(source.SerializeToString(), options, providers=providers())
        except Exception as error:  # onnxruntime raises its own Fail / InvalidGraph types
            raise SwinTrtError(f"{onnx_path}: onnxruntime cannot load it ({str(error).splitlines()[0]})") from None
        optimized = onnx.load(str(tmp))
        passes = onnx_fuse.engine_passes(optimized, plan.mode)
        onnx.save(optimized, str(tmp))
    details = {
        "engine": str(engine_path),
        "backend": "onnxruntime",
        "ort_mode": plan.mode,
        "ort_mode_requested": requested,
        "ort_mode_reason": plan.reason,
        "unsigned_operands": plan.unsigned,
        "engine_passes": passes,
        "cpu": read_cpu().as_json(),
        "providers": providers(),
        **source_record(onnx_path),
        "versions": package_versions(),
    }
    return write_sidecar(engine_path, details)


def fast_source(model, unsigned: bool):
    """The graph a fast engine is optimised from: onnxruntime's contrib fusions, and uint8 Q/DQ where :func:`unsigned_operands` says so."""
    if unsigned:
        onnx_fuse.unsigned_int8_operands(model)
    return onnx_fuse.onnxruntime_fusions(model)


class Engine:
    """Runs a built engine (the sidecar says how it was optimised) on the CPU, any batch size."""

    batch_range = (1, None)

    def __init__(self, engine_path: str | Path, threads: int | None = None):
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise SwinTrtError(f"engine not found: {engine_path} (make one with `swin-trt build`)")
        self.details = read_sidecar(engine_path) or {"ort_mode": "exact"}
        options = session_options(self.details.get("ort_mode", "exact"), threads)
        self.session = ort.InferenceSession(str(engine_path), options, providers=providers())
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]

    def run(self, images):
        """Logits as a CPU torch tensor for a torch batch on any device (a CPU float32 batch is not copied)."""
        return torch.from_numpy(self(images.cpu().numpy()))


def intermediate_outputs(onnx_path: str | Path, names: list[str], details: dict[str, Any]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A runner of the source graph, in the engine's mode, with the tensors ``names`` exposed as
    outputs: ``runner(images) -> {name: float32 array}``.

    onnxruntime does not fuse a Q/DQ node whose tensor is a graph output, so in fast mode this
    measures the graph's own arithmetic (scales, placement), not the fused kernels' rounding.
    """
    model = onnx.load(str(onnx_path))
    if details.get("unsigned_operands"):  # as the engine stores them (the exposed DequantizeLinear outputs are the same floats)
        onnx_fuse.unsigned_int8_operands(model)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    typed = {info.name: info for info in (*inferred.value_info, *inferred.output)}
    missing = [name for name in names if name not in typed]
    if missing:
        raise SwinTrtError(f"{onnx_path}: no tensor {missing[0]!r} to expose (re-export the graph with this version)")
    present = {output.name for output in model.graph.output}
    model.graph.output.extend(typed[name] for name in names if name not in present)
    session = ort.InferenceSession(model.SerializeToString(), session_options(details.get("ort_mode", "exact")), providers=providers())
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = session.run(names, {input_name: np.ascontiguousarray(images, dtype=np.float32)})
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(names, outputs)}

    return run
