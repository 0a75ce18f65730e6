"""Losses: forward KL distillation on logits (SPEC section 3) and label-smoothed cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL(teacher || student) of the softened distributions, averaged over the batch.

    Scaled by ``T**2`` so that gradient magnitudes do not shrink as the temperature grows
    (Hinton et al. 2015). Logits only, no cross-entropy term: CE conflicts with KL in low-bit
    networks (SPEC section 3). Computed in FP32 whatever the autocast dtype.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy in FP32 with optional label smoothing (teacher training)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
