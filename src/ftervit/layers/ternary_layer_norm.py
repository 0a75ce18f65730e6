"""TernaryLayerNorm: LayerNorm whose gamma and beta are each ternarized per tensor."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ftervit.quantization import TERNARY_SCALES, fake_quant


class TernaryLayerNorm(nn.LayerNorm):
    """Drop-in ``nn.LayerNorm`` with ternary affine parameters (SPEC section 2).

    ``weight`` (gamma) and ``bias`` (beta) are ternarized with their own absmean scales. The
    per-token mean and variance stay FP32: ternarizing them would destroy positional
    information, so the input is normalized in FP32 whatever its dtype.
    """

    weight_scale = "absmean"  # or "absmax" (ablation; ftervit.layers.set_weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ternary = TERNARY_SCALES[self.weight_scale][0]
        weight = None if self.weight is None else fake_quant(self.weight.float(), ternary)
        bias = None if self.bias is None else fake_quant(self.bias.float(), ternary)
        y = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return y.to(x.dtype)
