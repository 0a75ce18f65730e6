"""``analyze``: the paper's four analyses of a teacher and its ternary student, in memory or to files.

``ftervit analyze`` is a thin layer over :func:`analyze`; in Python::

    from ftervit.analysis import analyze
    results = analyze(teacher, student, test_set, images=256, out="analysis")
    results["fidelity"]["patch_embed"]["mean"]
"""
from __future__ import annotations

import copy
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from ftervit.analysis.fidelity import fidelity
from ftervit.analysis.importance import importance
from ftervit.analysis.paper import PAPER
from ftervit.analysis.rollout import _attention_modules
from ftervit.analysis.rollout_compare import compare_rollout
from ftervit.analysis.weights import compare_counts, ftv_weight_counts, weight_counts
from ftervit.conversion import make_ternary
from ftervit.device import resolve_device
from ftervit.errors import FtervitError
from ftervit.fileio import atomic_write_json
from ftervit.training.losses import cross_entropy, distillation_kl

__all__ = ["ANALYSES", "analyze", "check_models", "prepare_out", "parse_only"]

ANALYSES = ("importance", "weights", "fidelity", "rollout")
_NEED_TEACHER = ("importance", "fidelity", "rollout")


def parse_only(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"importance,rollout"`` (or a sequence) as analyses in their fixed order.

    Raises:
        FtervitError: an unknown or empty selection.
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in ANALYSES]
    if unknown or not names:
        raise FtervitError(f"unknown analysis {', '.join(unknown) or '(none given)'}; choose from {','.join(ANALYSES)}")
    return tuple(a for a in ANALYSES if a in names)


def prepare_out(out: str | Path) -> Path:
    """Create the output directory and make sure files can be written in it, before any work.

    Raises:
        FtervitError: it cannot be created or written.
    """
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise FtervitError(f"cannot write to --out {out}: {exc.strerror or exc}; choose a writable directory") from None
    return path


def _fp32_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameter shapes without what the ternary operators add (RMSNorm weights, channel scales)."""
    added = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.RMSNorm)}
    return {n: tuple(p.shape) for n, p in model.named_parameters()
            if n not in added and not n.endswith(".channel_scale")}


def check_models(teacher: nn.Module | None, student: nn.Module | None, only: Sequence[str]) -> None:
    """Refuse, before any work, models the selected analyses cannot compare.

    Raises:
        FtervitError: rollout on a model without timm attention blocks, or a teacher and student
            of different architectures.
    """
    if "rollout" in only:
        for m in (teacher, student):
            if m is not None:
                _attention_modules(m)
    if teacher is None or student is None:
        return
    t, s = _fp32_shapes(teacher), _fp32_shapes(student)
    if t != s:
        diff = sorted(n for n in t.keys() | s.keys() if t.get(n) != s.get(n))
        shown = ", ".join(f"{n} {t.get(n, 'missing')} vs {s.get(n, 'missing')}" for n in diff[:4])
        raise FtervitError(f"teacher and student are of different architectures ({len(diff)} parameters differ: "
                           f"{shown}); give the student of this teacher")


def _labels(dataset: Dataset) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return [int(t) for t in targets]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def one_per_class(labels: Sequence[int], n: int) -> list[int]:
    """``n`` indices: the first image of each class in turn, then the next ones of each class."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    chosen: list[int] = []
    rank = 0
    while len(chosen) < min(n, len(labels)):
        for y in sorted(by_class):
            if rank < len(by_class[y]) and len(chosen) < n:
                chosen.append(by_class[y][rank])
        rank += 1
    return chosen


def _batches(dataset: Dataset, indices: Sequence[int], batch_size: int,
             device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False)
    return [(x.to(device), y.to(device)) for x, y in loader]


def _versions() -> dict[str, str]:
    import timm

    from ftervit import __version__

    return {"ftervit": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "python": sys.version.split()[0], "platform": platform.platform()}


