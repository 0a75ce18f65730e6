"""``create_model``: a timm model name (or preset) in, a ternary model out."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import timm
import torch.nn as nn

import ftervit.presets  # noqa: F401  (registers the presets with timm)
from ftervit.checkpoint import checkpoint_num_classes, load_checkpoint, load_checkpoint_file, load_state_dict
from ftervit.conversion import StudentRecipe, convert
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
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FtervitError(
            f"could not load pretrained weights for {name} ({type(exc).__name__}{': ' + detail if detail else ''}); "
            "offline or without published weights, pass a local teacher checkpoint instead") from exc


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
        FtervitError: unknown name, a checkpoint that does not fit (keys named), or the
            checkpoint of another recipe (``ftervit distill --quant tervit``...), which only
            :func:`create_student` builds.
    """
    return _create(name, checkpoint, num_classes, "ftervit", pretrained=pretrained, **timm_kwargs)


def create_student(
    name: str, checkpoint: str | Path, num_classes: int | None = None, **timm_kwargs: Any,
) -> nn.Module:
    """The student a ``ftervit distill`` checkpoint holds, of whatever recipe it was trained with.

    The recipe (``--quant``, ``--scope``, ``--weight-scale``) is read from the checkpoint;
    plain state dicts and published files are FTerViT students, as with :func:`create_model`.

    Raises:
        FtervitError: unknown name, or a checkpoint that does not fit (keys named).
    """
    return _create(name, checkpoint, num_classes, "any", **timm_kwargs)


def student_recipe(checkpoint: str | Path, ftervit_only: bool = False) -> StudentRecipe:
    """The quantization recipe the checkpoint records (FTerViT's for files that record none).

    Raises:
        CheckpointError: unreadable file, or (``ftervit_only``) a recipe other than FTerViT's.
    """
    recipe = StudentRecipe.from_config(load_checkpoint_file(checkpoint)[1])
    if ftervit_only:
        _check_ftervit(checkpoint, recipe)
    return recipe


def _check_ftervit(checkpoint: str | Path, recipe: StudentRecipe) -> None:
    if not recipe.is_ftervit:
        raise CheckpointError(
            f"{checkpoint} holds a student of ftervit distill {recipe.flags}: the .ftv format and the C engine "
            "take FTerViT students only (--quant ftervit --scope full); evaluate this one in PyTorch with "
            "ftervit eval")


def create_fp32_model(
    name: str, checkpoint: str | Path | None = None, num_classes: int | None = None, **timm_kwargs: Any,
) -> nn.Module:
    """The FP32 timm model, with an FP32 checkpoint (e.g. from ``ftervit teacher``) loaded strictly.

    Raises:
        FtervitError: unknown name, or a checkpoint that does not fit (keys named).
    """
    return _create(name, checkpoint, num_classes, "fp32", **timm_kwargs)


def _create(name: str, checkpoint: str | Path | None, num_classes: int | None,
            kind: Literal["fp32", "ftervit", "any"], **timm_kwargs: Any) -> nn.Module:
    """The timm model (FP32, FTerViT, or the student of the checkpoint's recipe) with ``checkpoint`` loaded strictly."""
    state, config = load_checkpoint_file(checkpoint) if checkpoint is not None else (None, None)
    recipe = StudentRecipe.from_config(config)
    if kind == "ftervit":
        _check_ftervit(checkpoint, recipe)
    num_classes = _checkpoint_classes(state, num_classes)
    if num_classes is not None:
        timm_kwargs["num_classes"] = num_classes
    model = create_timm_model(name, **timm_kwargs)
    if kind != "fp32":
        model = convert(model, recipe)
    if state is not None:
        load_checkpoint(model, state)
    return model


def _checkpoint_classes(state: dict | None, num_classes: int | None) -> int | None:
    """``num_classes``, or the checkpoint's when None; refuses a mismatch between the two."""
    found = checkpoint_num_classes(state) if state is not None else None
    if num_classes is None:
        return found
    if found is not None and found != num_classes:
        raise CheckpointError(
            f"num_classes={num_classes} but the checkpoint's head has {found} classes "
            f"(head.weight {tuple(state['head.weight'].shape)}); drop --num-classes or fix it")
    return num_classes


def load_weights(model: nn.Module, path: str | Path, num_classes: int, what: str) -> None:
    """Load ``path`` into ``model`` strictly; the error names the file, its role (``what``) and the problem.

    Raises:
        CheckpointError: unreadable file, a head with another class count than
            ``num_classes``, or keys/shapes of another architecture.
    """
    state = load_state_dict(path)
    found = checkpoint_num_classes(state)
    if found is not None and found != num_classes:
        raise CheckpointError(f"{what} {path} has {found} classes but the data has {num_classes}; "
                              "use a checkpoint trained on this dataset")
    try:
        load_checkpoint(model, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{what} {path} does not fit the model: {exc}") from exc


def create_teacher(name: str, checkpoint: str | Path | None, num_classes: int, **timm_kwargs: Any) -> nn.Module:
    """The frozen FP32 teacher (eval mode): a local checkpoint, or timm's pretrained weights when None."""
    if checkpoint is None:
        model = create_timm_model(name, pretrained=True, **timm_kwargs)
        if model.num_classes != num_classes:
            raise FtervitError(f"timm's pretrained {name} has {model.num_classes} classes but the data has "
                               f"{num_classes}; train a teacher on this data first (ftervit teacher)")
    else:
        model = create_timm_model(name, num_classes=num_classes, **timm_kwargs)
        load_weights(model, checkpoint, num_classes, f"FP32 teacher checkpoint for {name}")
    return model.eval().requires_grad_(False)
