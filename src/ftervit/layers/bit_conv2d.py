"""BitConv2d: the patch-embedding convolution with per-output-channel ternary weights."""
from __future__ import annotations

import torch
import torch.nn as nn

from ftervit.quantization import TERNARY_SCALES, fake_quant, int8_per_channel


class BitConv2d(nn.Conv2d):
    """Drop-in ``nn.Conv2d`` with per-output-channel ternary weights (SPEC section 2).

    Weight: ``ternary_absmean_per_channel(W) * channel_scale[c]`` where ``channel_scale`` is a
    learnable FP32 vector (init 1). Input: int8 per (n, c) channel. The bias *is* added.
    """

    weight_scale = "absmean"  # or "absmax" (ablation; ftervit.layers.set_weight_scale)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel_scale = nn.Parameter(
            torch.ones(self.out_channels, device=self.weight.device, dtype=self.weight.dtype)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q = fake_quant(x, int8_per_channel)
        w_q = fake_quant(self.weight, TERNARY_SCALES[self.weight_scale][1]) * self.channel_scale.view(-1, 1, 1, 1)
        return self._conv_forward(x_q, w_q, self.bias)
