"""Arguments and output helpers shared by subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch.nn as nn

from ftervit.errors import FtervitError


def add_model_args(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    """``MODEL`` (or ``--model``), ``--checkpoint``, ``--num-classes``, ``--img-size``."""
    if positional:
        parser.add_argument("model", metavar="MODEL", help="timm ViT name or ftervit preset")
    else:
        parser.add_argument("--model", required=True, help="timm ViT name or ftervit preset")
    parser.add_argument("--checkpoint", help="ternary checkpoint: .pth/.pt/.safetensors or hf-hub:...")
    parser.add_argument("--num-classes", type=positive_int, help="classifier size (default: checkpoint's or model's)")
    parser.add_argument("--img-size", type=positive_int, help="input resolution (default: the model's)")
    add_seed_arg(parser)


def add_seed_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the random weights when no --checkpoint is given (default 0: the same "
                             "model, and file, on every run)")


def model_from_args(args: argparse.Namespace, ternary: bool = True) -> nn.Module:
    """Build the model the common arguments describe (FP32 when ``ternary`` is False).

    ``--checkpoint`` is loaded strictly in both cases: a ternary checkpoint into the ternary
    model, an FP32 one (``ftervit teacher``) into the FP32 model. Without one the random
    initialization is seeded by ``--seed`` (torch's global generator is left as it was).
    """
    import torch

    from ftervit.factory import create_fp32_model, create_model

    kwargs: dict[str, Any] = {}
    if args.img_size:
        kwargs["img_size"] = args.img_size
    create = create_model if ternary else create_fp32_model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(getattr(args, "seed", 0))
        return create(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes, **kwargs)


def check_not_input(output: str, *inputs: str | None) -> None:
    """Refuse an output path that names one of the command's input files (it would be replaced).

    Raises:
        FtervitError: ``output`` is the same file as one of ``inputs``.
    """
    out = Path(output)
    for given in inputs:
        if given and out.exists() and Path(given).exists() and out.samefile(given):
            raise FtervitError(f"output {output} is the input file {given}; writing it would replace "
                               "the input: choose another output name")


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more (thread counts, epochs, batch sizes)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of 0 or more (worker processes)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {text!r}")
    return value


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table; the first column left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[f"{c:,}" if isinstance(c, int) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
