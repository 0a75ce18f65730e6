"""Shared by the study benchmarks: training runs side by side, skipped when done, and a time budget.

A study is many short training runs. Each run writes into ``OUT/<name>`` and, when it
finishes, ``OUT/<name>/result.json`` (history, top-1, wall seconds); a rerun of the study
reuses finished runs, so a study can be run in steps (``--max-minutes``) that add up. Runs
that do not depend on each other train side by side, one process and one torch thread
each: on this project's 2-core machines two one-thread runs go twice as fast as one run
with two threads, which stalls whenever another process takes a core.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ftervit.fileio import atomic_write_json, atomic_write_text
from ftervit.training import TrainConfig, train

RESULTS = Path(__file__).parent / "results"
PARALLEL = 2  # runs side by side: one per core


class OutOfTime(Exception):
    """The step's time budget is spent: the study stops between runs (rerun to continue)."""


def _train_run(folder: str, name: str, settings: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Train one run (in a worker process) and write its ``result.json``."""
    path = Path(folder)
    t0 = time.perf_counter()
    # A run cut short (Ctrl-C, a kill) continues from its last.pth.
    result = train(TrainConfig(**settings, out=folder, resume=(path / "last.pth").is_file(), quiet=quiet))
    record = {"name": name, "settings": settings, "seconds": round(time.perf_counter() - t0, 1),
              "load_average_1min_at_end": round(os.getloadavg()[0], 2), "top1": result["top1"],
              "top5": result["top5"], "history": [
                  {k: h[k] for k in ("epoch", "lr", "train_loss", "val_top1", "val_top5", "seconds")}
                  for h in result["history"]],
              "checkpoint": str(path / "last.pth")}
    atomic_write_json(path / "result.json", record)
    return record


class Study:
    """Runs under one output folder, with a per-invocation time budget (``None``: no limit).

    The study's cost is its wall time: each invocation that trained something adds its own
    to ``OUT/wall_seconds.json``.
    """

    def __init__(self, out: str | Path, max_minutes: float | None = None, quiet: bool = False,
                 parallel: int = PARALLEL) -> None:
        self.out, self.max_minutes, self.quiet, self.parallel = Path(out), max_minutes, quiet, parallel
        self.start = time.perf_counter()
        self.trained = False

    def run(self, name: str, **settings: Any) -> dict[str, Any]:
        """One run: :meth:`run_all` of ``{name: settings}``."""
        return self.run_all({name: settings})[name]

    def run_all(self, jobs: dict[str, dict[str, Any]],
                after: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
        """Train ``jobs``, ``parallel`` at a time, each once those it depends on are finished.

        Args:
            jobs: run name -> TrainConfig fields; each trains into ``OUT/<name>``. Finished
                runs (``result.json``) are reused.
            after: run name -> the runs of ``jobs`` it needs (its ``--init``); started in
                the order of ``jobs`` as soon as those are done.

        Raises:
            OutOfTime: the budget was spent before every run had started (those started finish).
        """
        after = after or {}
        unknown = {d for deps in after.values() for d in deps} - set(jobs)
        if unknown:
            raise ValueError(f"runs depend on {sorted(unknown)}, which are not among the jobs")
        records: dict[str, dict[str, Any]] = {}
        for name, settings in jobs.items():
            done = self.out / name / "result.json"
            if done.is_file():
                records[name] = json.loads(done.read_text())
                if records[name]["settings"] != json.loads(json.dumps(settings)):
                    raise SystemExit(f"{self.out / name} holds a finished run with other settings; use another --out")
        waiting = [name for name in jobs if name not in records]
        if not waiting:
            return records
        self.trained = True
        running: dict[Future, str] = {}
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
        with ProcessPoolExecutor(self.parallel, mp_context=context) as pool:
            while waiting or running:
                ready = [n for n in waiting if all(d in records for d in after.get(n, ()))]
                minutes = (time.perf_counter() - self.start) / 60
                out_of_time = self.max_minutes is not None and minutes >= self.max_minutes
                while ready and len(running) < self.parallel and not out_of_time:
                    name = ready.pop(0)
                    waiting.remove(name)
                    if not self.quiet:
                        print(f"== {name}: {jobs[name].get('epochs')} epochs, lr {jobs[name].get('lr')}", flush=True)
                    running[pool.submit(_train_run, str(self.out / name), name, jobs[name], self.quiet)] = name
                if not running:
                    break  # out of time (or nothing can start): the rest waits for the next step
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    records[running.pop(future)] = future.result()
        if waiting:
            raise OutOfTime(f"stopped after {(time.perf_counter() - self.start) / 60:.1f} minutes before "
                            f"{', '.join(waiting)}; rerun the same command to continue")
        return records

    def records(self) -> list[dict[str, Any]]:
        """The records of every finished run under ``OUT``."""
        return [json.loads(p.read_text()) for p in sorted(self.out.glob("*/result.json"))]

    def close(self) -> None:
        """Add this invocation's wall time to ``OUT/wall_seconds.json`` if it trained anything."""
        if not self.trained:
            return
        path = self.out / "wall_seconds.json"
        steps = json.loads(path.read_text()) if path.is_file() else []
        atomic_write_json(path, steps + [round(time.perf_counter() - self.start, 1)])

    def seconds(self) -> float:
        """Wall seconds of every invocation that trained (the study's cost, whatever steps it took)."""
        path = self.out / "wall_seconds.json"
        return sum(json.loads(path.read_text())) if path.is_file() else 0.0


def machine(threads: int) -> dict[str, Any]:
    """Where the numbers were taken: the timing goals are measured on a shared machine."""
    return {"cpus": os.cpu_count(), "threads": threads, "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "torch": torch.__version__, "platform": platform.platform()}


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def study_main(name: str, doc: str, run: Callable[[argparse.Namespace, Study], dict[str, Any]],
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
    parser.add_argument("--threads", type=int, default=1,
                        help=f"torch CPU threads of each run [default: 1; {PARALLEL} runs go side by side]")
    parser.add_argument("--max-minutes", type=float, help="start no new run after this many minutes (rerun to continue)")
    parser.add_argument("--smoke", action="store_true", help="digits, a few epochs: checks the script in under 2 minutes")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.mode = modes["smoke" if args.smoke else "fashion-mnist"]
    args.common = dict(args.mode["common"], data_dir=args.data_dir)
    args.common["threads"] = args.threads
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    study = Study(args.out, args.max_minutes, args.quiet)
    try:
        result = run(args, study)
    except OutOfTime as exc:
        print(exc)
        return
    finally:
        study.close()
    result["seconds"] = round(study.seconds(), 1)
    result["run_seconds"] = round(sum(r["seconds"] for r in study.records()), 1)
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
