"""Ternary operators that replace timm's Linear, Conv2d and LayerNorm (and the comparison recipes')."""
from __future__ import annotations

import torch.nn as nn

from ftervit.layers.baselines import QuantConv2d, QuantLayerNorm, QuantLinear
from ftervit.layers.bit_conv2d import BitConv2d
from ftervit.layers.bit_linear import BitLinear, EvalPrecision
from ftervit.layers.ternary_layer_norm import TernaryLayerNorm
from ftervit.quantization import TERNARY_SCALES

__all__ = ["BitConv2d", "BitLinear", "QuantConv2d", "QuantLayerNorm", "QuantLinear", "TernaryLayerNorm",
           "set_eval_precision", "set_weight_scale"]


def set_eval_precision(model: nn.Module, precision: EvalPrecision) -> nn.Module:
    """Set the no-grad matmul precision of every BitLinear in ``model`` ("fp32" or "bf16")."""
    for module in model.modules():
        if isinstance(module, BitLinear):
            module.eval_precision = precision
    return model


def set_weight_scale(model: nn.Module, weight_scale: str) -> nn.Module:
    """Set the ternary scale of every FTerViT operator in ``model``: "absmean" (the paper's) or "absmax"."""
    if weight_scale not in TERNARY_SCALES:
        raise ValueError(f"weight_scale must be one of {', '.join(TERNARY_SCALES)}, got {weight_scale!r}")
    for module in model.modules():
        if isinstance(module, (BitLinear, BitConv2d, TernaryLayerNorm)):
            module.weight_scale = weight_scale
    return model
