"""``ftervit run FILE IMAGE...``: classify images with the C engine."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from ftervit.cli.common import format_table, positive_int, print_json
from ftervit.errors import FtervitError


def crop_fraction(text: str) -> float:
    """argparse type: a fraction in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="classify images with the C engine",
        description="Decode each image (any format and mode Pillow reads, 16-bit and float included), resize "
                    "and normalize it as the model expects, run the .ftv FILE in the C engine and print the top "
                    "classes. Every image is tried: each one that cannot be read is named on stderr, the others "
                    "are reported, and the exit code is 2 if any failed.")
    p.add_argument("file", metavar="FILE", help=".ftv model file (ftervit export)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("-k", "--top", type=positive_int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--crop-pct", type=crop_fraction, default=1.0,
                   help="resize the shorter side to size/crop_pct, then center-crop (ImageNet models: 0.875-0.9)")
    p.add_argument("--threads", type=positive_int, default=1, help="engine threads")
    p.add_argument("--json", action="store_true",
                   help="machine-readable output: one object per image, {image, top} or {image, error}")
    p.set_defaults(func=run)


def classify(engine, path: str, top: int, crop_pct: float) -> dict:
    """The top classes of one image: ``{"image", "top": [{"class", "name", "prob", "logit"}]}``."""
    from ftervit.engine.preprocess import load_image

    cfg = engine.config
    x = load_image(path, engine.input_shape, cfg["mean"], cfg["std"], crop_pct)
    logits = engine.forward(x[None])[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    names = engine.class_names
    order = np.argsort(-logits, kind="stable")[:top]
    return {"image": str(path), "top": [{"class": int(i), "name": names[i] if names else None,
                                         "prob": float(probs[i]), "logit": float(logits[i])} for i in order]}


def run(args: argparse.Namespace) -> int:
    from ftervit.engine import Engine, EngineError

    results = []
    with Engine(args.file, threads=args.threads) as engine:
        for path in args.images:
            try:
                results.append(classify(engine, path, args.top, args.crop_pct))
            except EngineError as exc:  # the image decoded, but the engine refused its values
                results.append({"image": str(path), "error": f"{path}: {exc}"})
            except FtervitError as exc:
                results.append({"image": str(path), "error": str(exc)})
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"ftervit run: error: {r['error']}", file=sys.stderr)
    if args.json:
        print_json(results)
    else:
        for r in results:
            if "top" in r:
                print(r["image"])
                rows = [[str(t["class"]), t["name"] or "", f"{t['prob']:.4f}", f"{t['logit']:.4f}"] for t in r["top"]]
                print(format_table(["class", "name", "prob", "logit"], rows))
    return 2 if failed else 0
