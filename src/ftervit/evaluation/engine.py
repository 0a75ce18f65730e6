"""The C engine on a test split beside the PyTorch model it was exported from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset
from tqdm import tqdm

from ftervit.data import eval_loader
from ftervit.errors import FtervitError
from ftervit.evaluation.checkpoints import load_test_split_and_student
from ftervit.evaluation.metrics import topk_correct


def evaluate_engine(
    model: str,
    checkpoint: str | Path,
    engine_file: str | Path,
    data: str,
    data_dir: str | Path | None = None,
    img_size: int | None = None,
    batch_size: int = 256,
    threads: int = 1,
    download: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the .ftv ``engine_file`` and the ternary ``checkpoint`` on the test split of ``data``.

    Both see the same normalized images. Agreement is the fraction of images on which the
    engine's top-1 class equals PyTorch's; ``max_rel_diff`` and ``median_rel_diff`` are over
    images of max |engine - torch| / max |torch| of the logits.

    Returns:
        ``{"data", "n", "engine": {"top1", "top5"}, "ternary": {"top1", "top5"}, "agreement",
        "max_rel_diff", "median_rel_diff", "arena_bytes", "kernels", "numerics"}``, accuracies as fractions.

    Raises:
        FtervitError: unknown dataset, missing files, a checkpoint or engine file that does not
            fit the data (class count, input shape).
    """
    splits, student = load_test_split_and_student(model, checkpoint, data, data_dir, img_size, download,
                                                  ftervit_only=True)
    return compare_engine(student, engine_file, splits.test, data, batch_size, threads, progress)


@torch.no_grad()
def compare_engine(
    student: nn.Module,
    engine_file: str | Path,
    dataset: Dataset,
    data: str = "data",
    batch_size: int = 256,
    threads: int = 1,
    progress: bool = False,
    numerics: str = "exact",
) -> dict[str, Any]:
    """:func:`evaluate_engine` on a ternary model and a dataset already built; ``numerics``: the
    engine's float arithmetic (``Engine(numerics=...)``)."""
    from ftervit.engine import Engine

    student.eval()
    with Engine(engine_file, threads=threads, numerics=numerics) as engine:
        if engine.num_classes != student.num_classes:
            raise FtervitError(f"{engine_file} has {engine.num_classes} classes but the model of {data} has "
                               f"{student.num_classes}; export the model trained on this dataset")
        shape = tuple(dataset[0][0].shape) if len(dataset) else engine.input_shape
        if shape != engine.input_shape:  # checked before the progress bar starts
            raise FtervitError(f"{engine_file} takes images {engine.input_shape} but {data} gives "
                               f"{shape}; export with the same --img-size")
        hits = np.zeros((2, 2), dtype=np.int64)  # (engine, torch) x (top-1, top-5)
        agree, rel = 0, []
        for images, targets in tqdm(eval_loader(dataset, batch_size), desc="engine", unit="batch",
                                    disable=not progress):
            ours = torch.from_numpy(engine.forward(images.numpy()))
            ref = student(images).float()
            hits[0] += topk_correct(ours, targets)
            hits[1] += topk_correct(ref, targets)
            agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
            rel.append(((ours - ref).abs().amax(-1) / ref.abs().amax(-1).clamp_min(1e-12)).numpy())
        arena, kernels, numerics = engine.arena_bytes, engine.kernels, engine.numerics
    n = len(dataset)
    rel_all = np.concatenate(rel) if rel else np.zeros(1)
    return {
        "data": data, "n": n,
        "engine": {"top1": float(hits[0, 0] / n), "top5": float(hits[0, 1] / n)},
        "ternary": {"top1": float(hits[1, 0] / n), "top5": float(hits[1, 1] / n)},
        "agreement": agree / n,
        "max_rel_diff": float(rel_all.max()), "median_rel_diff": float(np.median(rel_all)),
        "arena_bytes": arena, "kernels": kernels, "numerics": numerics,
    }
