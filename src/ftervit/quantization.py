"""Quantizer math for FTerViT: the single source of truth (SPEC section 1).

Every quantizer returns ``(codes, scale)``: ``codes`` are integer-valued float tensors and
the dequantized value is ``codes / scale``. Rounding is ``torch.round`` (round half to even),
which a C engine reproduces with ``rintf`` in the default rounding mode.
"""
from __future__ import annotations

import torch

EPS = 1e-5
INT8_MAX = 127.0
INT8_MIN = -128.0


def ternary_absmean(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor ternary absmean quantizer (linear weights, LayerNorm gamma and beta).

    ``s = 1 / max(mean|w|, eps)``; ``q = clamp(round(w * s), -1, 1)``.

    Returns:
        codes in {-1, 0, 1} (same shape and dtype as ``w``) and the scalar scale ``s``.
    """
    scale = 1.0 / w.abs().mean().clamp(min=EPS)
    return (w * scale).round().clamp(-1, 1), scale


def ternary_absmean_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel ternary absmean (patch-embedding conv weight).

    The mean runs over every dim but dim 0. The scale keeps ``w``'s rank (shape
    ``(out, 1, 1, ...)``) so that ``codes / scale`` broadcasts.
    """
    dims = tuple(range(1, w.dim()))
    scale = 1.0 / w.abs().mean(dim=dims, keepdim=True).clamp(min=EPS)
    return (w * scale).round().clamp(-1, 1), scale


def ternary_absmax(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor ternary absmax quantizer, for comparison only (no FTerViT layer uses it).

    ``s = 1 / max(max|w|, eps)``; ``q = clamp(round(w * s), -1, 1)``: every weight under half the
    largest one rounds to 0, so heavy-tailed weights end up mostly zero.
    """
    scale = 1.0 / w.abs().amax().clamp(min=EPS)
    return (w * scale).round().clamp(-1, 1), scale


def ternary_absmax_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ternary_absmax` per output channel (dim 0), the scale shaped like
    :func:`ternary_absmean_per_channel`'s."""
    dims = tuple(range(1, w.dim()))
    scale = 1.0 / w.abs().amax(dim=dims, keepdim=True).clamp(min=EPS)
    return (w * scale).round().clamp(-1, 1), scale


def int8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 absmax quantizer over the last dim (inputs of every BitLinear).

    ``s = 127 / max(max_j |x_j|, eps)``; ``q = clamp(round(x * s), -128, 127)``.
    The scale has shape ``x.shape[:-1] + (1,)``.
    """
    scale = INT8_MAX / x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS)
    return (x * scale).round().clamp(INT8_MIN, INT8_MAX), scale


def int8_per_channel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 absmax quantizer per (n, c) of an NCHW tensor (input image of the patch embedding).

    The max runs over H and W; the scale has shape ``(N, C, 1, 1)``.
    """
    if x.dim() != 4:
        raise ValueError(f"int8_per_channel expects an NCHW tensor, got shape {tuple(x.shape)}")
    scale = INT8_MAX / x.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=EPS)
    return (x * scale).round().clamp(INT8_MIN, INT8_MAX), scale


def ste(x: torch.Tensor, x_quant: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of ``x_quant`` with the gradient of ``x``."""
    return x + (x_quant - x).detach()


def fake_quant(x: torch.Tensor, quantizer) -> torch.Tensor:
    """Dequantized ``quantizer(x)`` with a straight-through gradient (training path)."""
    codes, scale = quantizer(x)
    return ste(x, codes / scale)
