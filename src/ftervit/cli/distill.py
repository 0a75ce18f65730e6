"""``ftervit distill``: Phase 1 (distillation) and Phase 2 (recovery) of the ternary student."""
from __future__ import annotations

import argparse

from ftervit.cli.training_args import register_training_command


def register(sub: argparse._SubParsersAction) -> None:
    register_training_command(
        sub, "distill", help="distill the ternary student from its FP32 teacher (Phase 1 / Phase 2)",
        description="Phase 1: the student starts as make_ternary of the teacher's weights and learns "
                    "forward KL(teacher || student) on the logits (lr 1e-4, cosine). Phase 2: restart from "
                    "a Phase-1 checkpoint (--init) at lr 1e-5 for 10 epochs. The teacher stays frozen. "
                    "Runs under torchrun for DDP.")
