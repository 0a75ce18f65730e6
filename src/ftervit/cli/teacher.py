"""``ftervit teacher``: train or fine-tune the FP32 teacher."""
from __future__ import annotations

import argparse

from ftervit.cli.training_args import register_training_command


def register(sub: argparse._SubParsersAction) -> None:
    register_training_command(
        sub, "teacher", help="train or fine-tune the FP32 teacher",
        description="Train the FP32 model of a timm architecture (from scratch, timm's pretrained weights "
                    "or a local --init checkpoint): AdamW, cosine schedule with warmup, label smoothing, "
                    "augmentation suited to the data. Runs under torchrun for DDP.")
