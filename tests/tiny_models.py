"""A ViT small enough for fast training tests, registered with timm as ``ftervit_test_tiny``, and a
model without attention of the same input, ``ftervit_test_mixer`` (refusal tests).

Imported by conftest.py (in-process tests) and by run_cli.py (subprocesses, torchrun).
"""
from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.mlp_mixer import MlpMixer
from timm.models.vision_transformer import VisionTransformer

default_cfgs = generate_default_cfgs({
    "ftervit_test_tiny": {"url": "", "num_classes": 10, "input_size": (1, 8, 8), "mean": (0.5,), "std": (0.5,),
                          "crop_pct": 1.0, "interpolation": "bilinear"},
    "ftervit_test_mixer": {"url": "", "num_classes": 10, "input_size": (1, 8, 8), "mean": (0.5,), "std": (0.5,),
                           "crop_pct": 1.0, "interpolation": "bilinear"},
})


@register_model
def ftervit_test_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    args = dict(img_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0)
    return build_model_with_cfg(VisionTransformer, "ftervit_test_tiny", pretrained, **dict(args, **kwargs))


@register_model
def ftervit_test_mixer(pretrained: bool = False, **kwargs) -> MlpMixer:
    args = dict(img_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, num_blocks=1)
    return build_model_with_cfg(MlpMixer, "ftervit_test_mixer", pretrained, **dict(args, **kwargs))
