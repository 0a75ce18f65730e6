"""BitLinear: ternary weights, int8 per-token activations, RMSNorm inside (BitNet b1.58)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ftervit.quantization import EPS, TERNARY_SCALES, fake_quant, int8_per_token

EvalPrecision = Literal["fp32", "bf16"]


class BitLinear(nn.Linear):
    """Drop-in ``nn.Linear`` with ternary weights and int8 inputs (SPEC section 2).

    ``y = linear(int8_per_token(rmsnorm(x)), ternary_absmean(W))``.

    The ``bias`` parameter exists and is saved (the published checkpoints carry it) but it is
    **never added**, in training or in eval: this reproduces the reference implementation.
    It receives no gradient, so optimizers leave it unchanged.

    The output is the straight-through formula evaluated as the reference does, in training
    and in eval alike: ``F.linear(h + (q(h) - h).detach(), W + (t(W) - W).detach())`` in FP32.
    The products are ternary x int8 values times two scales, so FP32 holds them almost
    exactly; keeping the reference's op order matters because a quantized network amplifies
    any rounding difference (an int8 code that flips in one layer shifts every later layer).
    ``eval_precision="bf16"`` instead reproduces the reference's eval path, which multiplies
    the integer codes and divides by the scales in bfloat16 (8 mantissa bits), for users who
    must reproduce its numbers to the last digit; it applies only when autograd is off.
    ``weight_scale = "absmax"`` (set by :func:`ftervit.layers.set_weight_scale`) swaps the
    absmean scale for absmax, an ablation that the file format does not store.

    Args:
        in_features: input width.
        out_features: output width.
        bias: whether to create the (unused) bias parameter.
        eval_precision: ``"fp32"`` (default, exact) or ``"bf16"`` (reference eval rounding).
    """

    weight_scale = "absmean"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        eval_precision: EvalPrecision = "fp32",
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.norm = nn.RMSNorm(in_features, eps=EPS, device=device, dtype=dtype)
        self.eval_precision = eval_precision

    @property
    def eval_precision(self) -> EvalPrecision:
        return self._eval_precision

    @eval_precision.setter
    def eval_precision(self, value: EvalPrecision) -> None:
        if value not in ("fp32", "bf16"):
            raise ValueError(f"eval_precision must be 'fp32' or 'bf16', got {value!r}")
        self._eval_precision = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under bf16 autocast x arrives in bf16: normalize and quantize in the norm's (FP32)
        # precision, as the engine does; only the matmul runs in bf16.
        h = self.norm(x.to(self.norm.weight.dtype))
        ternary = TERNARY_SCALES[self.weight_scale][0]
        if self.eval_precision == "bf16" and not torch.is_grad_enabled():
            x_codes, x_scale = int8_per_token(h)
            w_codes, w_scale = ternary(self.weight)
            bf = torch.bfloat16
            y = F.linear(x_codes.to(bf), w_codes.to(bf)) / x_scale.to(bf) / w_scale.to(bf)
            return y.to(h.dtype)
        return F.linear(fake_quant(h, int8_per_token), fake_quant(self.weight, ternary))

    def extra_repr(self) -> str:
        scale = "" if self.weight_scale == "absmean" else f", weight_scale={self.weight_scale}"
        return f"{super().extra_repr()}, bias_added=False, eval_precision={self.eval_precision}{scale}"
