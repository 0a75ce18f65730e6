"""Shared by the study benchmarks: training runs that are skipped when done, and a time budget.

A study is many short training runs. Each run writes into ``OUT/<name>`` and, when it
finishes, ``OUT/<name>/result.json`` (history, top-1, wall seconds); a rerun of the study
reuses finished runs, so a study can be run in steps (``--max-minutes``) that add up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ftervit.fileio import atomic_write_json, atomic_write_text
from ftervit.training import TrainConfig, train

RESULTS = Path(__file__).parent / "results"


class OutOfTime(Exception):
    """The step's time budget is spent: the study stops between runs (rerun to continue)."""


class Study:
    """Runs under one output folder, with a per-invocation time budget (``None``: no limit)."""

    def __init__(self, out: str | Path, max_minutes: float | None = None, quiet: bool = False) -> None:
        self.out, self.max_minutes, self.quiet = Path(out), max_minutes, quiet
        self.start = time.perf_counter()

    def run(self, name: str, **settings: Any) -> dict[str, Any]:
        """Train ``settings`` (TrainConfig fields) into ``OUT/name``, or return the finished run's record.

        Raises:
            OutOfTime: the budget is spent and the run is not finished yet.
        """
        folder = self.out / name
        done = folder / "result.json"
        if done.is_file():
            record = json.loads(done.read_text())
            if record["settings"] != json.loads(json.dumps(settings)):
                raise SystemExit(f"{folder} holds a finished run with other settings; use another --out")
            return record
        minutes = (time.perf_counter() - self.start) / 60
        if self.max_minutes is not None and minutes >= self.max_minutes:
            raise OutOfTime(f"stopped after {minutes:.1f} minutes before {name}; rerun the same command to continue")
        if not self.quiet:
            print(f"== {name}: {settings.get('epochs')} epochs, lr {settings.get('lr')}", flush=True)
        t0 = time.perf_counter()
        # A run cut short (Ctrl-C, a kill) continues from its last.pth.
        result = train(TrainConfig(**settings, out=str(folder), resume=(folder / "last.pth").is_file(),
                                   quiet=self.quiet))
        record = {"name": name, "settings": settings, "seconds": round(time.perf_counter() - t0, 1),
                  "load_average_1min_at_end": round(os.getloadavg()[0], 2), "top1": result["top1"],
                  "top5": result["top5"], "history": [
                      {k: h[k] for k in ("epoch", "lr", "train_loss", "val_top1", "val_top5", "seconds")}
                      for h in result["history"]],
                  "checkpoint": str(folder / "last.pth")}
        atomic_write_json(done, record)
        return record

    def seconds(self) -> float:
        """Wall seconds of the finished runs (the study's cost, whatever steps it took)."""
        return sum(json.loads(p.read_text())["seconds"] for p in self.out.glob("*/result.json"))


def machine(threads: int) -> dict[str, Any]:
    """Where the numbers were taken: the timing goals are measured on a shared machine."""
    return {"cpus": os.cpu_count(), "threads": threads, "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "torch": torch.__version__, "platform": platform.platform()}


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def study_main(name: str, doc: str, run: Callable[[argparse.Namespace], dict[str, Any]],
               modes: dict[str, dict[str, Any]], table: Callable[[dict[str, Any]], str],
               extra: Callable[[dict[str, Any], argparse.Namespace, str], dict[str, Any]] | None = None) -> None:
    """The command line of a study: run it (or one step of it), then write ``<name>.json`` and ``.md``.

    ``extra(result, args, stem)`` may add to the record (and write more files, e.g. a plot).
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", default=f"runs/{name}", help="checkpoints and logs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the results go")
    parser.add_argument("--teacher", help="reuse this FP32 teacher checkpoint instead of training one")
    parser.add_argument("--data-dir", help="Fashion-MNIST IDX files (default: the Debian package's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the recipe's)")
    parser.add_argument("--max-minutes", type=float, help="start no new run after this many minutes (rerun to continue)")
    parser.add_argument("--smoke", action="store_true", help="digits, a few epochs: checks the script in under 2 minutes")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.mode = modes["smoke" if args.smoke else "fashion-mnist"]
    args.common = dict(args.mode["common"], data_dir=args.data_dir)
    if args.threads:
        args.common["threads"] = args.threads
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        result = run(args)
    except OutOfTime as exc:
        print(exc)
        return
    stem = f"{name}_smoke" if args.smoke else name
    record = {"study": name, "mode": "smoke (digits)" if args.smoke else "fashion-mnist", "started": started,
              "settings": {k: v for k, v in args.mode.items() if k != "common"}, "common": args.mode["common"],
              "machine": machine(args.common.get("threads")), **result, "minutes": round(result["seconds"] / 60, 1)}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    if extra:
        record.update(extra(result, args, stem))
    atomic_write_json(args.results_dir / f"{stem}.json", record)
    atomic_write_text(args.results_dir / f"{stem}.md", table(result))
    print(table(result))
    print(f"{record['minutes']} minutes of training in all; results in {args.results_dir / stem}.json")


def teacher_checkpoint(study: Study, args: argparse.Namespace) -> tuple[str, float]:
    """``--teacher``, or the one the study trains; and its top-1 (the last epoch's, on the test split)."""
    teacher = args.teacher
    if teacher is None:
        study.run("teacher", mode="teacher", **args.common, **args.mode["teacher"])
        teacher = str(study.out / "teacher" / "last.pth")
    return teacher, torch.load(teacher, map_location="cpu", weights_only=True)["history"][-1]["val_top1"]
