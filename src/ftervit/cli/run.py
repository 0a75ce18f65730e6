"""``ftervit run FILE IMAGE...``: classify images with the C engine."""
from __future__ import annotations

import argparse

import numpy as np

from ftervit.cli.common import format_table, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="classify images with the C engine",
        description="Decode each image (any format Pillow reads), resize and normalize it as the "
                    "model expects, run the .ftv FILE in the C engine and print the top classes.")
    p.add_argument("file", metavar="FILE", help=".ftv model file (ftervit export)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("-k", "--top", type=positive_int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--crop-pct", type=float, default=1.0,
                   help="resize the shorter side to size/crop_pct, then center-crop (ImageNet models: 0.875-0.9)")
    p.add_argument("--threads", type=positive_int, default=1, help="engine threads")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftervit.engine import Engine
    from ftervit.engine.preprocess import load_image

    engine = Engine(args.file, threads=args.threads)
    cfg = engine.config
    names = engine.class_names
    results = []
    for path in args.images:
        x = load_image(path, engine.input_shape, cfg["mean"], cfg["std"], args.crop_pct)
        logits = engine.forward(x[None])[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-logits, kind="stable")[: args.top]
        results.append({"image": str(path), "top": [
            {"class": int(i), "name": names[i] if names else None, "prob": float(probs[i]),
             "logit": float(logits[i])} for i in top]})
    if args.json:
        print_json(results)
        return 0
    for r in results:
        print(r["image"])
        rows = [[str(t["class"]), t["name"] or "", f"{t['prob']:.4f}", f"{t['logit']:.4f}"] for t in r["top"]]
        print(format_table(["class", "name", "prob", "logit"], rows))
    return 0
