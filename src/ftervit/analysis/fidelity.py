"""How faithfully a ternary student keeps its FP32 teacher's features (the paper's Figure 3).

The same images go through both models. Compared: the patch embedding's output token by token,
the residual stream after every block (class token and patch tokens apart), each LayerNorm's
gamma and beta (the teacher's FP32 values against the student's dequantized ternary ones), and
the logits (cosine, top-1 agreement, KL(teacher || student)).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ftervit.layers import TernaryLayerNorm
from ftervit.quantization import ternary_absmean
from ftervit.training.losses import distillation_kl

__all__ = ["fidelity", "mean_std"]

HISTOGRAM_BINS = 40


def mean_std(values: np.ndarray | Sequence[float]) -> dict[str, float]:
    """``{"mean", "std"}`` (population std) of the values."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std())}


@contextlib.contextmanager
def _record(model: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Capture the patch embedding's output and every block's output on each forward pass."""
    seen: dict[str, list[torch.Tensor]] = {"patch_embed": [], "blocks": []}
    hooks = [model.patch_embed.register_forward_hook(lambda _m, _i, out: seen["patch_embed"].append(out))]
    hooks += [b.register_forward_hook(lambda _m, _i, out: seen["blocks"].append(out)) for b in model.blocks]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


def _layernorm_cosines(teacher: nn.Module, student: nn.Module) -> list[dict]:
    """Per LayerNorm: cosine of the teacher's gamma (beta) and the student's dequantized ternary one."""
    fp32 = dict(teacher.named_modules())
    rows = []
    for name, m in student.named_modules():
        if not isinstance(m, TernaryLayerNorm) or m.weight is None:
            continue
        row = {"name": name}
        for key, attr in (("gamma_cosine", "weight"), ("beta_cosine", "bias")):
            ours = getattr(m, attr)
            if ours is not None:
                codes, scale = ternary_absmean(ours.detach().float())
                theirs = getattr(fp32[name], attr).detach().float()
                row[key] = float(_cosine(theirs, codes / scale))
        rows.append(row)
    return rows


@torch.no_grad()
def fidelity(
    teacher: nn.Module,
    student: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    progress: bool = False,
) -> dict:
    """Teacher against student on ``batches`` of ``(images, labels)``.

    Returns:
        ``{"images", "patch_embed": {"mean", "std", "histogram"}, "blocks": [{"block",
        "class_token": {"mean", "std"} | None, "patch_tokens": {...}}], "layernorm": {"layers":
        [{"name", "gamma_cosine", "beta_cosine"}], "gamma": {"mean", "std"}, "beta": {...}},
        "logits": {"cosine": {...}, "top1_agreement", "kl", "teacher_top1", "student_top1"}}``.
        Cosines are per token (per image for the logits); ``kl`` is the mean over images.
    """
    teacher.eval()
    student.eval()
    prefix = student.num_prefix_tokens
    has_cls = getattr(student, "cls_token", None) is not None
    patch, cls_cos, patch_cos, logit_cos = [], [], [], []
    agree = kl = hits_t = hits_s = n = 0.0
    with _record(teacher) as t_seen, _record(student) as s_seen:
        for images, labels in tqdm(batches, desc="fidelity", unit="batch", leave=False, disable=not progress):
            t_logits, s_logits = teacher(images).float(), student(images).float()
            patch.append(_cosine(t_seen["patch_embed"].pop(), s_seen["patch_embed"].pop()).flatten())
            blocks = [_cosine(a, b) for a, b in zip(t_seen["blocks"], s_seen["blocks"])]
            t_seen["blocks"].clear()
            s_seen["blocks"].clear()
            cls_cos.append(torch.stack([c[:, 0] for c in blocks]) if has_cls else None)
            patch_cos.append(torch.stack([c[:, prefix:].flatten() for c in blocks]))
            logit_cos.append(_cosine(t_logits, s_logits))
            m = len(labels)
            agree += float((t_logits.argmax(-1) == s_logits.argmax(-1)).sum())
            hits_t += float((t_logits.argmax(-1) == labels).sum())
            hits_s += float((s_logits.argmax(-1) == labels).sum())
            kl += float(distillation_kl(s_logits, t_logits)) * m
            n += m
    patch_all = torch.cat(patch).cpu().numpy()
    patch_by_block = torch.cat(patch_cos, dim=1).cpu().numpy()
    cls_by_block = torch.cat(cls_cos, dim=1).cpu().numpy() if has_cls else None
    low = min(0.9, np.floor(patch_all.min() * 10) / 10)  # fine bins where the cosines lie
    counts, edges = np.histogram(patch_all, bins=HISTOGRAM_BINS, range=(low, 1.0))
    norms = _layernorm_cosines(teacher, student)
    return {
        "images": int(n),
        "patch_embed": {**mean_std(patch_all), "tokens": int(patch_all.size),
                        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}},
        "blocks": [{"block": i, "class_token": mean_std(cls_by_block[i]) if has_cls else None,
                    "patch_tokens": mean_std(patch_by_block[i])} for i in range(len(patch_by_block))],
        "layernorm": {
            "layers": norms,
            "gamma": mean_std([r["gamma_cosine"] for r in norms if "gamma_cosine" in r]) if norms else None,
            "beta": mean_std([r["beta_cosine"] for r in norms if "beta_cosine" in r]) if norms else None,
        },
        "logits": {"cosine": mean_std(torch.cat(logit_cos).cpu().numpy()), "top1_agreement": agree / n,
                   "kl": kl / n, "teacher_top1": hits_t / n, "student_top1": hits_s / n},
    }
