"""ftervit: fully ternary Vision Transformers (FTerViT), from training to microcontrollers."""
from __future__ import annotations

from ftervit.checkpoint import load_checkpoint, load_state_dict
from ftervit.conversion import make_ternary
from ftervit.errors import CheckpointError, FtervitError, UnsupportedModelError
from ftervit.factory import create_model, create_student
from ftervit.layers import BitConv2d, BitLinear, TernaryLayerNorm, set_eval_precision

__version__ = "0.1.0"

__all__ = [
    "BitConv2d", "BitLinear", "CheckpointError", "FtervitError", "TernaryLayerNorm",
    "UnsupportedModelError", "create_model", "create_student", "load_checkpoint", "load_state_dict",
    "make_ternary", "set_eval_precision", "__version__",
]
