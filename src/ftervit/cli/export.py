"""``ftervit export``: write a ternary model as a packed .ftv file (docs/format.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ftervit.cli.common import add_model_args, check_not_input, model_from_args
from ftervit.errors import FtervitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a packed .ftv model file (tq2 or tq1)",
        description="Convert --model to ternary (or load --checkpoint) and write it as a packed "
                    ".ftv file for the C engine. The file is written atomically; an existing file is "
                    "replaced only with --overwrite. Without --checkpoint the weights are random, seeded by "
                    "--seed (the same file on every run).")
    add_model_args(p, positional=False)
    p.add_argument("--format", choices=("tq2", "tq1"), default="tq2",
                   help="ternary packing: tq2 = 4 codes per byte, tq1 = 5 per byte (default tq2)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .ftv file to write")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--class-names", metavar="FILE", help="text file with one class name per line")
    p.add_argument("--mean", type=float, nargs="+", help="input mean per channel (default: the model's)")
    p.add_argument("--std", type=float, nargs="+", help="input std per channel (default: the model's)")
    p.set_defaults(func=run)


def read_class_names(path: str) -> list[str]:
    """One name per line; surrounding blank lines are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FtervitError(f"cannot read class names from {path}: {exc}") from None
    return [line.strip() for line in text.strip().splitlines()]


def run(args: argparse.Namespace) -> int:
    from ftervit.export import export_model

    check_not_input(args.output, args.checkpoint, args.class_names)
    if Path(args.output).exists() and not args.overwrite:  # as training refuses an --out that holds a run
        raise FtervitError(f"{args.output} exists; pass --overwrite to replace it, or choose another -o")
    names = read_class_names(args.class_names) if args.class_names else None
    packed = export_model(model_from_args(args), args.output, args.format, mean=args.mean, std=args.std,
                          class_names=names)
    size = len(packed.data)
    print(f"wrote {args.output}: {size:,} bytes ({size / 1e6:.2f} MB), {args.format}, "
          f"{len(packed.entries)} tensors")
    return 0
