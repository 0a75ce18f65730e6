"""Top-1/top-5 accuracy and mean cross-entropy over a data loader."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many targets are among the top-k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
    hits = top == targets.unsqueeze(-1)
    return [int(hits[:, :k].any(dim=-1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu", amp: bool = False) -> dict[str, float]:
    """Top-1, top-5 (fractions) and mean cross-entropy of ``model`` over ``loader``.

    Under torch.distributed each process passes its own shard; the sums are all-reduced so
    every process returns the metrics of the whole set.
    """
    model.eval()
    device = torch.device(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, loss sum, count
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images).float()
        top1, top5 = topk_correct(logits, targets)
        sums += torch.tensor([top1, top5, F.cross_entropy(logits, targets, reduction="sum").item(), len(targets)],
                             dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    n = max(sums[3].item(), 1.0)
    return {"top1": sums[0].item() / n, "top5": sums[1].item() / n, "loss": sums[2].item() / n, "n": int(sums[3].item())}
