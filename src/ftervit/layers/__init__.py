"""Ternary operators that replace timm's Linear, Conv2d and LayerNorm."""
from __future__ import annotations

import torch.nn as nn

from ftervit.layers.bit_conv2d import BitConv2d
from ftervit.layers.bit_linear import BitLinear, EvalPrecision
from ftervit.layers.ternary_layer_norm import TernaryLayerNorm

__all__ = ["BitConv2d", "BitLinear", "TernaryLayerNorm", "set_eval_precision"]


def set_eval_precision(model: nn.Module, precision: EvalPrecision) -> nn.Module:
    """Set the no-grad matmul precision of every BitLinear in ``model`` ("fp32" or "bf16")."""
    for module in model.modules():
        if isinstance(module, BitLinear):
            module.eval_precision = precision
    return model
