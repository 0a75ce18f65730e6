"""Where teacher and student look: their attention-rollout maps on the same images, compared."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ftervit.analysis.rollout import attention_rollout

__all__ = ["TOP_FRACTION", "map_agreement", "compare_rollout"]

TOP_FRACTION = 0.1  # the IoU compares each map's top 10% patches


def map_agreement(a: torch.Tensor, b: torch.Tensor, top: float = TOP_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Per map pair of ``(N, h, w)`` maps: cosine, and IoU of the ``ceil(top * h * w)`` highest patches."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    k = max(1, math.ceil(top * a.shape[1]))
    in_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(k, dim=1).indices, True)
    in_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(k, dim=1).indices, True)
    iou = (in_a & in_b).sum(1).double() / (in_a | in_b).sum(1).double()
    return F.cosine_similarity(a, b, dim=1), iou


@torch.no_grad()
def compare_rollout(teacher: nn.Module, student: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Rollout maps of both models on ``images`` (N, C, H, W), their cosine and top-10% IoU per image.

    Returns:
        ``{"grid", "top_fraction", "mean_cosine", "mean_iou", "images": [{"label", "teacher_pred",
        "student_pred", "cosine", "iou", "teacher_map", "student_map"}]}`` (maps as nested lists).

    Raises:
        FtervitError: a model without timm ViT attention blocks.
    """
    t_logits, t_maps = attention_rollout(teacher.eval(), images)
    s_logits, s_maps = attention_rollout(student.eval(), images)
    cos, iou = map_agreement(t_maps, s_maps)
    rows = [{"label": int(labels[i]), "teacher_pred": int(t_logits[i].argmax()),
             "student_pred": int(s_logits[i].argmax()), "cosine": float(cos[i]), "iou": float(iou[i]),
             "teacher_map": t_maps[i].cpu().tolist(), "student_map": s_maps[i].cpu().tolist()}
            for i in range(len(images))]
    return {"grid": list(t_maps.shape[1:]), "top_fraction": TOP_FRACTION,
            "mean_cosine": float(cos.mean()), "mean_iou": float(iou.mean()), "images": rows}
