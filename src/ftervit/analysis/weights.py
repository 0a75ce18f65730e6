"""Counts of -1 / 0 / +1 in a ternary model: from its own quantizers or from a .ftv file.

The zero share is FTerViT's free sparsity (the paper: 37%). For comparison each tensor is also
quantized by absmax scaling (:func:`ftervit.quantization.ternary_absmax`), which rounds every
weight under half the largest to zero. For N(0, 1) weights absmean gives zero exactly when
``|w| < sqrt(pi / 8)``, a share of ``erf(1 / (2 sqrt(pi))) = 0.3101``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ftervit.analysis.params import analysis_component, parameter_table
from ftervit.export.format import Kind
from ftervit.export.reader import FtvFile, read
from ftervit.layers import BitConv2d, BitLinear, TernaryLayerNorm
from ftervit.quantization import (
    ternary_absmax,
    ternary_absmax_per_channel,
    ternary_absmean,
    ternary_absmean_per_channel,
)

__all__ = ["TERNARY_COMPONENTS", "ternary_codes", "weight_counts", "ftv_weight_counts", "compare_counts"]

TERNARY_COMPONENTS = ("patch_embed", "layernorm", "attention", "mlp", "head")
_ABSMAX = {ternary_absmean: ternary_absmax, ternary_absmean_per_channel: ternary_absmax_per_channel}


def _quantizer(module: nn.Module, pname: str):
    """The quantizer a ternary module applies to its parameter ``pname`` (None: not ternary)."""
    if isinstance(module, TernaryLayerNorm) or (isinstance(module, BitLinear) and pname == "weight"):
        return ternary_absmean
    if isinstance(module, BitConv2d) and pname == "weight":
        return ternary_absmean_per_channel
    return None


def ternary_codes(model: nn.Module) -> dict[str, tuple[str, torch.Tensor, torch.Tensor]]:
    """``{name: (component, absmean codes, absmax codes)}`` for every ternarized parameter."""
    modules = dict(model.named_modules())
    components = {p.name: analysis_component(p) for p in parameter_table(model)}
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            module_name, _, pname = name.rpartition(".")
            quant = _quantizer(modules[module_name], pname)
            if quant is not None:
                w = p.detach().float().cpu()
                out[name] = (components[name], quant(w)[0], _ABSMAX[quant](w)[0])
    return out


def _row(codes: np.ndarray, absmax_zeros: int | None = None) -> dict:
    n = int(codes.size)
    minus, zero = int((codes == -1).sum()), int((codes == 0).sum())
    row = {"numel": n, "minus": minus, "zero": zero, "plus": n - minus - zero, "zero_fraction": zero / n if n else 0.0}
    if absmax_zeros is not None:
        row["absmax_zero_fraction"] = absmax_zeros / n if n else 0.0
    return row


def _aggregate(rows: list[dict]) -> dict:
    keys = ("numel", "minus", "zero", "plus")
    out = {k: sum(r[k] for r in rows) for k in keys}
    out["zero_fraction"] = out["zero"] / out["numel"] if out["numel"] else 0.0
    if rows and "absmax_zero_fraction" in rows[0]:
        zeros = sum(r["absmax_zero_fraction"] * r["numel"] for r in rows)
        out["absmax_zero_fraction"] = zeros / out["numel"] if out["numel"] else 0.0
    return out


def _summary(tensors: list[dict]) -> dict:
    return {
        "tensors": tensors,
        "components": {c: _aggregate([t for t in tensors if t["component"] == c]) for c in TERNARY_COMPONENTS
                       if any(t["component"] == c for t in tensors)},
        "overall": _aggregate(tensors),
    }


def weight_counts(model: nn.Module) -> dict:
    """-1/0/+1 counts of a ternary model from its own quantizers, with absmax's zero share beside.

    Returns:
        ``{"tensors": [{"name", "component", "numel", "minus", "zero", "plus", "zero_fraction",
        "absmax_zero_fraction"}], "components": {component: {...}}, "overall": {...}}``.
    """
    tensors = []
    for name, (component, codes, absmax) in ternary_codes(model).items():
        row = _row(codes.numpy(), int((absmax == 0).sum()))
        tensors.append({"name": name, "component": component, **row})
    return _summary(tensors)


def _ftv_component(name: str) -> str:
    """The component of a ternary tensor of a .ftv file, from its timm name."""
    if name.startswith("patch_embed."):
        return "patch_embed"
    if name.startswith("head."):
        return "head"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "layernorm"  # the file's other ternary tensors are LayerNorm gammas and betas


def ftv_weight_counts(ftv: str | Path | FtvFile) -> dict:
    """:func:`weight_counts` of the codes stored in a .ftv file (no absmax: the file has no FP32 weights).

    Raises:
        FormatError: the file is missing or not a valid .ftv file.
    """
    f = ftv if isinstance(ftv, FtvFile) else read(ftv)
    tensors = [{"name": e.name, "component": _ftv_component(e.name), **_row(f.tensors[e.name])}
               for e in f.entries if e.kind in (Kind.TQ2, Kind.TQ1)]
    return _summary(tensors)


def compare_counts(model_counts: dict, file_counts: dict) -> list[str]:
    """Names of the tensors whose -1/0/+1 counts differ between the two (or that only one holds)."""
    a = {t["name"]: (t["minus"], t["zero"], t["plus"]) for t in model_counts["tensors"]}
    b = {t["name"]: (t["minus"], t["zero"], t["plus"]) for t in file_counts["tensors"]}
    return sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))
