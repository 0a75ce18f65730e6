"""The torch device a ``--device`` option names, checked before any work starts."""
from __future__ import annotations

import torch

from ftervit.errors import FtervitError


def resolve_device(name: str | None = None) -> torch.device:
    """``name`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``...) as a torch device; None: CUDA when available.

    Raises:
        FtervitError: a name torch does not know, or a GPU that this machine does not have.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FtervitError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FtervitError(f"device {name!r}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FtervitError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise FtervitError(f"device {name!r}: MPS is not available here; use --device cpu")
    return device
