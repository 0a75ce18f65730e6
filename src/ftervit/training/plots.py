"""Training curves (loss, accuracy, learning rate per epoch) as one PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from ftervit.fileio import save_figure  # noqa: E402


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Three panels from the per-epoch records of ``log.jsonl``: loss, accuracy, lr."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train (objective)")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="val (cross-entropy)")
    ax_loss.set_title("loss")
    ax_acc.plot(epochs, [h["train_top1"] for h in history], label="train top-1")
    ax_acc.plot(epochs, [h["val_top1"] for h in history], label="val top-1")
    ax_acc.plot(epochs, [h["val_top5"] for h in history], label="val top-5")
    ax_acc.set_title("accuracy")
    ax_lr.plot(epochs, [h["lr"] for h in history])
    ax_lr.set_title("learning rate (end of epoch)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
