"""Evaluation: top-k accuracy of a model on a data loader (DDP-aware), of checkpoints and of the C engine."""
from __future__ import annotations

from ftervit.evaluation.checkpoints import evaluate_checkpoints
from ftervit.evaluation.engine import evaluate_engine
from ftervit.evaluation.metrics import evaluate, topk_correct

__all__ = ["evaluate", "evaluate_checkpoints", "evaluate_engine", "topk_correct"]
