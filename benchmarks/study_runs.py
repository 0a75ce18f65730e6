"""Shared by the study benchmarks: training runs that are skipped when done, and a time budget.

A study is many short training runs. Each run writes into ``OUT/<name>`` and, when it
finishes, ``OUT/<name>/result.json`` (history, top-1, wall seconds); a rerun of the study
reuses finished runs, so a study can be run in steps (``--max-minutes``) that add up.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ftervit.fileio import atomic_write_json
from ftervit.training import TrainConfig, train


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
