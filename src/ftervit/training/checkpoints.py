"""Training checkpoints: the RNG states that make ``--resume`` exact."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftervit.errors import CheckpointError


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states, in a form ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states :func:`rng_state` captured."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training checkpoint written by the trainer (``weights_only`` loading)."""
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist (drop --resume to start a new run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {str(exc).strip().splitlines()[0]}") from exc
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "step", "config", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint (missing {', '.join(missing)}); "
                              "--resume needs the last.pth that ftervit teacher/distill wrote")
    return state
