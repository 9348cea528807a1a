"""The QAT loss: cross-entropy on the labels plus knowledge distillation from the FP teacher.

The reference (FasterTransformer's Swin quantization ``main.py``) adds
``scale * nn.KLDivLoss()(log_softmax(student / T), softmax(teacher / T))`` with T = 3 and
scale 10000. ``KLDivLoss()``'s default reduction averages over images *and* classes, so its
value is the per-image KL divergence divided by the number of classes C; there is no T².
:class:`DistillationLoss` computes the per-image KL divergence averaged over images (the
"batchmean" that torch documents as the true KL) and multiplies it by ``scale / C``, which is
the reference's loss exactly, for any C: ``--distillation-loss-scale 10000`` means what it
meant there (on ImageNet-1k: 10 x batch-mean KL, about 1.1 T² at T = 3).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class DistillationLoss(nn.Module):
    """``scale / C * KL(p_teacher || p_student)`` on temperature-``T`` softmaxes, averaged over images."""

    def __init__(self, scale: float, temperature: float, num_classes: int):
        super().__init__()
        self.scale = scale
        self.temperature = temperature
        self.num_classes = num_classes

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        log_student = F.log_softmax(student_logits.float() / self.temperature, dim=1)
        log_teacher = F.log_softmax(teacher_logits.float() / self.temperature, dim=1)
        kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
        return kl * (self.scale / self.num_classes)


class StudentTeacherLoss:
    """``criterion(student, targets)`` plus, with a teacher, the distillation term on the same
    (augmented, mixed) images. The teacher runs without gradients; it must be in eval mode."""

    def __init__(
        self,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        teacher: nn.Module | None = None,
        distillation: DistillationLoss | None = None,
    ):
        if (teacher is None) != (distillation is None):
            raise ValueError("a teacher and a distillation loss go together")
        self.criterion = criterion
        self.teacher = teacher
        self.distillation = distillation

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        loss = self.criterion(logits, targets)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            loss = loss + self.distillation(logits, teacher_logits)
        return loss
