"""Conversion of a timm VisionTransformer into its fully ternary student (SPEC section 2),
or into the student of a comparison recipe (``ftervit distill --quant/--scope/--weight-scale``)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from timm.layers import LayerScale
from timm.models.vision_transformer import Attention, Block, VisionTransformer

from ftervit.errors import FtervitError, UnsupportedModelError
from ftervit.layers import (
    BitConv2d,
    BitLinear,
    QuantConv2d,
    QuantLayerNorm,
    QuantLinear,
    TernaryLayerNorm,
    set_weight_scale,
)
from ftervit.quantization import TERNARY_SCALES

# Modules that keep FP32 parameters of their own in a fully ternary model (SPEC section 2):
# the token and position embeddings live on the VisionTransformer, LayerScale gammas on their module.
_FP_PARAM_OWNERS = (VisionTransformer, LayerScale)
_TERNARY_TYPES = (BitLinear, BitConv2d, TernaryLayerNorm, QuantLinear, QuantConv2d, QuantLayerNorm)

QUANTS = ("ftervit", "tervit", "int8")
SCOPES = ("full", "encoder")
# The encoder's linear layers inside blocks.N: all that --scope encoder quantizes (TerViT's choice).
ENCODER_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


@dataclass(frozen=True)
class StudentRecipe:
    """How the student is quantized: ``ftervit distill --quant --scope --weight-scale``.

    The default is FTerViT (absmean ternary everywhere), the only recipe that the .ftv
    format and the C engine take. ``tervit`` is TerViT's channel-wise TWN ternarization,
    ``int8`` per-channel int8 weights; ``encoder`` quantizes only qkv, proj, fc1 and fc2.
    """

    quant: str = "ftervit"
    scope: str = "full"
    weight_scale: str = "absmean"

    def __post_init__(self) -> None:
        for name, allowed in (("quant", QUANTS), ("scope", SCOPES), ("weight_scale", tuple(TERNARY_SCALES))):
            if getattr(self, name) not in allowed:
                raise FtervitError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.quant != "ftervit" and self.weight_scale != "absmean":
            raise FtervitError(f"weight_scale {self.weight_scale} applies to --quant ftervit only "
                               f"({self.quant} has its own scale)")

    @property
    def is_ftervit(self) -> bool:
        """True for FTerViT's own recipe (exportable to .ftv)."""
        return self == StudentRecipe()

    @property
    def flags(self) -> str:
        """The command-line options that select this recipe."""
        extra = "" if self.weight_scale == "absmean" else f" --weight-scale {self.weight_scale}"
        return f"--quant {self.quant} --scope {self.scope}{extra}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> StudentRecipe:
        """The recipe a training checkpoint's ``config`` records (FTerViT for teachers and older files)."""
        if not config or config.get("mode") != "distill":
            return cls()
        return cls(**{k: config[k] for k in ("quant", "scope", "weight_scale") if k in config})


def in_scope(name: str, scope: str) -> bool:
    """Whether the module ``name`` of a VisionTransformer is quantized under ``scope``."""
    if scope == "full":
        return True
    block, _, rest = name.partition(".")
    index, _, layer = rest.partition(".")
    return block == "blocks" and index.isdigit() and layer in ENCODER_LINEARS


def _linear(cls: type[nn.Linear], m: nn.Linear, **extra: Any) -> nn.Module:
    new = cls(m.in_features, m.out_features, bias=m.bias is not None, device=m.weight.device,
              dtype=m.weight.dtype, **extra)
    _copy_params(new, m)
    return new


def _conv2d(cls: type[nn.Conv2d], m: nn.Conv2d, **extra: Any) -> nn.Module:
    new = cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
              dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
              device=m.weight.device, dtype=m.weight.dtype, **extra)
    _copy_params(new, m)
    return new


def _layer_norm(cls: type[nn.LayerNorm], m: nn.LayerNorm, **extra: Any) -> nn.Module:
    new = cls(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine, bias=m.bias is not None,
              device=None if m.weight is None else m.weight.device,
              dtype=None if m.weight is None else m.weight.dtype, **extra)
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


_Converters = tuple[Callable[[nn.Linear], nn.Module], Callable[[nn.Conv2d], nn.Module],
                    Callable[[nn.LayerNorm], nn.Module]]


def _converters(quant: str) -> _Converters:
    """Linear, patch-conv and LayerNorm converters of ``quant``, the teacher's weights copied."""
    if quant == "ftervit":
        return partial(_linear, BitLinear), partial(_conv2d, BitConv2d), partial(_layer_norm, TernaryLayerNorm)
    return (partial(_linear, QuantLinear, quant=quant), partial(_conv2d, QuantConv2d, quant=quant),
            partial(_layer_norm, QuantLayerNorm, quant=quant))


def _plan(model: VisionTransformer, converters: _Converters, scope: str) -> dict[str, nn.Module]:
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
    linear, conv, norm = converters
    ternary = [n for n, m in model.named_modules() if isinstance(m, _TERNARY_TYPES)]
    for name, module in model.named_modules():
        if any(name == t or name.startswith(t + ".") for t in ternary):
            continue  # already ternary (and its RMSNorm): converting twice is a no-op
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.LayerNorm)) and not in_scope(name, scope):
            pass  # stays FP32 under --scope encoder
        elif isinstance(module, nn.Linear):
            replacements[name] = linear(module)
        elif isinstance(module, nn.Conv2d) and name == "patch_embed.proj":
            replacements[name] = conv(module)
        elif isinstance(module, nn.LayerNorm):
            replacements[name] = norm(module)
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
    return convert(model, StudentRecipe())


def convert(model: nn.Module, recipe: StudentRecipe) -> nn.Module:
    """Convert a timm VisionTransformer, in place, into the student of ``recipe``, and return it.

    FTerViT's recipe is :func:`make_ternary`. ``tervit`` and ``int8`` use the operators of
    ``ftervit.layers.baselines``; ``scope="encoder"`` converts only the blocks' qkv, proj,
    fc1 and fc2 and leaves the patch embedding, every LayerNorm and the head FP32;
    ``weight_scale="absmax"`` swaps FTerViT's absmean scale for absmax. The teacher's
    weights are copied.

    Raises:
        UnsupportedModelError: the model is not a supported timm VisionTransformer; the model
            is left exactly as it was.
    """
    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(
            f"make_ternary supports timm VisionTransformer models (DeiT, DeiT-III, ViT); "
            f"got {type(model).__module__}.{type(model).__name__}")
    for name, new in _plan(model, _converters(recipe.quant), recipe.scope).items():
        model.set_submodule(name, new)
    return set_weight_scale(model, recipe.weight_scale)
