"""IEEE float32 on CUDA where numbers are compared: TF32 off.

TF32 (on by default for cuDNN convolutions on Ampere and newer, and for matmuls where a caller
enabled it) rounds operands to 10 mantissa bits. That moves an FP32 reference by more than the
parity gate's bounds, and it moves calibration: the amax is a percentile of a 2048-bin histogram
of activations, so a TF32 rounding that shifts one activation across a bin edge changes the amax
by a whole bin (1/2048 of the histogram's range: more than 1e-3 of the amax wherever the
percentile lies below half the range), past the 1e-3 at which ``benchmarks/gpu_check.sh``
compares CUDA and CPU calibrations. Calibration, fake-quant and FP32
evaluation and the parity references therefore run in exact float32; the CPU never uses TF32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for CUDA matmuls and cuDNN inside the block; the previous settings restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
