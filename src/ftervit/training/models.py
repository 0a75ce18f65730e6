"""The models of a run: the FP32 teacher and its ternary student, with checked weights."""
from __future__ import annotations

import copy
from typing import Any

import torch.nn as nn

from ftervit.conversion import convert
from ftervit.errors import CheckpointError
from ftervit.factory import create_teacher, create_timm_model, load_weights, student_recipe
from ftervit.layers import BitLinear
from ftervit.training.config import TEACHER_PRETRAINED, TrainConfig


def build_models(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, nn.Module | None]:
    """``(trainable model, frozen teacher or None)`` for ``cfg``.

    Teacher mode trains an FP32 model (random, timm-pretrained or ``--init``). Distillation
    converts the teacher's weights into the student of ``cfg.recipe`` (``make_ternary`` by
    default; Phase 1), then optionally loads ``--init`` into the student (Phase 2, continuing
    Phase 1 from a checkpoint, or TerViT's second stage from an int8 student).
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
    student = convert(copy.deepcopy(teacher), cfg.recipe).train().requires_grad_(True)
    for module in student.modules():
        if isinstance(module, BitLinear) and module.bias is not None:
            # Saved but never added (SPEC section 2): frozen, so DDP does not wait for its gradient.
            module.bias.requires_grad_(False)
    if cfg.init:
        try:
            load_weights(student, cfg.init, num_classes, f"ternary --init checkpoint for {cfg.model}")
        except CheckpointError as exc:
            init = student_recipe(cfg.init)
            if init == cfg.recipe:
                raise
            raise CheckpointError(f"{exc}; it was trained with {init.flags}, this run uses {cfg.recipe.flags}") from exc
    return student, teacher
