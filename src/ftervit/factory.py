"""``create_model``: a timm model name (or preset) in, a ternary model out."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn

import ftervit.presets  # noqa: F401  (registers the presets with timm)
from ftervit.checkpoint import checkpoint_num_classes, load_checkpoint, load_state_dict
from ftervit.conversion import make_ternary
from ftervit.errors import CheckpointError, FtervitError


def check_model_name(name: str) -> None:
    """Raise FtervitError, with similar names, unless timm knows ``name``."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise FtervitError(f"unknown model {name!r} (any timm ViT name or an ftervit preset){hint}")


def create_timm_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with a clear error for unknown names and failed downloads."""
    check_model_name(name)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise
        raise FtervitError(
            f"could not load pretrained weights for {name} ({type(exc).__name__}); offline, "
            "pass a local teacher checkpoint instead") from exc


def create_model(
    name: str,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
    **timm_kwargs: Any,
) -> nn.Module:
    """Create a fully ternary FTerViT model.

    Args:
        name: a timm VisionTransformer name (``deit3_small_patch16_224``...) or a preset
            (``ftervit_digits``, ``ftervit_fashion_mnist``).
        checkpoint: a ternary checkpoint to load strictly: a local .pth/.pt/.safetensors file
            (with or without the published ``timm_model.`` prefix) or
            ``hf-hub:szymonrucinski/FTerViT/<file>``.
        num_classes: classifier size; taken from the checkpoint when omitted.
        pretrained: start from timm's FP32 pretrained weights (needs network access).
        **timm_kwargs: passed to ``timm.create_model`` (``img_size``, ``drop_path_rate``...).

    Raises:
        FtervitError: unknown name, or a checkpoint that does not fit (keys named).
    """
    state = load_state_dict(checkpoint) if checkpoint is not None else None
    if state is not None:
        found = checkpoint_num_classes(state)
        if num_classes is None:
            num_classes = found
        elif found is not None and found != num_classes:
            raise CheckpointError(
                f"num_classes={num_classes} but the checkpoint's head has {found} classes "
                f"(head.weight {tuple(state['head.weight'].shape)}); drop --num-classes or fix it")
    if num_classes is not None:
        timm_kwargs["num_classes"] = num_classes
    model = make_ternary(create_timm_model(name, pretrained=pretrained, **timm_kwargs))
    if state is not None:
        load_checkpoint(model, state)
    return model
