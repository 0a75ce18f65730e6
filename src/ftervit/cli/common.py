"""Arguments and output helpers shared by subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch.nn as nn


def add_model_args(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    """``MODEL`` (or ``--model``), ``--checkpoint``, ``--num-classes``, ``--img-size``."""
    if positional:
        parser.add_argument("model", metavar="MODEL", help="timm ViT name or ftervit preset")
    else:
        parser.add_argument("--model", required=True, help="timm ViT name or ftervit preset")
    parser.add_argument("--checkpoint", help="ternary checkpoint: .pth/.pt/.safetensors or hf-hub:...")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: checkpoint's or model's)")
    parser.add_argument("--img-size", type=int, help="input resolution (default: the model's)")


def model_from_args(args: argparse.Namespace, ternary: bool = True) -> nn.Module:
    """Build the model the common arguments describe (FP32 when ``ternary`` is False)."""
    from ftervit.factory import create_model, create_timm_model

    kwargs: dict[str, Any] = {}
    if args.img_size:
        kwargs["img_size"] = args.img_size
    if not ternary:
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        return create_timm_model(args.model, **kwargs)
    return create_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes, **kwargs)


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more (thread counts, epochs)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
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
