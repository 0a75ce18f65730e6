"""Bytes of a model: per layer in its .ftv file, and by component for FP32, partially ternary
(TerViT: only the encoder's linear weights ternary), the paper's partial W2 (every linear layer,
head included, 2-bit) and fully ternary (the .ftv file itself)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn as nn

from ftervit.analysis.params import ParamInfo, parameter_table
from ftervit.export.format import (
    FLOAT_GROUPS,
    TERNARY,
    TERNARY_ROWS,
    Kind,
    ModelConfig,
    TensorEntry,
    row_bytes,
    rows_and_k,
    tensor_specs,
)
from ftervit.export.writer import Packed

CATEGORIES = ("encoder linear", "patch embedding", "head", "LayerNorm", "pos_embed + cls_token",
              "LayerScale", "RMSNorm", "biases", "scales", "file overhead")
SCENARIOS = {"fp32": "FP32", "partial": "partially ternary", "partial_w2_paper": "partial W2 (paper)",
             "full": "fully ternary"}
# The categories stored as ternary codes in each scenario; every other byte is a leftover.
TERNARY_IN = {"fp32": (), "partial": ("encoder linear",), "partial_w2_paper": ("encoder linear", "head"),
              "full": ("encoder linear", "patch embedding", "head", "LayerNorm")}


def category(p: ParamInfo) -> str:
    """The component of a parameter as the size breakdown groups it."""
    if p.is_weight_matrix:
        return {"patch_embed": "patch embedding", "head": "head"}.get(p.component, "encoder linear")
    if p.is_norm_affine:
        return "LayerNorm"
    if p.component == "embeddings":
        return "pos_embed + cls_token"
    if p.component == "layerscale":
        return "LayerScale"
    if p.name.endswith(".norm.weight"):
        return "RMSNorm"  # a BitLinear's norm (LayerNorms were matched above)
    if p.name.endswith(".bias"):
        return "biases"
    return "scales"  # channel_scale


def file_totals(config: ModelConfig, entries: Sequence[TensorEntry], file_size: int, source_params: int) -> dict:
    """Parameter and byte totals of a .ftv file, bits per weight and compression against FP32."""
    groups = [s.group for s in tensor_specs(config)]
    ternary = [e for e, g in zip(entries, groups) if g in (TERNARY, TERNARY_ROWS)]
    floats = [e for e, g in zip(entries, groups) if g in FLOAT_GROUPS]
    t_params = sum(math.prod(e.shape) for e in ternary)
    f_params = sum(math.prod(e.shape) for e in floats)
    t_bytes = sum(e.nbytes for e in ternary)
    fp32_bytes = 4 * source_params
    return {
        "total_bytes": file_size,
        "ternary_params": t_params,
        "ternary_bytes": t_bytes,
        "float_params": f_params,
        "float_bytes": sum(e.nbytes for e in floats),
        "other_bytes": file_size - t_bytes - sum(e.nbytes for e in floats),  # header, table, padding, scales, CRC, names
        "bits_per_weight": 8 * t_bytes / t_params,
        "bits_per_param": 8 * file_size / (t_params + f_params),
        "leftover_percent": 100 * (file_size - t_bytes) / file_size,
        "fp32_bytes": fp32_bytes,
        "fp32_mb": fp32_bytes / 1e6,
        "total_mb": file_size / 1e6,
        "compression": fp32_bytes / file_size,
    }


def layer_of(name: str) -> str:
    """The layer a stored tensor belongs to: a BitLinear's ``.norm`` joins its linear layer."""
    parent = name.rpartition(".")[0] or name
    return parent.removesuffix(".norm")


_KIND_ORDER = ["tq2", "tq1", "f16", "f32", "u8"]


def layer_rows(packed: Packed) -> list[dict]:
    """Larq-style rows (layer, precision, ternary and float parameters, bytes) of a file."""
    groups = {s.name: s.group for s in tensor_specs(packed.config)}
    rows: dict[str, dict] = {}
    for e in packed.entries:
        layer = layer_of(e.name)
        row = rows.setdefault(layer, {"layer": layer, "kinds": set(), "ternary_params": 0, "float_params": 0, "bytes": 0})
        row["kinds"].add(e.kind.name.lower())
        group = groups[e.name]
        if group in (TERNARY, TERNARY_ROWS):
            row["ternary_params"] += math.prod(e.shape)
        elif group in FLOAT_GROUPS:
            row["float_params"] += math.prod(e.shape)
        row["bytes"] += e.nbytes
    for row in rows.values():
        row["precision"] = "+".join(sorted(row.pop("kinds"), key=_KIND_ORDER.index))
    return list(rows.values())


def _packed_2bit(shape: tuple[int, ...]) -> tuple[int, int]:
    """(code bytes, FP32 scale bytes) of a TerViT ternary matrix: 2-bit rows, a scale per row."""
    rows, k = rows_and_k(shape)
    return rows * row_bytes(k, Kind.TQ2), 4 * rows


