"""Attention rollout (Abnar & Zuidema 2020) of a timm ViT, FP32 or ternary.

The one Python implementation: ``ftervit analyze`` compares teacher and student with it, and
the tests hold the C engine's ``ftv_model_forward_rollout`` to it. Per block the attention
probabilities are averaged over heads, the residual is folded in as ``(A + I) / 2`` and the
rows renormalized to sum to 1; the blocks multiply, ``R = A_L ... A_1``. The map is the class
token's row of ``R`` over the patch tokens or, for a model pooled without a class token, the
mean of all rows.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
from timm.layers import Attention

from ftervit.errors import FtervitError

__all__ = ["attention_probabilities", "rollout", "attention_rollout", "uses_class_token", "unfused_attention"]


def _attention_modules(model: nn.Module) -> list[Attention]:
    blocks = getattr(model, "blocks", None)
    modules = [getattr(b, "attn", None) for b in blocks] if blocks is not None else []
    if not modules or not all(isinstance(m, Attention) for m in modules):
        raise FtervitError(f"{type(model).__name__} has no timm ViT attention blocks to roll out "
                           "(attention rollout needs a timm VisionTransformer)")
    return modules


@contextlib.contextmanager
def unfused_attention(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Run timm attention modules on their explicit softmax path, restoring the setting after.

    The fused kernel hides the probabilities and has no second derivative (Hessian products).
    """
    fused = [m.fused_attn for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield
    finally:
        for m, f in zip(modules, fused):
            m.fused_attn = f


@contextlib.contextmanager
def _capture(modules: Sequence[Attention]) -> Iterator[list[torch.Tensor]]:
    """Record each module's softmax output: the unfused path applies ``attn_drop`` to it."""
    captured: list[torch.Tensor] = []
    hooks = [m.attn_drop.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
             for m in modules]
    try:
        with unfused_attention(modules):
            yield captured
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def attention_probabilities(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and every block's attention probabilities, ``(N, heads, tokens, tokens)``, from one pass.

    Raises:
        FtervitError: the model has no timm attention blocks.
    """
    modules = _attention_modules(model)
    with _capture(modules) as captured:
        logits = model(x)
    if len(captured) != len(modules):
        raise FtervitError(f"expected {len(modules)} attention maps, the forward pass produced {len(captured)}")
    return logits, captured


def uses_class_token(model: nn.Module) -> bool:
    """Whether the model classifies from its class token (else from the mean of its tokens)."""
    return getattr(model, "cls_token", None) is not None and getattr(model, "global_pool", "token") == "token"


def rollout(attentions: Sequence[torch.Tensor], num_prefix_tokens: int, grid: tuple[int, int],
            class_token: bool) -> torch.Tensor:
    """Fold per-block attention probabilities into rollout maps ``(N, grid_h, grid_w)`` (float64).

    Args:
        attentions: per block ``(N, heads, tokens, tokens)``, rows summing to 1.
        num_prefix_tokens: class (and register) tokens before the patch tokens.
        grid: the patch grid, ``grid_h * grid_w == tokens - num_prefix_tokens``.
        class_token: take the class token's row (True) or the mean of all rows (False).
    """
    if not attentions:
        raise FtervitError("attention rollout needs at least one block")
    n, _, t, _ = attentions[0].shape
    if t - num_prefix_tokens != grid[0] * grid[1]:
        raise FtervitError(f"{t} tokens do not make {num_prefix_tokens} prefix tokens and a {grid[0]}x{grid[1]} grid")
    eye = torch.eye(t, dtype=torch.float64, device=attentions[0].device)
    r = eye.expand(n, t, t)
    for attn in attentions:
        a = (attn.double().mean(dim=1) + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        r = a @ r
    rows = r[:, 0] if class_token else r.mean(dim=1)
    return rows[:, num_prefix_tokens:].reshape(n, *grid)


def attention_rollout(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and rollout maps ``(N, grid_h, grid_w)`` of a timm ViT on a batch of images."""
    logits, attentions = attention_probabilities(model, x)
    grid = tuple(model.patch_embed.grid_size)
    return logits, rollout(attentions, model.num_prefix_tokens, grid, uses_class_token(model))
