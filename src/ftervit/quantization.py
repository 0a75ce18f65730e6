"""Quantizer math: the single source of truth (SPEC sections 1 and 6).

Every quantizer returns ``(codes, scale)``: ``codes`` are integer-valued float tensors and
the dequantized value is ``codes / scale``. Rounding is ``torch.round`` (round half to even),
which a C engine reproduces with ``rintf`` in the default rounding mode.

FTerViT uses the absmean ternary and the int8 absmax quantizers. The others serve the
comparisons of ``ftervit distill --quant``/``--weight-scale``: TerViT's channel-wise
ternarization (Ternary Weight Networks), per-channel int8 weights (TerViT's first stage)
and an absmax ternary scale (ablation).
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
    """Per-tensor ternary absmax quantizer: the ablation of the absmean scale (`--weight-scale absmax`).

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


# The ternary scale of FTerViT's operators: (per tensor, per output channel) quantizers.
TERNARY_SCALES = {
    "absmean": (ternary_absmean, ternary_absmean_per_channel),
    "absmax": (ternary_absmax, ternary_absmax_per_channel),
}

TWN_THRESHOLD = 0.7  # Ternary Weight Networks' approximation of the optimal threshold


def _ternary_twn(w: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    magnitude = w.abs()
    keep = magnitude > TWN_THRESHOLD * magnitude.mean(dim=dims, keepdim=True)
    kept = keep.sum(dim=dims, keepdim=True).clamp(min=1)  # an all-zero group keeps nothing
    alpha = (magnitude * keep).sum(dim=dims, keepdim=True) / kept
    return torch.sign(w) * keep, 1.0 / alpha.clamp(min=EPS)


def ternary_twn(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor Ternary Weight Networks quantizer (TerViT's, on LayerNorm parameters).

    ``delta = 0.7 * mean|w|``; ``q = sign(w)`` where ``|w| > delta``, else 0;
    ``alpha = mean(|w| where |w| > delta)``; value ``q * alpha``, so the scale is ``1 / alpha``.
    """
    return _ternary_twn(w, tuple(range(w.dim())))


def ternary_twn_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TerViT's channel-wise ternarization: :func:`ternary_twn` per output channel (dim 0).

    Each channel has its own threshold and scale; the scale keeps ``w``'s rank.
    """
    return _ternary_twn(w, tuple(range(1, w.dim())))


def _int8_absmax(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    scale = INT8_MAX / x.abs().amax(dim=dims, keepdim=True).clamp(min=EPS)
    return (x * scale).round().clamp(INT8_MIN, INT8_MAX), scale


def int8_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 absmax quantizer with one scale for the tensor (int8 LayerNorm parameters)."""
    return _int8_absmax(w, tuple(range(w.dim())))


def int8_per_output_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 absmax quantizer per output channel (dim 0) of a weight (TerViT's 8-bit stage)."""
    return _int8_absmax(w, tuple(range(1, w.dim())))


def int8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 absmax quantizer over the last dim (inputs of every BitLinear).

    ``s = 127 / max(max_j |x_j|, eps)``; ``q = clamp(round(x * s), -128, 127)``.
    The scale has shape ``x.shape[:-1] + (1,)``.
    """
    return _int8_absmax(x, (-1,))


def int8_per_channel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 absmax quantizer per (n, c) of an NCHW tensor (input image of the patch embedding).

    The max runs over H and W; the scale has shape ``(N, C, 1, 1)``.
    """
    if x.dim() != 4:
        raise ValueError(f"int8_per_channel expects an NCHW tensor, got shape {tuple(x.shape)}")
    return _int8_absmax(x, (-2, -1))


def ste(x: torch.Tensor, x_quant: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of ``x_quant`` with the gradient of ``x``."""
    return x + (x_quant - x).detach()


def fake_quant(x: torch.Tensor, quantizer) -> torch.Tensor:
    """Dequantized ``quantizer(x)`` with a straight-through gradient (training path)."""
    codes, scale = quantizer(x)
    return ste(x, codes / scale)
