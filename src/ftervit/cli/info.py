"""``ftervit info MODEL``: parameters per component and precision, ternary coverage, FP32 size."""
from __future__ import annotations

import argparse

from ftervit.analysis.params import PRECISIONS, summarize
from ftervit.cli.common import add_model_args, format_table, model_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="parameter counts by component and precision",
        description="Convert MODEL to ternary (or load --checkpoint) and print its parameters per "
                    "component and precision, the ternary coverage and the FP32 size.")
    add_model_args(p)
    p.add_argument("--fp32", action="store_true",
                   help="show the unconverted FP32 model instead (--checkpoint: an FP32 one, from ftervit teacher)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args, ternary=not args.fp32)
    info = {"model": args.model, "ternary": not args.fp32, **summarize(model)}
    if args.json:
        print_json(info)
        return 0
    used = [p for p in PRECISIONS if info["totals"].get(p)]
    rows = [[name] + [counts.get(p, 0) for p in used] + [sum(counts.values())]
            for name, counts in info["components"].items()]
    rows.append(["total"] + [info["totals"][p] for p in used] + [info["params"]])
    print(f"{args.model} ({'fully ternary' if info['ternary'] else 'FP32'})")
    print(format_table(["component"] + used + ["all"], rows))
    cov = info["coverage_percent"]
    print(f"ternary coverage: weight matrices {cov['weight_matrices']:.1f}%, "
          f"LayerNorm parameters {cov['norm_params']:.1f}%")
    print(f"FP32 size: {info['fp32_mb']:.2f} MB ({info['fp32_bytes']:,} bytes, MB = 1e6)")
    if info["totals"].get("unused"):
        print("unused: BitLinear biases, saved as in the published checkpoints but never added")
    return 0
