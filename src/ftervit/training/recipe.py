"""The whole recipe in one call: FP32 teacher, Phase 1, Phase 2, then evaluation (SPEC section 3).

Used by ``ftervit quickstart`` (digits) and ``benchmarks/fashion_mnist.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftervit.errors import FtervitError
from ftervit.evaluation import evaluate_checkpoints
from ftervit.fileio import atomic_write_json
from ftervit.training.checkpoints import load_training_state
from ftervit.training.config import TrainConfig, save_yaml
from ftervit.training.trainer import train

STAGES = ("teacher", "phase1", "phase2")
_MODE = {"teacher": {"mode": "teacher"}, "phase1": {"mode": "distill", "phase": 1},
         "phase2": {"mode": "distill", "phase": 2}}


def run_recipe(
    out: str | Path,
    stages: dict[str, dict[str, Any]],
    on_stage: Callable[[dict[str, Any]], None] | None = None,
    export_format: str | None = None,
    processes: int = 1,
    teacher: str | Path | None = None,
    **common: Any,
) -> dict[str, Any]:
    """Train the teacher, distill Phase 1 from it, recover with Phase 2, evaluate all three.

    Phase 1 distills from the teacher's ``last.pth`` and Phase 2 starts from Phase 1's
    ``last.pth`` (no selection on the test split). Each stage writes into ``out/<stage>``;
    ``out/summary.json`` gets the result.

    Args:
        out: output directory.
        stages: TrainConfig settings per stage (``teacher``, ``phase1``, ``phase2``), e.g. epochs, lr.
        on_stage: called with the summary so far after each stage (progress reports).
        export_format: ``"tq2"`` or ``"tq1"``: also export the Phase-2 model to ``out/model.ftv``
            and run it in the C engine on the test split (``file_bytes``, ``engine_top1``,
            ``engine_agreement``).
        processes: train each stage in this many processes (DDP, see :func:`train_stage`).
        teacher: an FP32 checkpoint to distil from instead of training one: the teacher stage
            is skipped (no epochs or seconds in the summary), the rest runs as usual.
        **common: TrainConfig settings of every stage (model, data, batch_size, ...).

    Returns:
        The summary: ``teacher_top1``, ``phase1_top1``, ``phase2_top1`` (and top-5) as
        fractions, ``gap_pp`` (teacher minus Phase 2, percentage points), epochs, seconds;
        with ``export_format`` also the file and engine results.
    """
    out = Path(out)
    teacher_ckpt, phase1_ckpt = Path(teacher or out / "teacher" / "last.pth"), out / "phase1" / "last.pth"
    if teacher and not teacher_ckpt.is_file():
        raise FtervitError(f"teacher checkpoint {teacher_ckpt} not found: pass the last.pth of an FP32 run")
    links = {"teacher": {}, "phase1": {"teacher": str(teacher_ckpt)},
             "phase2": {"teacher": str(teacher_ckpt), "init": str(phase1_ckpt)}}
    summary: dict[str, Any] = {"model": common.get("model"), "data": common.get("data"), "epochs": {}, "seconds": {}}
    start = time.perf_counter()
    # Every stage's settings are checked before the first one trains: a bad Phase-2 value fails now.
    configs = {}
    for stage in STAGES[1:] if teacher else STAGES:
        try:
            configs[stage] = TrainConfig(**{**common, **_MODE[stage], **links[stage], **stages.get(stage, {}),
                                            "out": str(out / stage)}).resolved()
        except FtervitError as exc:
            raise FtervitError(f"{stage}: {exc}") from None
    for stage, cfg in configs.items():
        t0 = time.perf_counter()
        if not cfg.quiet:
            print(f"== {stage}: {cfg.epochs} epochs, lr {cfg.lr:g} -> {cfg.out}", flush=True)
        result = train_stage(cfg, processes)
        summary["epochs"][stage] = cfg.epochs
        summary["seconds"][stage] = round(time.perf_counter() - t0, 1)
        summary[f"{stage}_top1"], summary[f"{stage}_top5"] = result["top1"], result["top5"]
        if on_stage:
            on_stage(summary)

    # Re-read the saved files: the numbers come from the checkpoints a user gets.
    kwargs = {k: common[k] for k in ("data_dir", "img_size") if common.get(k)}
    phase1 = evaluate_checkpoints(common["model"], phase1_ckpt, common["data"], teacher=teacher_ckpt, **kwargs)
    phase2 = evaluate_checkpoints(common["model"], out / "phase2" / "last.pth", common["data"], **kwargs)
    for key, metrics in (("teacher", phase1["teacher"]), ("phase1", phase1["ternary"]), ("phase2", phase2["ternary"])):
        summary[f"{key}_top1"], summary[f"{key}_top5"] = metrics["top1"], metrics["top5"]
    summary["test_images"] = phase1["n"]
    summary["gap_pp"] = round(100 * (summary["teacher_top1"] - summary["phase2_top1"]), 2)
    summary["seconds"]["total"] = round(time.perf_counter() - start, 1)
    summary["checkpoints"] = {stage: str(out / stage / "last.pth") for stage in STAGES}
    summary["checkpoints"]["teacher"] = str(teacher_ckpt)
    if export_format:
        t0 = time.perf_counter()
        summary.update(export_and_run(common["model"], out / "phase2" / "last.pth", out / "model.ftv",
                                      export_format, common["data"], quiet=common.get("quiet", False), **kwargs))
        summary["seconds"]["engine"] = round(time.perf_counter() - t0, 1)
        summary["seconds"]["total"] = round(time.perf_counter() - start, 1)
    atomic_write_json(out / "summary.json", summary)
    return summary


def train_stage(cfg: TrainConfig, processes: int = 1) -> dict[str, Any]:
    """``train(cfg)``, or the same run in ``processes`` processes under torchrun (DDP).

    On a CPU machine with a core per process and ``cfg.threads`` = 1, two processes train
    about twice as fast as one process with two threads, which stalls whenever another
    program takes a core. The stage's settings travel as ``OUT/stage.yaml``; the model
    must be one that ``ftervit`` knows (a timm name or preset).

    Returns:
        The result :func:`ftervit.training.train` returns, read back from ``last.pth``.
    """
    if processes == 1:
        return train(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "stage.yaml")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "ftervit", cfg.mode, "-c", str(out / "stage.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads or 1)}
    proc = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True,
                          stdout=subprocess.DEVNULL if cfg.quiet else None)
    if proc.returncode:
        lines = proc.stderr.splitlines()
        refused = [line for line in lines if line.startswith(f"ftervit {cfg.mode}: error: ")]
        if refused:  # the command's own one-line error (bad data, settings): as one process would say it
            raise FtervitError(refused[-1].split("error: ", 1)[1])
        why = lines[-1] if lines else f"exit code {proc.returncode}"  # else torchrun's last words
        raise FtervitError(f"{cfg.mode} in {processes} processes (torchrun) failed: {why}")
    history = load_training_state(out / "last.pth")["history"]
    return {"out": str(out), "epochs": cfg.epochs, "top1": history[-1]["val_top1"], "top5": history[-1]["val_top5"],
            "best_top1": max(h["val_top1"] for h in history), "history": history}


def export_and_run(
    model: str, checkpoint: Path, path: Path, fmt: str, data: str, quiet: bool = False,
    data_dir: str | None = None, img_size: int | None = None,
) -> dict[str, Any]:
    """Export the ternary ``checkpoint`` to ``path`` and compare the C engine with PyTorch on ``data``."""
    from ftervit.evaluation.checkpoints import load_test_split_and_student
    from ftervit.evaluation.engine import compare_engine
    from ftervit.export import export_model

    splits, student = load_test_split_and_student(model, checkpoint, data, data_dir, img_size, ftervit_only=True)
    names = getattr(splits.test, "classes", None) or [str(i) for i in range(splits.num_classes)]
    packed = export_model(student, path, fmt, class_names=names)
    if not quiet:
        print(f"== engine: {path} ({len(packed.data):,} bytes, {fmt}) on the test split", flush=True)
    result = compare_engine(student, path, splits.test, data, progress=not quiet)
    return {
        "file": str(path), "file_format": fmt, "file_bytes": len(packed.data),
        "engine_top1": result["engine"]["top1"], "engine_top5": result["engine"]["top5"],
        "engine_agreement": result["agreement"], "engine_median_rel_diff": result["median_rel_diff"],
        "engine_max_rel_diff": result["max_rel_diff"],
        "engine_arena_bytes": result["arena_bytes"], "engine_kernels": result["kernels"],
    }
