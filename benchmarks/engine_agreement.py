"""How closely the C engine follows PyTorch on random-weight models, next to PyTorch's own FP32 error.

For each model and seed: a random-init ternary model, exported (``ftervit export``), run in the
engine and in PyTorch (FP32 and FP64) on the same random inputs. Per sample it reports
max |a - b| / max |b| of the logits for engine vs PyTorch FP32, engine vs FP64 and PyTorch
FP32 vs FP64, and whether top-1 agrees. On deep random ternary ViTs the last column (PyTorch
against itself in higher precision) is the floor no FP32 implementation can beat: see
docs/engine.md, "Numerics". Results go to benchmarks/results/engine_agreement.json.

    .venv/bin/python benchmarks/engine_agreement.py            # ~2 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ftervit import create_model
from ftervit.engine import Engine
from ftervit.export import export_model
from ftervit.fileio import atomic_write_text

MODELS = (("deit_tiny_patch16_224", 10), ("deit3_small_patch16_224", 100))
RESULTS = Path(__file__).parent / "results" / "engine_agreement.json"


def rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max |a - b| / max |b| per row."""
    return (np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)).astype(np.float64)


def measure(name: str, num_classes: int, seed: int, samples: int, fmt: str, workdir: Path) -> dict:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes).eval()
    path = workdir / f"{name}.{seed}.{fmt}.ftv"
    export_model(model, path, fmt)
    x = torch.randn(samples, 3, 224, 224, generator=torch.Generator().manual_seed(1000 + seed))
    with Engine(path) as engine:
        got = engine.forward(x)
    with torch.no_grad():
        fp32 = model(x).numpy()
        fp64 = model.double()(x.double()).numpy()
    return {
        "model": name, "num_classes": num_classes, "seed": seed, "format": fmt,
        "engine_vs_torch_fp32": rel(got, fp32).round(5).tolist(),
        "engine_vs_torch_fp64": rel(got, fp64).round(5).tolist(),
        "torch_fp32_vs_fp64": rel(fp32, fp64).round(5).tolist(),
        "top1_engine_eq_torch_fp32": (got.argmax(1) == fp32.argmax(1)).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--format", choices=("tq2", "tq1"), default="tq2")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a fixed summation order for the FP32 reference
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, classes in MODELS:
            for seed in range(args.seeds):
                row = measure(name, classes, seed, args.samples, args.format, Path(tmp))
                rows.append(row)
                print(f"{name} seed {seed}: engine vs FP32 {max(row['engine_vs_torch_fp32']):.4f} (max), "
                      f"engine vs FP64 {max(row['engine_vs_torch_fp64']):.4f}, "
                      f"FP32 vs FP64 {max(row['torch_fp32_vs_fp64']):.4f}; "
                      f"top-1 equal {sum(row['top1_engine_eq_torch_fp32'])}/{args.samples}", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