def _summary(results: dict) -> dict:
    """The headline numbers of each analysis beside the paper's."""
    out: dict[str, Any] = {}
    if "importance" in results:
        imp = results["importance"]
        out["importance"] = {
            who: {"most_important_layer": imp[who]["most_important_layer"],
                  **{c: {k: imp[who]["components"][c][k] for k in ("param_share", "taylor_share", "hessian_share")}
                     for c in ("layernorm", "patch_embed", "head")}}
            for who in ("teacher", "student")}
        out["importance"]["paper"] = PAPER["importance"]
    if "weights" in results:
        w = results["weights"]
        out["weights"] = {k: {"zero_fraction": w[k]["overall"]["zero_fraction"],
                              **({"absmax_zero_fraction": w[k]["overall"]["absmax_zero_fraction"]}
                                 if "absmax_zero_fraction" in w[k]["overall"] else {})}
                          for k in ("model", "ftv") if k in w}
        if "ftv" in w and "model" in w:
            out["weights"]["ftv_matches_model"] = not w["ftv"]["differs_from_model"]
        out["weights"]["paper"] = PAPER["weights"]
    if "fidelity" in results:
        f = results["fidelity"]
        out["fidelity"] = {"patch_embed_cosine": {k: f["patch_embed"][k] for k in ("mean", "std")},
                           "layernorm_gamma_cosine": f["layernorm"]["gamma"],
                           "layernorm_beta_cosine": f["layernorm"]["beta"],
                           "logits_cosine": f["logits"]["cosine"]["mean"],
                           "top1_agreement": f["logits"]["top1_agreement"], "kl": f["logits"]["kl"],
                           "paper": PAPER["fidelity"]}
    if "rollout" in results:
        r = results["rollout"]
        out["rollout"] = {"mean_cosine": r["mean_cosine"], "mean_iou": r["mean_iou"], "paper": PAPER["rollout"]}
    return out


