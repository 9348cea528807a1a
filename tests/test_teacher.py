"""The distillation teacher in onnxruntime on the CPU (``swin_trt.loops.teacher``)."""

from __future__ import annotations

import pytest
import torch

from swin_trt.errors import SwinTrtError
from swin_trt.loops.teacher import OnnxruntimeTeacher, choose_teacher_runtime
from swin_trt.models.swin import build_model
from swin_trt.models.zoo import get_config


def test_auto_runs_the_teacher_in_onnxruntime_on_the_cpu_only():
    assert choose_teacher_runtime("auto", "cpu") == "onnxruntime"
    assert choose_teacher_runtime("auto", "cuda:0") == "torch"
    assert choose_teacher_runtime("torch", "cpu") == "torch"
    with pytest.raises(SwinTrtError, match="--teacher-runtime torch"):
        choose_teacher_runtime("onnxruntime", "cuda")
    with pytest.raises(SwinTrtError, match="unknown --teacher-runtime"):
        choose_teacher_runtime("tensorrt", "cpu")


def test_onnxruntime_teacher_computes_the_torch_teachers_logits_and_leaves_the_random_stream_alone():
    torch.manual_seed(0)
    model = build_model(get_config("swin_micro")).eval()
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
    state = torch.get_rng_state()
    teacher = OnnxruntimeTeacher(model, threads=2)
    assert torch.equal(torch.get_rng_state(), state)  # the export's example batch came from a forked generator
    logits = teacher(images)
    assert logits.dtype == torch.float32 and logits.shape == expected.shape and not logits.requires_grad
    # the same float32 function: only summation order differs (measured 4e-7 on Swin-T logits of magnitude 0.8)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(teacher(images.flip(0)), expected, atol=1e-3)  # it does read its input
