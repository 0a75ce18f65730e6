"""Training: FP32 teacher, Phase-1 distillation and Phase-2 recovery (SPEC section 3)."""
from __future__ import annotations

from ftervit.training.config import TrainConfig, build_config
from ftervit.training.losses import distillation_kl
from ftervit.training.trainer import train

__all__ = ["TrainConfig", "build_config", "distillation_kl", "train"]
