"""Parameter inventory of a (ternary or FP32) ViT: component and precision of every tensor."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn

from ftervit.layers import BitConv2d, BitLinear, TernaryLayerNorm

COMPONENTS = ("patch_embed", "embeddings", "attention", "mlp", "layernorm", "layerscale", "head", "other")
# The analyses' finer split: a BitLinear's RMSNorm weight is a component of its own there.
ANALYSIS_COMPONENTS = ("patch_embed", "layernorm", "attention", "mlp", "head", "embeddings", "layerscale", "rmsnorm")
PRECISIONS = ("ternary", "fp32", "fp16", "bf16", "unused")
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_EMBEDDINGS = ("cls_token", "pos_embed", "reg_token", "dist_token")


@dataclass(frozen=True)
class ParamInfo:
    """One parameter tensor of a model."""

    name: str
    component: str
    precision: str  # one of PRECISIONS; "unused" = BitLinear bias (saved, never added)
    numel: int
    is_weight_matrix: bool  # weight of a Linear / Conv2d (ternary or not)
    is_norm_affine: bool  # gamma or beta of a LayerNorm (ternary or not)


def _component(module_name: str, module: nn.Module, param_name: str) -> str:
    full = f"{module_name}.{param_name}" if module_name else param_name
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if full.startswith("patch_embed."):
        return "patch_embed"
    if full in _EMBEDDINGS:
        return "embeddings"
    if full.startswith(("head.", "head_dist.")):
        return "head"
    if ".ls1." in full or ".ls2." in full:
        return "layerscale"
    if ".attn." in full:
        return "attention"
    if ".mlp." in full:
        return "mlp"
    return "other"


def _precision(module: nn.Module, param_name: str, p: torch.Tensor) -> str:
    if isinstance(module, TernaryLayerNorm) or (
            isinstance(module, (BitLinear, BitConv2d)) and param_name == "weight"):
        return "ternary"
    if isinstance(module, BitLinear) and param_name == "bias":
        return "unused"
    return _DTYPE_NAMES.get(p.dtype, str(p.dtype).replace("torch.", ""))


def parameter_table(model: nn.Module) -> list[ParamInfo]:
    """Every parameter of ``model`` with its component and precision, in definition order."""
    rows = []
    for module_name, module in model.named_modules():
        # A BitLinear's RMSNorm ("<linear>.norm") belongs to the component of its linear layer.
        owner = module_name.removesuffix(".norm") if isinstance(module, nn.RMSNorm) else module_name
        for pname, p in module.named_parameters(recurse=False):
            rows.append(ParamInfo(
                name=f"{module_name}.{pname}" if module_name else pname,
                component=_component(owner, module, pname),
                precision=_precision(module, pname, p),
                numel=p.numel(),
                is_weight_matrix=isinstance(module, (nn.Linear, nn.Conv2d)) and pname == "weight",
                is_norm_affine=isinstance(module, nn.LayerNorm),
            ))
    return rows


def analysis_component(p: ParamInfo) -> str:
    """The component of a parameter in the analyses: :data:`ANALYSIS_COMPONENTS` (or "other")."""
    if p.name.endswith(".norm.weight") and p.component != "layernorm":
        return "rmsnorm"  # "<linear>.norm.weight" of a BitLinear (LayerNorms are matched by type)
    return p.component


def summarize(model: nn.Module) -> dict:
    """Counts per component and precision, ternary coverage (%) and the FP32 size.

    Coverage is over the tensors FTerViT ternarizes: weight matrices (Linear and the
    patch-embedding conv) and LayerNorm affine parameters. BitLinear's RMSNorm weights, the
    token/position embeddings, LayerScale and biases are FP32 leftovers by design.
    """
    rows = parameter_table(model)
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PRECISIONS, 0))
    totals = dict.fromkeys(PRECISIONS, 0)
    for r in rows:
        table[r.component][r.precision] = table[r.component].get(r.precision, 0) + r.numel
        totals[r.precision] = totals.get(r.precision, 0) + r.numel

    def coverage(selected: list[ParamInfo]) -> float:
        total = sum(r.numel for r in selected)
        ternary = sum(r.numel for r in selected if r.precision == "ternary")
        return 100.0 * ternary / total if total else 0.0

    n_params = sum(r.numel for r in rows)
    return {
        "components": {c: table[c] for c in COMPONENTS if c in table},
        "totals": totals,
        "params": n_params,
        "coverage_percent": {
            "weight_matrices": coverage([r for r in rows if r.is_weight_matrix]),
            "norm_params": coverage([r for r in rows if r.is_norm_affine]),
        },
        "fp32_bytes": 4 * n_params,
        "fp32_mb": 4 * n_params / 1e6,
    }
