"""Calibration and evaluation run with TF32 off (exact float32 on CUDA), and give the caller's
settings back. CPU-runnable: the flags are torch's global switches, read by a probe module during
the forward passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from swin_trt.distributed import DistContext
from swin_trt.float32 import exact_float32
from swin_trt.loops.evaluate import evaluate
from swin_trt.quantization.calibrate import collect_statistics


class _Probe(nn.Module):
    """Records both TF32 switches at every forward pass; returns 10 logits."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []
        self.linear = nn.Linear(4, 10)

    def forward(self, x):
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return self.linear(x)


@pytest.fixture
def tf32_on():
    """TF32 on, as a caller (or the cuDNN default) may have it; the test's settings restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _loader():
    return DataLoader(TensorDataset(torch.randn(6, 4), torch.arange(6) % 10), batch_size=2)


def test_calibration_and_evaluation_run_without_tf32(tf32_on):
    probe = _Probe()
    collect_statistics(probe, _loader(), 2, DistContext())
    evaluate(probe, _loader(), DistContext())
    assert probe.seen == [(False, False)] * 5  # 2 calibration batches, 3 evaluation batches
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)


def test_settings_come_back_after_an_error(tf32_on):
    with pytest.raises(RuntimeError, match="stop"), exact_float32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        raise RuntimeError("stop")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
