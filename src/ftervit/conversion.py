"""Conversion of a timm VisionTransformer into its fully ternary student (SPEC section 2)."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import LayerScale
from timm.models.vision_transformer import Attention, Block, VisionTransformer

from ftervit.errors import UnsupportedModelError
from ftervit.layers import BitConv2d, BitLinear, TernaryLayerNorm

# Modules that keep FP32 parameters of their own in a fully ternary model (SPEC section 2):
# the token and position embeddings live on the VisionTransformer, LayerScale gammas on their module.
_FP_PARAM_OWNERS = (VisionTransformer, LayerScale)
_TERNARY_TYPES = (BitLinear, BitConv2d, TernaryLayerNorm)


def _bit_linear(m: nn.Linear) -> BitLinear:
    new = BitLinear(m.in_features, m.out_features, bias=m.bias is not None,
                    device=m.weight.device, dtype=m.weight.dtype)
    _copy_params(new, m)
    return new


def _bit_conv2d(m: nn.Conv2d) -> BitConv2d:
    new = BitConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                    padding=m.padding, dilation=m.dilation, groups=m.groups,
                    bias=m.bias is not None, padding_mode=m.padding_mode,
                    device=m.weight.device, dtype=m.weight.dtype)
    _copy_params(new, m)
    return new


def _ternary_layer_norm(m: nn.LayerNorm) -> TernaryLayerNorm:
    new = TernaryLayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
                           bias=m.bias is not None,
                           device=None if m.weight is None else m.weight.device,
                           dtype=None if m.weight is None else m.weight.dtype)
    _copy_params(new, m)
    return new


def _copy_params(new: nn.Module, old: nn.Module) -> None:
    """Copy the teacher's weight and bias; the student's extra parameters keep their init (1)."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            src = getattr(old, name, None)
            if src is not None:
                getattr(new, name).copy_(src)
    new.train(old.training)


def _plan(model: VisionTransformer) -> dict[str, nn.Module]:
    """Build every replacement module, or raise before anything in ``model`` is touched."""
    if model.patch_embed is None or not isinstance(getattr(model.patch_embed, "proj", None), nn.Conv2d):
        raise UnsupportedModelError(
            "make_ternary needs a convolutional patch embedding (patch_embed.proj = nn.Conv2d); "
            f"{type(model.patch_embed).__name__} is not supported")
    if getattr(model, "attn_pool", None) is not None:
        raise UnsupportedModelError(
            "make_ternary does not support attention pooling (global_pool='map'); "
            "create the model with global_pool='token' or 'avg'")
    replacements: dict[str, nn.Module] = {}
    problems: list[str] = []
    ternary = [n for n, m in model.named_modules() if isinstance(m, _TERNARY_TYPES)]
    for name, module in model.named_modules():
        if any(name == t or name.startswith(t + ".") for t in ternary):
            continue  # already ternary (and its RMSNorm): converting twice is a no-op
        if isinstance(module, nn.Linear):
            replacements[name] = _bit_linear(module)
        elif isinstance(module, nn.Conv2d) and name == "patch_embed.proj":
            replacements[name] = _bit_conv2d(module)
        elif isinstance(module, nn.LayerNorm):
            replacements[name] = _ternary_layer_norm(module)
        elif (next(module.parameters(recurse=False), None) is not None
              and not isinstance(module, _FP_PARAM_OWNERS)):
            problems.append(f"{name} ({type(module).__name__})")
        if name.startswith("blocks.") and name.count(".") == 1:
            if type(module) is not Block or not isinstance(module.attn, Attention):
                problems.append(f"{name} ({type(module).__name__}: only timm's Block with Attention is supported)")
    if problems:
        raise UnsupportedModelError(
            "make_ternary cannot convert these layers (nothing was changed): " + ", ".join(problems))
    return replacements


def make_ternary(model: nn.Module) -> nn.Module:
    """Convert a timm VisionTransformer to FTerViT, in place, and return it.

    Every ``nn.Linear`` (qkv, proj, fc1, fc2, head) becomes a :class:`BitLinear`, the patch
    embedding conv a :class:`BitConv2d` and every ``nn.LayerNorm`` a
    :class:`TernaryLayerNorm`. The teacher's FP32 weights are copied so distillation starts
    from the teacher; RMSNorm weights and ``channel_scale`` start at 1. The cls token,
    position embedding and LayerScale gammas stay FP32.

    Works for DeiT, DeiT-III (LayerScale, ``no_embed_class``) and ViT at any image size,
    patch size, channel count and class count.

    Raises:
        UnsupportedModelError: the model is not a supported timm VisionTransformer; the model
            is left exactly as it was.
    """
    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(
            f"make_ternary supports timm VisionTransformer models (DeiT, DeiT-III, ViT); "
            f"got {type(model).__module__}.{type(model).__name__}")
    for name, new in _plan(model).items():
        model.set_submodule(name, new)
    return model
