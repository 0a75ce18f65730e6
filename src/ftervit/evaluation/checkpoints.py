"""Top-1/top-5 of a ternary checkpoint on a dataset's test split, its FP32 teacher beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from ftervit.data import DataSplits, build_data, eval_loader, model_data_config
from ftervit.device import resolve_device
from ftervit.evaluation.metrics import evaluate
from ftervit.conversion import convert
from ftervit.factory import create_teacher, create_timm_model, load_weights, student_recipe


def evaluate_checkpoints(
    model: str,
    checkpoint: str | Path,
    data: str,
    teacher: str | Path | None = None,
    data_dir: str | Path | None = None,
    img_size: int | None = None,
    batch_size: int = 256,
    workers: int = 0,
    device: str | None = None,
    download: bool = False,
) -> dict[str, Any]:
    """Evaluate the ternary ``checkpoint`` (and the FP32 ``teacher``) of architecture ``model``.

    The student is rebuilt with the recipe its checkpoint records (``ftervit distill
    --quant/--scope/--weight-scale``); plain state dicts are FTerViT students.

    Returns:
        ``{"data", "n", "ternary": {"top1", "top5", "loss"}, "teacher": {...} (when given)}``,
        accuracies as fractions.

    Raises:
        FtervitError: unknown dataset or model, missing files, a checkpoint with another class
            count or of another architecture.
    """
    dev = resolve_device(device)
    splits, student = load_test_split_and_student(model, checkpoint, data, data_dir, img_size, download)
    models = {"ternary": student}
    if teacher is not None:
        kwargs = {"img_size": img_size} if img_size else {}
        models["teacher"] = create_teacher(model, teacher, splits.num_classes, **kwargs)
    loader = eval_loader(splits.test, batch_size, workers)
    result: dict[str, Any] = {"data": data, "n": len(splits.test)}
    for name, m in models.items():
        metrics = evaluate(m.to(dev), loader, dev)
        result[name] = {k: metrics[k] for k in ("top1", "top5", "loss")}
    return result


def load_test_split_and_student(
    model: str,
    checkpoint: str | Path,
    data: str,
    data_dir: str | Path | None = None,
    img_size: int | None = None,
    download: bool = False,
    ftervit_only: bool = False,
) -> tuple[DataSplits, nn.Module]:
    """The test split of ``data`` (no training split) and the ternary ``checkpoint`` loaded strictly for it.

    The student is built with the recipe the checkpoint records; ``ftervit_only`` refuses
    any recipe but FTerViT's (the C engine runs no other).

    Raises:
        FtervitError: unknown dataset or model, missing files, a checkpoint with another class
            count or of another architecture (or recipe, with ``ftervit_only``).
    """
    recipe = student_recipe(checkpoint, ftervit_only)
    splits = build_data(data, model_data_config(model, img_size), data_dir, download=download, train=False)
    kwargs = {"img_size": img_size} if img_size else {}
    student = convert(create_timm_model(model, num_classes=splits.num_classes, **kwargs), recipe)
    load_weights(student, checkpoint, splits.num_classes, f"ternary checkpoint for {model}")
    return splits, student.eval()
