"""The models of a run: the FP32 teacher and its ternary student, with checked weights."""
from __future__ import annotations

import copy
from typing import Any

import torch.nn as nn

from ftervit.conversion import make_ternary
from ftervit.factory import create_teacher, create_timm_model, load_weights
from ftervit.layers import BitLinear
from ftervit.training.config import TEACHER_PRETRAINED, TrainConfig


def build_models(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, nn.Module | None]:
    """``(trainable model, frozen teacher or None)`` for ``cfg``.

    Teacher mode trains an FP32 model (random, timm-pretrained or ``--init``). Distillation
    converts the teacher's weights with ``make_ternary`` (Phase 1), then optionally loads
    ``--init`` into the student (Phase 2, or continuing Phase 1 from a checkpoint).
    """
    kwargs: dict[str, Any] = {"drop_path_rate": cfg.drop_path}
    if cfg.img_size:
        kwargs["img_size"] = cfg.img_size
    if cfg.mode == "teacher":
        model = create_timm_model(cfg.model, pretrained=cfg.pretrained, num_classes=num_classes, **kwargs)
        if cfg.init:
            load_weights(model, cfg.init, num_classes, f"FP32 --init checkpoint for {cfg.model}")
        return model.train(), None
    teacher = create_teacher(cfg.model, None if cfg.teacher == TEACHER_PRETRAINED else cfg.teacher,
                             num_classes, **kwargs)
    student = make_ternary(copy.deepcopy(teacher)).train().requires_grad_(True)
    for module in student.modules():
        if isinstance(module, BitLinear) and module.bias is not None:
            # Saved but never added (SPEC section 2): frozen, so DDP does not wait for its gradient.
            module.bias.requires_grad_(False)
    if cfg.init:
        load_weights(student, cfg.init, num_classes, f"ternary --init checkpoint for {cfg.model}")
    return student, teacher
