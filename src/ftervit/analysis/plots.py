"""The analyses' figures: importance, weights, fidelity (the paper's Figure 3) and rollout."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ftervit.analysis.paper import PAPER
from ftervit.fileio import save_figure

__all__ = ["plot_importance", "plot_weights", "plot_fidelity", "plot_rollout"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_importance(result: dict, path: str | Path) -> None:
    """Per component, the share of parameters, Taylor importance and Hessian trace; one panel per model."""
    plt = _pyplot()
    models = [m for m in ("teacher", "student") if m in result]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.6), squeeze=False)
    for ax, name in zip(axes[0], models):
        r = result[name]
        comps = [c for c, v in r["components"].items() if v["params"]]
        x = np.arange(len(comps))
        total = r["hessian_trace"]
        for j, (key, label) in enumerate((("param_share", "parameters"), ("taylor_share", "Taylor"),
                                          ("hessian_share", "Hessian trace"))):
            values = [100 * r["components"][c][key] for c in comps]
            err = None
            if key == "hessian_share" and total:
                err = [100 * (r["components"][c]["hessian_stderr"] or 0) / abs(total) for c in comps]
            ax.bar(x + (j - 1) * 0.27, values, 0.27, yerr=err, capsize=2, label=label)
        ax.set_xticks(x, comps, rotation=30, ha="right")
        ax.set_ylabel("share (%)")
        ax.set_title(f"{name} ({r['loss']}), most important layer: {r['most_important_layer']}", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=8)
    p = PAPER["importance"]
    fig.suptitle(f"importance by component (paper, DeiT: LayerNorm < {100 * p['layernorm_param_share_below']:.1f}% "
                 f"of parameters, {100 * p['layernorm_taylor_share'][0]:.0f}-{100 * p['layernorm_taylor_share'][1]:.0f}% "
                 "of Taylor importance)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def plot_weights(result: dict, path: str | Path) -> None:
    """Left: -1/0/+1 shares per component with absmax's zero share; right: zero share per tensor."""
    plt = _pyplot()
    counts = result["model"] if "model" in result else result["ftv"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.6]})
    groups = {**counts["components"], "overall": counts["overall"]}
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for key, color in (("zero", "lightgrey"), ("minus", "tab:blue"), ("plus", "tab:red")):  # zeros from 0 up
        values = np.array([100 * g[key] / g["numel"] for g in groups.values()])
        ax.bar(x, values, 0.6, bottom=bottom, color=color, label={"minus": "-1", "zero": "0", "plus": "+1"}[key])
        bottom += values
    if all("absmax_zero_fraction" in g for g in groups.values()):
        ax.scatter(x, [100 * g["absmax_zero_fraction"] for g in groups.values()], marker="_", s=400,
                   color="black", zorder=3, label="zeros with absmax")
    ax.axhline(100 * PAPER["weights"]["zero_fraction"], color="black", ls=":", lw=1, label="paper: 37% zeros")
    ax.set_xticks(x, list(groups), rotation=30, ha="right")
    ax.set_ylabel("share of weights (%)")
    ax.set_title(f"ternary codes: {100 * counts['overall']['zero_fraction']:.1f}% zeros", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    tensors = counts["tensors"]
    comps = sorted({t["component"] for t in tensors}, key=[t["component"] for t in tensors].index)
    colors = dict(zip(comps, plt.get_cmap("tab10").colors))
    for c in comps:
        idx = [i for i, t in enumerate(tensors) if t["component"] == c]
        ax2.scatter(idx, [100 * tensors[i]["zero_fraction"] for i in idx], color=colors[c], s=14, label=c)
        if "absmax_zero_fraction" in tensors[0]:
            ax2.scatter(idx, [100 * tensors[i]["absmax_zero_fraction"] for i in idx], color=colors[c], s=14,
                        marker="x", alpha=0.6)
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_xlabel("ternary tensor, in forward order (dots: absmean, crosses: absmax)")
    ax2.set_ylabel("zeros (%)")
    ax2.set_ylim(0, 100)
    ax2.legend(frameon=False, fontsize=8, ncol=3)
    for a in (ax, ax2):
        a.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def plot_fidelity(result: dict, path: str | Path) -> None:
    """The four panels of the paper's Figure 3: patch embedding, residual stream, LayerNorm, logits."""
    plt = _pyplot()
    paper = PAPER["fidelity"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (a, b), (c, d) = axes
    pe = result["patch_embed"]
    edges, counts = np.array(pe["histogram"]["edges"]), np.array(pe["histogram"]["counts"])
    a.bar(edges[:-1], counts, np.diff(edges), align="edge", color="tab:blue", alpha=0.8)
    a.axvline(pe["mean"], color="black", label=f"mean {pe['mean']:.3f} (std {pe['std']:.3f})")
    a.axvline(paper["patch_embed_cosine"], color="tab:red", ls="--", label=f"paper {paper['patch_embed_cosine']}")
    a.set_xlabel("cosine, teacher vs student, per token")
    a.set_ylabel("tokens")
    a.set_title("(a) patch-embedding output", fontsize=10)
    a.legend(frameon=False, fontsize=8, loc="upper left")
    blocks = result["blocks"]
    x = [blk["block"] for blk in blocks]
    for key, label in (("class_token", "class token"), ("patch_tokens", "patch tokens")):
        if blocks and blocks[0][key] is not None:
            b.errorbar(x, [blk[key]["mean"] for blk in blocks], yerr=[blk[key]["std"] for blk in blocks],
                       marker="o", capsize=3, label=label)
    b.set_xticks(x)
    b.set_xlabel("after block")
    b.set_ylabel("cosine (mean, std)")
    b.set_title("(b) residual stream", fontsize=10)
    b.legend(frameon=False, fontsize=8)
    norms = result["layernorm"]["layers"]
    xs = np.arange(len(norms))
    c.bar(xs - 0.2, [r.get("gamma_cosine", np.nan) for r in norms], 0.4, label="gamma (scale)")
    c.bar(xs + 0.2, [r.get("beta_cosine", np.nan) for r in norms], 0.4, label="beta (shift)")
    beta = paper["layernorm_beta_cosine"]
    c.axhspan(beta["mean"] - beta["std"], beta["mean"] + beta["std"], color="tab:red", alpha=0.12,
              label=f"paper beta {beta['mean']} +- {beta['std']}")
    c.set_xticks(xs, [r["name"] for r in norms], rotation=60, ha="right", fontsize=7)
    c.set_ylabel("cosine, FP32 vs dequantized ternary")
    c.set_ylim(min(0.0, *(v for r in norms for k, v in r.items() if k != "name")) if norms else 0, 1.05)
    c.set_title("(c) LayerNorm parameters", fontsize=10)
    c.legend(frameon=False, fontsize=8, loc="lower left")
    lg = result["logits"]
    names = ["logits cosine", "top-1 agreement", "teacher top-1", "student top-1"]
    values = [lg["cosine"]["mean"], lg["top1_agreement"], lg["teacher_top1"], lg["student_top1"]]
    d.barh(names[::-1], [100 * v for v in values[::-1]], color=["tab:green", "tab:orange", "tab:purple", "tab:blue"])
    for i, v in enumerate(values[::-1]):
        d.annotate(f"{100 * v:.1f}", (100 * v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    d.set_xlim(0, 110)
    d.set_xlabel("%")
    d.set_title(f"(d) outputs: KL(teacher || student) = {lg['kl']:.4f} nats", fontsize=10)
    for ax in axes.flat:
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"FP32 teacher vs ternary student on {result['images']} images", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def _display(image: torch.Tensor) -> np.ndarray:
    """A normalized (C, H, W) image as something imshow shows: min-max scaled, grey or RGB."""
    img = image.float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp(min=1e-12)
    return img[0].numpy() if img.shape[0] == 1 else img[:3].permute(1, 2, 0).numpy()


def plot_rollout(result: dict, images: torch.Tensor, path: str | Path, class_names: list[str] | None = None) -> None:
    """Per image: the image, the teacher's rollout map over it, the student's."""
    plt = _pyplot()
    rows = result["images"]
    groups = 2 if len(rows) > 4 else 1
    nrows = math.ceil(len(rows) / groups)
    fig, axes = plt.subplots(nrows, 3 * groups, figsize=(2.2 * 3 * groups, 2.3 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        r, g = i % nrows, i // nrows
        img = _display(images[i])
        h, w = img.shape[:2]
        label = class_names[row["label"]] if class_names else str(row["label"])
        cmap = "gray" if img.ndim == 2 else None
        axes[r, 3 * g].imshow(img, cmap=cmap)
        axes[r, 3 * g].set_title(f"{label}", fontsize=8)
        for j, who in enumerate(("teacher", "student"), start=1):
            ax = axes[r, 3 * g + j]
            ax.imshow(img, cmap=cmap)
            ax.imshow(np.array(row[f"{who}_map"]), cmap="inferno", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                      interpolation="nearest")
            extra = f", cos {row['cosine']:.2f} IoU {row['iou']:.2f}" if who == "student" else ""
            pred = class_names[row[f"{who}_pred"]] if class_names else row[f"{who}_pred"]
            ax.set_title(f"{who}: {pred}{extra}", fontsize=7)
    fig.suptitle(f"attention rollout (image | teacher | student): mean cosine {result['mean_cosine']:.3f}, "
                 f"mean top-{100 * result['top_fraction']:.0f}% IoU {result['mean_iou']:.3f}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
