"""Knowledge distillation: loss and frozen teachers.

SPEC section 3 (ImageNet) trains with the KL divergence between the
student's and a frozen teacher's softmax at temperature T (1 by default) and
no label loss. ``alpha`` mixes in cross-entropy with the labels:

    loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_teacher || p_student)

The T^2 factor keeps the gradient scale independent of T (Hinton et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FracBNNError
from ..models.teachers import FrozenModel


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
                      ) -> torch.Tensor:
    """Mean over the batch of T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


class TrainingLoss(nn.Module):
    """Cross-entropy, optionally mixed with distillation from a teacher."""

    def __init__(self, teacher: nn.Module | None = None, alpha: float = 0.0, temperature: float = 1.0):
        super().__init__()
        self.teacher = teacher
        self.alpha = float(alpha) if teacher is not None else 1.0
        self.temperature = float(temperature)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.alpha > 0:
            loss = loss + self.alpha * F.cross_entropy(logits.float(), labels)
        if self.teacher is not None and self.alpha < 1:
            self.teacher.eval()  # never let a .train() call switch its BatchNorm to batch statistics
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            loss = loss + (1 - self.alpha) * distillation_loss(logits, teacher_logits, self.temperature)
        return loss


def build_teacher(spec: dict | None, device: torch.device) -> nn.Module | None:
    """``{checkpoint: PATH}`` (a fracbnn checkpoint) or ``{torchvision: NAME, weights: PATH|null}``."""
    if not spec:
        return None
    if spec.get("checkpoint"):
        from ..checkpoint import model_from_checkpoint

        teacher = FrozenModel(model_from_checkpoint(spec["checkpoint"]))
    elif spec.get("torchvision"):
        try:
            from ..models.teachers import torchvision_teacher
        except ImportError as e:
            raise FracBNNError(f"torchvision teachers are unavailable in this installation ({e})") from None
        teacher = torchvision_teacher(spec["torchvision"], spec.get("weights"))
    else:
        raise FracBNNError("distill.teacher needs 'checkpoint: PATH' or 'torchvision: NAME'")
    teacher = teacher.to(device)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