def recipe_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of any student (``ftervit distill --quant/--scope``), by one rule for every recipe.

    Ternary tensors as 2-bit codes per row (tq2) and int8 tensors as one byte a value, each
    with its FP32 scales (one per tensor, or per output channel for TerViT's, the int8 and
    the patch-embedding quantizers); every other parameter at 4 bytes (FP32), except
    BitLinear biases, which are never used. For FTerViT's own students the .ftv file is
    smaller (FP16 position embeddings and RMSNorm weights): this rule is for comparing recipes.

    Returns:
        ``{"codes", "scales", "fp32", "total"}`` in bytes.
    """
    from ftervit.layers import BitConv2d, BitLinear, QuantConv2d, QuantLayerNorm, QuantLinear, TernaryLayerNorm

    out = dict.fromkeys(("codes", "scales", "fp32"), 0)
    per_channel = (BitConv2d, QuantConv2d, QuantLinear)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            quantized = name == "weight" or (name == "bias" and isinstance(module, (TernaryLayerNorm, QuantLayerNorm)))
            if isinstance(module, BitLinear) and name == "bias":
                continue
            if quantized and isinstance(module, (BitLinear, BitConv2d, TernaryLayerNorm, QuantLinear, QuantConv2d,
                                                 QuantLayerNorm)):
                rows, k = rows_and_k(tuple(p.shape))
                int8 = getattr(module, "quant", "tervit") == "int8"
                out["codes"] += rows * (k if int8 else row_bytes(k, Kind.TQ2))
                out["scales"] += 4 * rows if isinstance(module, per_channel) else 4
            else:
                out["fp32"] += 4 * p.numel()
    out["total"] = sum(out.values())
    return out


def component_bytes(model: nn.Module, packed: Packed) -> dict[str, dict[str, int]]:
    """``{scenario: {category: bytes}}`` for the scenarios of the paper's Figure 1b.

    * fp32: every parameter of the FP32 model at 4 bytes.
    * partial: TerViT, the encoder's linear weights as 2-bit codes with an FP32 scale per
      output channel, everything else FP32 (linear biases included: they are used there).
    * partial_w2_paper: the paper's "partial W2" bar: every linear weight, the head's included,
      as 2-bit codes with one FP32 scale per tensor; the conv, LayerNorm, position embedding
      and class token, biases and LayerScale FP32 (DeiT-Tiny: 38% leftovers, DeiT-III-S: 24%).
    * full: what the .ftv file ``packed`` stores, per tensor; the header, table, per-tensor
      scales, padding, class names and CRC are "file overhead".
    """
    params = parameter_table(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    out = {s: dict.fromkeys(CATEGORIES, 0) for s in SCENARIOS}
    for p in params:
        cat = category(p)
        if cat == "RMSNorm" or p.name.endswith("channel_scale"):
            continue  # added by FTerViT's operators: not in the FP32 or TerViT model
        out["fp32"][cat] += 4 * p.numel
        if cat == "encoder linear":
            codes, scales = _packed_2bit(shapes[p.name])
            out["partial"][cat] += codes
            out["partial"]["scales"] += scales
        else:
            out["partial"][cat] += 4 * p.numel
        if cat in TERNARY_IN["partial_w2_paper"]:
            out["partial_w2_paper"][cat] += -(-p.numel // 4)  # 4 codes a byte, the tensor packed whole
            out["partial_w2_paper"]["scales"] += 4
        else:
            out["partial_w2_paper"][cat] += 4 * p.numel
    by_name = {p.name: category(p) for p in params}
    stored = 0
    for e in packed.entries:
        cat = by_name.get(e.name, "scales" if e.name.endswith("_scale") else "file overhead")
        out["full"][cat] += e.nbytes
        stored += e.nbytes
    out["full"]["file overhead"] += len(packed.data) - stored
    return out


def leftover_percent(components: dict[str, dict[str, int]]) -> dict[str, float]:
    """Per scenario, the share of bytes not held as ternary codes."""
    out = {}
    for scenario, cats in components.items():
        total = sum(cats.values())
        out[scenario] = 100 * (total - sum(cats[c] for c in TERNARY_IN[scenario])) / total
    return out


def plot_components(components: dict[str, dict[str, int]], title: str, path: str) -> None:
    """The paper's Figure 1b: bytes by component per scenario, stacked, as a PNG.

    Left, absolute sizes (MB = 1e6); right, each component's share, so the leftovers of the
    small ternary files stay visible. Hatched segments are ternary codes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from ftervit.fileio import save_figure

    scenarios = list(components)
    cats = [c for c in CATEGORIES if any(components[s][c] for s in scenarios)]
    colors = dict(zip(CATEGORIES, plt.get_cmap("tab10").colors))  # one colour per category, in every plot
    totals = {s: sum(components[s].values()) for s in scenarios}
    leftovers = leftover_percent(components)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.8), gridspec_kw={"wspace": 0.25})
    labels = [SCENARIOS[s].replace(" ", "\n", 1) for s in scenarios]  # two lines: four bars fit side by side
    for ax, share in zip(axes, (False, True)):
        bottom = [0.0] * len(scenarios)
        for cat in cats:
            values = [components[s][cat] / (totals[s] / 100 if share else 1e6) for s in scenarios]
            for i, s in enumerate(scenarios):
                ax.bar(i, values[i], 0.6, bottom=bottom[i], color=colors[cat], edgecolor="white", linewidth=0.6,
                       hatch="///" if cat in TERNARY_IN[s] else None)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(range(len(scenarios)), labels)
        ax.spines[["top", "right"]].set_visible(False)
        for i, s in enumerate(scenarios):
            text = f"leftovers {leftovers[s]:.0f}%" if share else f"{totals[s] / 1e6:.2f} MB"
            ax.annotate(text, (i, bottom[i]), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=9)
    axes[0].set_ylabel("size (MB)")
    axes[0].set_title("size", fontsize=11)
    axes[1].set_ylabel("share of the file (%)")
    axes[1].set_ylim(0, 108)
    axes[1].set_title("share by component", fontsize=11)
    handles = [Patch(color=colors[c], label=c) for c in cats]
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="///", label="ternary codes"))
    fig.legend(handles=handles, loc="lower center", ncol=6, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=12)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.87, bottom=0.2)
    save_figure(fig, path, dpi=150)
