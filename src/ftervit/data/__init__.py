"""Datasets and transforms for training and evaluation; normalization follows the model."""
from __future__ import annotations

from ftervit.data.datasets import DATASETS, DataSplits, build_data, eval_loader
from ftervit.data.transforms import model_data_config

__all__ = ["DATASETS", "DataSplits", "build_data", "eval_loader", "model_data_config"]
