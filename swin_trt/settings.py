"""Settings of the training and calibration workflows, as plain data.

Kept free of torch so that building the CLI (``swin-trt --help``) stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# How activation statistics are collected and read (``calibrate --histogram``): swin-trt's own
# batch-independent histogram, or a reproduction of pytorch-quantization's HistogramCalibrator.
HISTOGRAMS = ("native", "pytorch-quantization")
# What a quantizer rounds to (``calibrate/qat --format``): signed integers, or FP8 E4M3
# (swin_trt.quantization.quantizer.FORMATS; repeated here to keep the CLI free of torch).
FORMATS = ("int8", "fp8")
FP8_DEFAULT_CALIBRATOR = "max"  # what FP8 recipes (NVIDIA Model Optimizer's among them) use; see docs/fp8.md

# Low-bit PTQ methods (``calibrate --ptq-method``, docs/lowbit.md), in the order they run when
# combined: the first two transform the FP weights before quantizers are inserted, the last three
# work on the calibrated model block by block. Kept here (torch-free) for ``--help``.
PTQ_METHODS = ("smoothquant", "ln-reparam", "adaround", "qwt", "bias-correction")


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
    format: str = "int8"  # --format: int8 or fp8 (E4M3, scale = amax / 448)
    ptq_methods: tuple[str, ...] = ()  # --ptq-method, in PTQ_METHODS order
    ptq_iters: int = 200  # --ptq-iters: adaround's optimisation steps per block


@dataclass(frozen=True)
class FallbackRequest:
    """`calibrate --auto-fallback`: keep the fewest quantizer groups in higher precision so that the
    fake-quant top-1 drop against FP32 on ``images`` held-out train images is at most ``max_drop`` pt."""

    max_drop: float = 0.3
    images: int = 1000
    ranking_images: int = 256  # the first of ``images``, on which the groups are ranked by KL
    granularity: str = "quantizer"  # see swin_trt.quantization.sensitivity.GRANULARITIES
    batch_size: int = 128


@dataclass(frozen=True)
class QatRecipe:
    """How `swin-trt qat` fine-tunes a calibrated model; every field changes the result, so a
    run resumes only under the recipe it started with.

    The learning rate follows the reference's linear scaling rule: the peak LR is
    ``qat_lr * batch_size * world_size / 512``. ``lr_schedule="constant"`` holds it for every
    step, which is what the reference did (its scheduler was built but never stepped, so the LR
    stayed at its initial warm-up value, ``qat_lr`` scaled); ``"cosine"`` warms up linearly over
    ``warmup_fraction`` of the steps and decays to ``min_lr_ratio`` of the peak.
    """

    epochs: int = 3
    batch_size: int = 64  # per process
    qat_lr: float = 1e-5
    lr_schedule: str = "cosine"
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.05
    clip_grad: float = 5.0
    distill: bool = False
    distillation_loss_scale: float = 10000.0  # the reference's units: KL averaged over images x classes
    temperature: float = 3.0
    mixup: bool = True  # the config's AUG.MIXUP / CUTMIX / MODEL.LABEL_SMOOTHING; False: plain labels with label smoothing
    learn_amax: bool = False
    selection_images: int = 1000  # held-out train images that pick the best epoch (0 = keep the last, as before)
    selection_alpha: float = 0.05  # an epoch replaces the kept one only when better on them by a one-sided sign test at p < this
    weight_bits: int | None = None  # None: the calibrated checkpoint's precision
    activation_bits: int | None = None
    seed: int = 0

    def peak_lr(self, world_size: int) -> float:
        return self.qat_lr * self.batch_size * world_size / 512.0

    def as_dict(self) -> dict[str, float | int | str | bool]:
        return asdict(self)
