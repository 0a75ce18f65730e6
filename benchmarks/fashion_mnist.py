"""FTerViT recipe on real Fashion-MNIST with a small ViT, on CPU cores.

FP32 teacher, Phase 1 (forward-KL distillation into the fully ternary student), Phase 2
(recovery at lr 1e-5), then top-1 of all three on the 10,000 test images, and the Phase-2
model exported (tq2) and run in the C engine on the same images (top-1, agreement with PyTorch). The result, with
the gap in percentage points and the wall time, goes to benchmarks/results/fashion_mnist.json
(rewritten after every stage, "status": "running" until the end).

    .venv/bin/python benchmarks/fashion_mnist.py              # ~51 minutes on 2 cores
    .venv/bin/python benchmarks/fashion_mnist.py --teacher-epochs 1 --phase1-epochs 1 --phase2-epochs 1
    .venv/bin/python benchmarks/fashion_mnist.py --teacher runs/fashion_mnist/teacher/last.pth  # students only

Data: the IDX files of the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist),
or --data-dir.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ftervit.cli.quickstart import summary_table
from ftervit.errors import FtervitError
from ftervit.fileio import atomic_write_json
from ftervit.presets import PRESETS
from ftervit.training.recipe import run_recipe

MODEL = "ftervit_fashion_mnist_gap"
# Tuned toward the goals below (issue 14) on 2 cores, both used by DDP (two processes of one thread:
# twice the images per second of one process with two threads). The class-token model of the first
# recipe stopped at 89.1-89.5% (8-15 epochs): mean pooling of the patch tokens (+0.6 pp), then a
# teacher regularized enough to use more epochs: with flips alone it overfit (30 epochs 90.66%, 48
# epochs 90.45%, 97% on its training images); the 2-pixel shift of augment "default" (slower per
# epoch of accuracy, every 7x7 patch moves) plus random erasing and stochastic depth reached 91.31%
# in 45 (docs/training.md). The students keep flips: Phase 1 uses lr 5e-4 for 4 epochs instead of
# 1e-4 for 250; Phase 2 is the SPEC's: 10 epochs at 1e-5.
STAGES: dict[str, dict[str, Any]] = {
    "teacher": dict(epochs=45, lr=1e-3, warmup_epochs=1, drop_path=0.1, augment="default"),
    "phase1": dict(epochs=4, lr=5e-4),
    "phase2": dict(epochs=10, lr=1e-5),
}
SETTINGS = dict(model=MODEL, data="fashion-mnist", batch_size=128, augment="flip", re_prob=0.25, workers=0,
                compile=True)
PROCESSES = 2  # DDP processes (torchrun), one torch thread each
GOALS = {"teacher_top1": 0.91, "gap_pp": 0.3, "minutes": 60}
RESULTS = Path(__file__).parent / "results" / "fashion_mnist.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/fashion_mnist", help="checkpoints and logs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="result JSON")
    parser.add_argument("--data-dir", help="Fashion-MNIST IDX files (default: the Debian package's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process [default: 1]")
    parser.add_argument("--processes", type=int, default=PROCESSES,
                        help=f"DDP processes per stage (torchrun) [default: {PROCESSES}]")
    for stage, settings in STAGES.items():
        parser.add_argument(f"--{stage}-epochs", type=int, default=settings["epochs"], metavar="N")
    parser.add_argument("--teacher", type=Path, metavar="CKPT",
                        help="distil from this FP32 teacher (an earlier run's teacher/last.pth) instead of training "
                             "one; its training minutes, from its log.jsonl, count toward the recipe's time")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    stages = {s: {**settings, "epochs": getattr(args, f"{s}_epochs")} for s, settings in STAGES.items()}
    record: dict[str, Any] = {
        "status": "running", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": PRESETS[MODEL], "settings": SETTINGS, "stages": stages, "goals": GOALS,
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "processes": args.processes, "torch": torch.__version__,
                    "platform": platform.platform(),
                    "load_average_1_5_15_at_start": [round(v, 2) for v in os.getloadavg()],
                    "load_average_1min_after_each_stage": []},
    }
    earlier = 0.0  # minutes of a reused teacher's training
    if args.teacher:
        log = args.teacher.parent / "log.jsonl"
        if not log.is_file():
            parser.error(f"--teacher: no {log} beside the checkpoint to take the teacher's training time from")
        epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        # the epochs' own seconds, or the stage's wall time (config.yaml written at its start, the
        # checkpoint at its end: process start and compilation included) when that is longer
        config = args.teacher.parent / "config.yaml"
        wall = args.teacher.stat().st_mtime - config.stat().st_mtime if config.is_file() else 0.0
        earlier = max(sum(e["seconds"] for e in epochs), wall) / 60
        record["teacher_reused"] = {"checkpoint": str(args.teacher), "epochs": len(epochs),
                                    "minutes": round(earlier, 1)}
        record["stages"]["teacher"] = {**stages["teacher"], "epochs": len(epochs)}
    start = time.perf_counter()

    def report(summary: dict[str, Any]) -> None:
        record.update(summary, minutes=round(earlier + (time.perf_counter() - start) / 60, 1))
        record["machine"]["load_average_1min_after_each_stage"].append(round(os.getloadavg()[0], 2))
        args.results.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.results, record)

    summary = run_recipe(args.out, stages, on_stage=report, export_format="tq2", overwrite=True, quiet=args.quiet,
                         data_dir=args.data_dir, threads=args.threads, processes=args.processes,
                         teacher=args.teacher, **SETTINGS)
    record["status"] = "done"
    report(summary)
    record["goals_met"] = {
        "teacher_top1": summary["teacher_top1"] >= GOALS["teacher_top1"],
        "gap_pp": summary["gap_pp"] <= GOALS["gap_pp"],
        "minutes": record["minutes"] <= GOALS["minutes"],
    }
    report(summary)
    print(summary_table(summary))
    print(f"{record['minutes']} minutes; goals met: {record['goals_met']}; results in {args.results}")


if __name__ == "__main__":
    try:
        main()
    except FtervitError as exc:  # no dataset, a bad option: one line, as the ftervit CLI says it
        print(f"fashion_mnist.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
