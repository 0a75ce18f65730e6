"""The operators of the comparison recipes: TerViT's ternary layers and int8 layers (SPEC section 6).

``ftervit distill --quant tervit`` and ``--quant int8`` build these instead of FTerViT's.
They keep the parameter names of ``nn.Linear``, ``nn.Conv2d`` and ``nn.LayerNorm`` (no
RMSNorm, no ``channel_scale``), so an FP32 teacher or an int8 student loads into a TerViT
student as it is (TerViT's progressive training: 8-bit first, then ternary). Unlike
FTerViT's BitLinear, the bias is added. The C engine does not run them; they are evaluated
in PyTorch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ftervit.quantization import (
    fake_quant,
    int8_per_channel,
    int8_per_output_channel,
    int8_per_tensor,
    int8_per_token,
    ternary_twn,
    ternary_twn_per_channel,
)

Quantizer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# quant -> (per output channel for weights, per tensor for LayerNorm parameters)
WEIGHT_QUANTIZERS: dict[str, tuple[Quantizer, Quantizer]] = {
    "tervit": (ternary_twn_per_channel, ternary_twn),
    "int8": (int8_per_output_channel, int8_per_tensor),
}


def _check_quant(quant: str) -> str:
    if quant not in WEIGHT_QUANTIZERS:
        raise ValueError(f"quant must be one of {', '.join(WEIGHT_QUANTIZERS)}, got {quant!r}")
    return quant


class QuantLinear(nn.Linear):
    """``nn.Linear`` with per-output-channel quantized weights and int8 per-token inputs.

    ``y = linear(int8_per_token(x), Q(W)) + b`` where Q is TerViT's channel-wise ternarization
    (``quant="tervit"``: per channel a threshold ``0.7 * mean|w_c|`` and a scale, the mean
    magnitude above it) or per-channel int8 absmax (``quant="int8"``); straight-through
    gradients for both.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 quant: str = "tervit") -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.quant = _check_quant(quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant(self.weight, WEIGHT_QUANTIZERS[self.quant][0])
        return F.linear(fake_quant(x.float(), int8_per_token).to(x.dtype), w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.quant}"


class QuantConv2d(nn.Conv2d):
    """The patch-embedding ``nn.Conv2d`` with per-output-channel quantized weights and int8 input.

    The input is quantized per (n, c) channel as in FTerViT's BitConv2d; there is no extra
    ``channel_scale``: TWN's per-channel scale plays its part. The bias is added.
    """

    def __init__(self, *args, quant: str = "tervit", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.quant = _check_quant(quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant(self.weight, WEIGHT_QUANTIZERS[self.quant][0])
        return self._conv_forward(fake_quant(x, int8_per_channel), w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.quant}"


class QuantLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose gamma and beta are each quantized per tensor; statistics stay FP32."""

    def __init__(self, *args, quant: str = "tervit", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.quant = _check_quant(quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantizer = WEIGHT_QUANTIZERS[self.quant][1]
        weight = None if self.weight is None else fake_quant(self.weight.float(), quantizer)
        bias = None if self.bias is None else fake_quant(self.bias.float(), quantizer)
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.quant}"
