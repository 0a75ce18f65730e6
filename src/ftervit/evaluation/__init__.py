"""Evaluation: top-k accuracy of a model on a data loader (DDP-aware) and of checkpoints."""
from __future__ import annotations

from ftervit.evaluation.checkpoints import evaluate_checkpoints
from ftervit.evaluation.metrics import evaluate, topk_correct

__all__ = ["evaluate", "evaluate_checkpoints", "topk_correct"]
