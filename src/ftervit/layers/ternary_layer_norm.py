"""TernaryLayerNorm: LayerNorm whose gamma and beta are each ternarized per tensor."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ftervit.quantization import fake_quant, ternary_absmean


class TernaryLayerNorm(nn.LayerNorm):
    """Drop-in ``nn.LayerNorm`` with ternary affine parameters (SPEC section 2).

    ``weight`` (gamma) and ``bias`` (beta) are ternarized with their own absmean scales. The
    per-token mean and variance stay FP32: ternarizing them would destroy positional
    information, so the input is normalized in FP32 whatever its dtype.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else fake_quant(self.weight.float(), ternary_absmean)
        bias = None if self.bias is None else fake_quant(self.bias.float(), ternary_absmean)
        y = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return y.to(x.dtype)
