"""The engine's fast numerics mode on trained models: does it change what they predict?

For each trained run (a ``ftervit quickstart`` or benchmarks/fashion_mnist.py output folder:
``model.ftv``, ``phase2/last.pth`` and the ``phase2/config.yaml`` that names model and data),
the C engine classifies the whole test split twice, with ``numerics="exact"`` and
``numerics="fast"``, beside the PyTorch ternary model the file was exported from
(:func:`ftervit.evaluation.engine.compare_engine`). The fast mode is acceptable (docs/engine.md)
when, on every run, its top-1 agreement with PyTorch is within 0.05 percentage points of the
exact mode's and its test accuracy within 0.05 points of the exact mode's.

    python benchmarks/fast_numerics.py RUN_DIR [RUN_DIR ...] [--kernels avx512 avx2]
        [--out benchmarks/results/fast_numerics.json]

The AVX-512 set's fast mode uses bf16 products where the CPU has AVX512_BF16; the AVX2 set's only
fused multiply-adds.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ftervit.engine import Engine
from ftervit.errors import FtervitError
from ftervit.evaluation.checkpoints import load_test_split_and_student
from ftervit.evaluation.engine import compare_engine
from ftervit.fileio import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE_PP = 0.05  # the bound on both changes, in percentage points


def fast_vs_exact(engine_file: Path, dataset, batch_size: int = 256) -> dict:
    """Top-1 agreement of the two modes with each other and their largest logit difference."""
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).numpy()
    with Engine(engine_file) as exact, Engine(engine_file, numerics="fast") as fast:
        a = np.concatenate([exact.forward(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        b = np.concatenate([fast.forward(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    rel = np.abs(a - b).max(-1) / np.maximum(np.abs(a).max(-1), 1e-12)
    return {"top1_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()), "max_rel_diff": float(rel.max()),
            "median_rel_diff": float(np.median(rel))}


def evaluate_run(run: Path, kernels: str) -> dict:
    config = yaml.safe_load((run / "phase2" / "config.yaml").read_text())
    engine_file, checkpoint = run / "model.ftv", run / "phase2" / "last.pth"
    for f in (engine_file, checkpoint):
        if not f.is_file():
            raise FtervitError(f"{f} is missing: {run} is not a finished quickstart / fashion_mnist run")
    splits, student = load_test_split_and_student(config["model"], checkpoint, config["data"], config["data_dir"])
    torch.set_num_threads(1)
    os.environ["FTV_KERNELS"] = kernels  # read by the engine at load
    modes = {}
    for numerics in ("exact", "fast"):
        t = time.perf_counter()
        modes[numerics] = compare_engine(student, engine_file, splits.test, config["data"], numerics=numerics)
        modes[numerics]["seconds"] = round(time.perf_counter() - t, 1)
    exact, fast = modes["exact"], modes["fast"]
    d_agree = 100 * (fast["agreement"] - exact["agreement"])
    d_top1 = 100 * (fast["engine"]["top1"] - exact["engine"]["top1"])
    return {"run": str(run), "model": config["model"], "data": config["data"], "n": exact["n"],
            "exact": exact, "fast": fast, "fast_vs_exact": fast_vs_exact(engine_file, splits.test),
            "agreement_change_pp": d_agree, "top1_change_pp": d_top1,
            "within_tolerance": abs(d_agree) <= TOLERANCE_PP and abs(d_top1) <= TOLERANCE_PP}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="trained run folders (model.ftv, phase2/)")
    p.add_argument("--kernels", nargs="+", default=["avx512", "avx2"],
                   help="the x86 kernel sets to try (FTV_KERNELS); those this CPU lacks are left out")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fast_numerics.json")
    args = p.parse_args()
    results = []
    for kernels in args.kernels:
        os.environ["FTV_KERNELS"] = kernels
        with Engine(args.runs[0] / "model.ftv") as probe:
            if probe.kernels != kernels:
                print(f"{kernels}: not on this CPU, left out")
                continue
        results += [evaluate_run(run, kernels) for run in args.runs]
    atomic_write_json(args.out, {"tolerance_pp": TOLERANCE_PP, "runs": results,
                                 "all_within_tolerance": all(r["within_tolerance"] for r in results)})
    for r in results:
        e, f = r["exact"], r["fast"]
        print(f"{r['model']} on {r['data']} ({r['n']} test images, {f['kernels']} kernels):")
        print(f"  exact: top-1 {100 * e['engine']['top1']:.2f}%, agreement with PyTorch {100 * e['agreement']:.2f}% "
              f"(PyTorch ternary {100 * e['ternary']['top1']:.2f}%)")
        print(f"  fast:  top-1 {100 * f['engine']['top1']:.2f}%, agreement with PyTorch {100 * f['agreement']:.2f}%")
        print(f"  change: agreement {r['agreement_change_pp']:+.2f} pp, top-1 {r['top1_change_pp']:+.2f} pp "
              f"({'within' if r['within_tolerance'] else 'OUTSIDE'} {TOLERANCE_PP} pp); fast vs exact: top-1 "
              f"{100 * r['fast_vs_exact']['top1_agreement']:.2f}% equal, max rel diff "
              f"{r['fast_vs_exact']['max_rel_diff']:.2g}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
