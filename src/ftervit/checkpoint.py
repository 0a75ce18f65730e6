"""Reading checkpoints safely and loading them strictly (published FTerViT files included)."""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ftervit.errors import CheckpointError

HF_HUB_SCHEME = "hf-hub:"
# The published FTerViT state dicts prefix every timm name with this (SPEC section 2); DDP adds "module.".
KEY_PREFIXES = ("timm_model.", "module.")
# Training checkpoints wrap the state dict under one of these keys.
NESTED_KEYS = ("model", "state_dict", "model_state_dict")
_MAX_LISTED = 10
_TERNARY_KEY = "patch_embed.proj.channel_scale"  # only ternary models have it
FTV_MAGIC = b"\x89FTV"  # the packed model file (ftervit.export.format), often mistaken for a checkpoint


def resolve_checkpoint(spec: str | Path) -> Path:
    """Return a local path for ``spec``: a file path, or ``hf-hub:<owner>/<repo>/<file>``.

    Hub files are fetched with huggingface_hub (cached); offline, pass the local path instead.
    """
    spec = str(spec)
    if spec.startswith(HF_HUB_SCHEME):
        parts = spec[len(HF_HUB_SCHEME):].split("/")
        if len(parts) < 3 or not all(parts):
            raise CheckpointError(
                f"bad hub checkpoint {spec!r}: expected hf-hub:<owner>/<repo>/<path/to/file>, e.g. "
                "hf-hub:szymonrucinski/FTerViT/cifar10/phase2_ep010_acc97.43_deit_tiny_224.pth")
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:])))
        except Exception as exc:  # network, auth, missing file: all reported the same way
            raise CheckpointError(
                f"could not fetch {spec} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "when offline, download the file elsewhere and pass its local path") from exc
    path = Path(spec)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give a .pth, .pt or .safetensors file in it "
                              "(ftervit teacher/distill write last.pth and best.pth)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give a .pth, .pt or .safetensors file)")
    return path


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in KEY_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_state_dict(spec: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a .pth/.pt/.bin (``weights_only=True``) or .safetensors file.

    Accepts plain state dicts, the published ``timm_model.``-prefixed files and training
    checkpoints that nest the model under ``model``/``state_dict``; prefixes are removed.

    Raises:
        CheckpointError: the file is missing, unreadable, unsafe to unpickle, or holds no
            state dict.
    """
    return load_checkpoint_file(spec)[0]


def load_checkpoint_file(spec: str | Path) -> tuple[dict[str, torch.Tensor], Mapping[str, Any] | None]:
    """:func:`load_state_dict`, and the training ``config`` the file records (None for plain state dicts).

    ``ftervit teacher``/``distill`` checkpoints record their settings, among them the
    student's quantization recipe (``quant``, ``scope``, ``weight_scale``).
    """
    path = resolve_checkpoint(spec)
    try:
        with open(path, "rb") as f:
            head = f.read(len(FTV_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if head == FTV_MAGIC:
        raise CheckpointError(f"{path} is a packed .ftv model file, not a checkpoint: use it with ftervit "
                              "run, inspect or eval --engine; give the .pth it was exported from here")
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_error(exc)}") from exc
    config = obj.get("config") if isinstance(obj, Mapping) else None
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return _strip_prefixes(dict(obj)), config if isinstance(config, Mapping) else None


def _load_error(exc: Exception) -> str:
    """One line on why torch.load or safetensors refused a file."""
    text = str(exc).strip()
    if "Weights only load failed" in text:  # a pickle with more than tensors and containers
        detail = next((line.strip().split(". Please")[0] for line in text.splitlines()
                       if "Unsupported global" in line), "")
        return (f"it holds Python objects that torch.load(weights_only=True) refuses for safety"
                f"{': ' + detail if detail else ''} "
                "(save model.state_dict() with torch.save, or use .safetensors)")
    if isinstance(exc, (pickle.UnpicklingError, EOFError, KeyError, ValueError, RuntimeError)):
        first = text.splitlines()[0] if text else type(exc).__name__
        return f"not a PyTorch checkpoint or truncated ({type(exc).__name__}: {first})"
    return text.splitlines()[0] if text else type(exc).__name__


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise a CheckpointError naming every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if mis_shaped:
        problems.append(f"shape mismatch: {_listed(mis_shaped)}")
    if problems:
        # Only ternary models have channel_scale: name the likely mix-up of teacher and student files.
        kinds = ["ternary" if _TERNARY_KEY in s else "FP32" for s in (state, expected)]
        hint = (f" ({kinds[0]} weights given, {kinds[1]} expected: FP32 checkpoints come from "
                "ftervit teacher, ternary ones from ftervit distill)") if kinds[0] != kinds[1] else ""
        raise CheckpointError(f"checkpoint does not match the model{hint}; " + "; ".join(problems))


def load_checkpoint(model: nn.Module, spec: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a checkpoint (path, hub spec or state dict) into ``model`` strictly; return the model."""
    state = _strip_prefixes(dict(spec)) if isinstance(spec, Mapping) else load_state_dict(spec)
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True)
    return model


def checkpoint_num_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    """Class count of the classifier in ``state`` (``head.weight`` rows), or None if headless."""
    head = state.get("head.weight")
    return int(head.shape[0]) if head is not None else None
