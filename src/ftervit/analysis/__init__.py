"""Analyses of ternary models: parameter and byte breakdowns, importance, weights, fidelity, rollout.

:func:`analyze` runs the paper's four analyses (``ftervit analyze``) on models in memory; the
pieces are importable on their own.
"""
from __future__ import annotations

from ftervit.analysis.fidelity import fidelity
from ftervit.analysis.importance import importance, tensor_scores
from ftervit.analysis.report import ANALYSES, analyze
from ftervit.analysis.rollout import attention_rollout
from ftervit.analysis.rollout_compare import compare_rollout, map_agreement
from ftervit.analysis.weights import ftv_weight_counts, weight_counts

__all__ = ["ANALYSES", "analyze", "attention_rollout", "compare_rollout", "fidelity", "ftv_weight_counts",
           "importance", "map_agreement", "tensor_scores", "weight_counts"]
