"""Settings of the training and calibration workflows, as plain data.

Kept free of torch so that building the CLI (``swin-trt --help``) stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# How activation statistics are collected and read (``calibrate --histogram``): swin-trt's own
# batch-independent histogram, or a reproduction of pytorch-quantization's HistogramCalibrator.
HISTOGRAMS = ("native", "pytorch-quantization")


@dataclass(frozen=True)
class TrainRecipe:
    """AdamW with a one-cycle schedule; the defaults train ``swin_micro`` on digits."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    clip_grad: float = 5.0
    seed: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationRequest:
    """What `swin-trt calibrate` was asked to do (the seed's flags and ours)."""

    int8_mode: str = "1"
    calibrator: str = "percentile"
    percentile: float = 99.99
    histogram: str = "native"
    per_channel_weights: bool = True
    num_calib_batch: int = 10
    calib_batchsz: int = 8
    calib_transform: str = "train"
    seed: int = 0
    weight_bits: int = 8  # --wprec: fake-quant weights to [-2**(n-1), 2**(n-1) - 1]
    activation_bits: int = 8  # --aprec
