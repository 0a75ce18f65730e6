"""``ftervit firmware``: a model as C source for a microcontroller build (docs/mcu.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ftervit.cli.common import add_seed_arg, positive_int
from ftervit.errors import FtervitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "firmware", help="write a packed model as a C array (.c + .h) for microcontroller firmware",
        description="Convert --model to ternary (or load --checkpoint), pack it as a .ftv image (as "
                    "`ftervit export` does) and write it as NAME.c, a 64-byte aligned const uint8_t array "
                    "the engine reads in place from flash (ftv_model_load_buffer), plus NAME.h with its "
                    "extern declaration and size. --ftv converts an existing .ftv file instead. Both files "
                    "are written atomically.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="timm ViT name or ftervit preset")
    src.add_argument("--ftv", metavar="FILE", help="an existing .ftv file to convert (instead of --model)")
    p.add_argument("--checkpoint", help="ternary checkpoint: .pth/.pt/.safetensors or hf-hub:...")
    p.add_argument("--num-classes", type=positive_int, help="classifier size (default: checkpoint's or model's)")
    p.add_argument("--img-size", type=positive_int, help="input resolution (default: the model's)")
    add_seed_arg(p)
    p.add_argument("--format", choices=("tq2", "tq1"), default="tq2",
                   help="ternary packing: tq2 = 4 codes per byte, tq1 = 5 per byte (default tq2)")
    p.add_argument("--class-names", metavar="FILE", help="text file with one class name per line")
    p.add_argument("-o", "--output", required=True, metavar="FILE.c|DIR",
                   help="the .c file to write (its .h goes next to it), or a directory (created when the name ends with /)")
    p.add_argument("--symbol", help="name of the C array (default: the .c file's name)")
    p.add_argument("--section", help="linker section for the array, e.g. .rodata.ftv_model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftervit.export import build, read
    from ftervit.export.c_array import c_identifier, write_c_array

    if args.ftv:
        if args.checkpoint or args.num_classes or args.img_size or args.class_names:
            raise FtervitError("--ftv takes the file as it is: drop --checkpoint, --num-classes, --img-size "
                               "and --class-names")
        fmt = read(args.ftv).format.name.lower()  # checks magic, version, bounds and checksum
        data = Path(args.ftv).read_bytes()
        stem, what = Path(args.ftv).stem, args.ftv
    else:
        from ftervit.cli.common import model_from_args
        from ftervit.cli.export import read_class_names

        names = read_class_names(args.class_names) if args.class_names else None
        data = build(model_from_args(args), args.format, class_names=names).data
        fmt, stem = args.format, f"{args.model}_{args.format}"
        what = args.model + (f" ({args.checkpoint})" if args.checkpoint else "")
    path_c, path_h, symbol = write_c_array(
        data, args.output, args.symbol, section=args.section, default_stem=c_identifier(stem),
        comment=f"ftervit firmware: {what}, {fmt}, {len(data):,} bytes")
    print(f"wrote {path_c} and {path_h}: {symbol}[{len(data):,}] ({len(data) / 1e6:.2f} MB, {fmt}), "
          "64-byte aligned")
    return 0