def analyze(
    teacher: nn.Module | None = None,
    student: nn.Module | None = None,
    dataset: Dataset | None = None,
    *,
    only: str | Sequence[str] = ANALYSES,
    images: int = 512,
    batch_size: int = 64,
    probes: int = 32,
    rollout_images: int = 10,
    seed: int = 0,
    device: str | None = None,
    ftv: str | Path | None = None,
    out: str | Path | None = None,
    settings: dict | None = None,
    progress: bool = False,
) -> dict:
    """Run the selected analyses; with ``out``, write their JSON and PNG files and report.json there.

    Args:
        teacher: the FP32 model (importance, fidelity and rollout need it).
        student: its ternary student; None: ``make_ternary`` of a copy of the teacher.
        dataset: test images ``(image, label)``, normalized for the models.
        only: the analyses to run (names or a comma-separated string).
        images: test images for importance and fidelity (a seeded random subset; all when fewer).
        batch_size: images per forward pass.
        probes: Rademacher probes of the Hessian-trace estimate.
        rollout_images: images for the rollout maps, one per class where possible.
        seed: seeds the image subset and the probes.
        device: ``cpu``, ``cuda``...; None: CUDA when available.
        ftv: a .ftv file whose codes the weights analysis also counts (alone, without models, too).
        out: output directory, created when missing.
        settings: extra entries for report.json's settings (the CLI's model and file names).
        progress: tqdm bars on stderr.

    Returns:
        ``{analysis: result, ..., "report": report}``: the contents of the JSON files.

    Raises:
        FtervitError: missing models or data for an analysis, a teacher and student of different
            architectures, rollout on a model without attention, an unwritable ``out``.
    """
    start = time.perf_counter()
    only = parse_only(only)
    missing = [a for a in only if a in _NEED_TEACHER and teacher is None]
    if missing:
        raise FtervitError(f"{', '.join(missing)} needs the FP32 teacher")
    if dataset is None and any(a in _NEED_TEACHER for a in only):
        raise FtervitError("importance, fidelity and rollout need test images (a dataset)")
    if "weights" in only and teacher is None and student is None and ftv is None:
        raise FtervitError("the weights analysis needs a ternary model or a .ftv file")
    if ftv is not None and "weights" not in only:
        raise FtervitError("a .ftv file is read by the weights analysis only; add weights to the selection")
    out_dir = prepare_out(out) if out is not None else None
    check_models(teacher, student, only)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    if student is None and teacher is not None:
        student = make_ternary(copy.deepcopy(teacher))
    teacher = teacher.to(dev).eval() if teacher is not None else None
    student = student.to(dev).eval() if student is not None else None
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    files: list[str] = []

    def finish(name: str, result: dict, plot: Callable[[Path], None], started: float) -> None:
        results[name] = result
        if out_dir is not None:
            atomic_write_json(out_dir / f"{name}.json", result)
            plot(out_dir / f"{name}.png")
            files.extend([str(out_dir / f"{name}.json"), str(out_dir / f"{name}.png")])
        seconds[name] = round(time.perf_counter() - started, 2)

    from ftervit.analysis import plots

    batches = []
    n_images = 0
    if any(a in only for a in ("importance", "fidelity")):
        n_images = min(images, len(dataset))
        subset = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n_images]
        batches = _batches(dataset, sorted(subset.tolist()), batch_size, dev)
    if "importance" in only:
        t0 = time.perf_counter()
        with torch.no_grad():
            distill_batches = [(x, teacher(x).float()) for x, _ in batches]
        result = {"images": n_images, "batch_size": batch_size, "probes": probes, "seed": seed,
                  "teacher": {"loss": "cross_entropy",
                              **importance(teacher, batches, cross_entropy, probes, seed, progress,
                                           "importance (teacher)")},
                  "student": {"loss": "distillation_kl",
                              **importance(student, distill_batches, distillation_kl, probes, seed, progress,
                                           "importance (student)")},
                  "paper": PAPER["importance"]}
        finish("importance", result, lambda path: plots.plot_importance(result, path), t0)
    if "weights" in only:
        t0 = time.perf_counter()
        counts: dict[str, Any] = {}
        if student is not None:
            counts["model"] = weight_counts(student)
        if ftv is not None:
            counts["ftv"] = {"file": str(ftv), **ftv_weight_counts(ftv)}
            if student is not None:
                counts["ftv"]["differs_from_model"] = compare_counts(counts["model"], counts["ftv"])
        counts["paper"] = PAPER["weights"]
        finish("weights", counts, lambda path: plots.plot_weights(counts, path), t0)
    if "fidelity" in only:
        t0 = time.perf_counter()
        fid = {**fidelity(teacher, student, batches, progress), "paper": PAPER["fidelity"]}
        finish("fidelity", fid, lambda path: plots.plot_fidelity(fid, path), t0)
    if "rollout" in only:
        t0 = time.perf_counter()
        indices = one_per_class(_labels(dataset), rollout_images)
        x, y = next(iter(DataLoader(Subset(dataset, indices), batch_size=len(indices))))
        roll = compare_rollout(teacher, student, x.to(dev), y)
        for row, i in zip(roll["images"], indices):
            row["index"] = i
        roll["paper"] = PAPER["rollout"]
        names = getattr(dataset, "classes", None)
        finish("rollout", roll, lambda path: plots.plot_rollout(roll, x, path, names), t0)
    seconds["total"] = round(time.perf_counter() - start, 2)
    report = {
        "settings": {**(settings or {}), "only": list(only), "images": n_images, "batch_size": batch_size,
                     "probes": probes, "rollout_images": rollout_images, "seed": seed, "device": str(dev),
                     "ftv": str(ftv) if ftv is not None else None, "out": str(out_dir) if out_dir else None},
        "versions": _versions(),
        "seconds": seconds,
        "files": files + ([str(out_dir / "report.json")] if out_dir is not None else []),
        "summary": _summary(results),
    }
    results["report"] = report
    if out_dir is not None:
        atomic_write_json(out_dir / "report.json", report)
    return results
