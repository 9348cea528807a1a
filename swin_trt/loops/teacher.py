"""The FP teacher of distillation, run where its forward is cheapest.

A distillation step is a QAT step plus the teacher's forward, and on the CPU torch's forward is
the slow part of it: 0.72 s of a 2.84 s step (Swin-T, batch 8, 2 threads, the Zen 5 VNNI EPYC; 40 %
of an FP32 training step, which put distillation at 1.62x the FP32 step, docs/qat.md). onnxruntime
runs the same FP32 graph in 0.43 s where torch takes 0.62 s (interleaved, same machine). So on the
CPU the teacher is exported once (seconds; Swin-T 16 s) and run by onnxruntime. It stays exact in
the sense that matters for a teacher: float32 throughout, the same function, no reduced precision;
its logits differ from torch's by float summation order only (Swin-T: max |diff| 4e-7 on logits of
magnitude 0.8). Its threads do not spin after a call (``allow_spinning`` off), so they leave the
cores to the student's backward that follows. On a GPU torch's forward is already cheap and stays.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from swin_trt.errors import SwinTrtError
from swin_trt.lazy import lazy_import

torch = lazy_import("torch")
ort = lazy_import("onnxruntime")
onnx_export = lazy_import("swin_trt.onnx.export")
ort_runtime = lazy_import("swin_trt.runtimes.onnxruntime")

TEACHER_RUNTIMES = ("auto", "torch", "onnxruntime")


def choose_teacher_runtime(requested: str, device) -> str:
    """``--teacher-runtime``: ``auto`` is onnxruntime on the CPU and torch elsewhere."""
    if requested not in TEACHER_RUNTIMES:
        raise SwinTrtError(f"unknown --teacher-runtime {requested!r}; choose {', '.join(TEACHER_RUNTIMES)}")
    on_cpu = torch.device(device).type == "cpu"
    if requested == "onnxruntime" and not on_cpu:
        raise SwinTrtError(f"--teacher-runtime onnxruntime runs the teacher on the CPU, and this run trains on {device}: "
                           "use --teacher-runtime torch (or auto)")
    if requested == "auto":
        return "onnxruntime" if on_cpu else "torch"
    return requested


class OnnxruntimeTeacher:
    """``teacher(images) -> logits`` for a CPU float32 batch, by onnxruntime on the teacher's FP32 graph."""

    def __init__(self, model, threads: int):
        # the export traces a random example batch: drawn from a forked generator, the run's own random stream stays as it was
        with tempfile.TemporaryDirectory(prefix="swin-trt-teacher-") as folder, torch.random.fork_rng():
            graph = onnx_export.save_onnx(onnx_export.export_onnx(model.eval()), Path(folder) / "teacher.onnx")
            options = ort_runtime.session_options("fast", threads)  # a graph without Q/DQ: fast is onnxruntime's float fusions only
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])  # read whole: the folder may go
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images):
        batch = images.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: batch})[0])
