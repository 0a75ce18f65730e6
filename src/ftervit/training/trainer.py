"""The one training loop behind ``ftervit teacher`` and ``ftervit distill`` (the loss differs).

Teacher: label-smoothed cross-entropy. Distillation: forward KL(teacher || student) on the
logits of the frozen FP32 teacher (plus ``--ce-weight`` times the cross-entropy, an
ablation). AdamW, per-step cosine schedule with linear warmup (timm), validation top-1/top-5
every epoch, ``last.pth``, ``best.pth`` and the ``--save-epochs`` snapshots written
atomically by rank 0. Under ``torchrun`` the model is wrapped in DDP and every process
reads its own shard of each epoch's permutation.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ftervit import __version__
from ftervit.data import build_data, eval_loader, model_data_config
from ftervit.errors import FtervitError
from ftervit.evaluation import evaluate, topk_correct
from ftervit.training import distributed
from ftervit.fileio import atomic_save, atomic_write_text
from ftervit.training.checkpoints import load_training_state, rng_state, set_rng_state
from ftervit.training.config import FIELDS, TrainConfig, save_yaml
from ftervit.training.losses import cross_entropy, distillation_kl
from ftervit.training.models import build_models
from ftervit.training.plots import plot_curves

# Settings that may differ when resuming: where things are and how fast they run, not what is computed.
_RUNTIME = ("data_dir", "download", "out", "workers", "device", "threads", "compile", "save_epochs", "resume",
            "overwrite", "quiet")


def snapshot_name(epoch: int) -> str:
    """The file name of the ``--save-epochs`` snapshot after ``epoch``: ``epoch_NNN.pth``."""
    return f"epoch_{epoch:03d}.pth"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_output_dir(out: Path) -> None:
    """Refuse an output directory that cannot be created or written, before any work is done.

    Raises:
        FtervitError: ``out`` (or the nearest existing folder above it) is a file, or not writable.
    """
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == out else f"cannot be created: {existing} is a file"
        raise FtervitError(f"output directory {out} {what}; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FtervitError(f"output directory {out}: {existing} is not writable; choose another --out")


def _resume_state(cfg: TrainConfig, out: Path) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None; refuses to overwrite an existing run."""
    last = out / "last.pth"
    if not cfg.resume:
        if last.exists() and not cfg.overwrite:
            raise FtervitError(f"{out} already holds a run (last.pth); pass --resume to continue it, "
                               "--overwrite to start afresh, or another --out")
        return None
    state = load_training_state(last)
    saved = state["config"]
    # A setting that an older checkpoint lacks had its default value then.
    differ = [f"{k} ({saved.get(k, FIELDS[k].default)!r} in the checkpoint, {v!r} now)"
              for k, v in cfg.to_dict().items() if k not in _RUNTIME and saved.get(k, FIELDS[k].default) != v]
    if differ:
        raise FtervitError(f"cannot resume {last} exactly with other settings: {'; '.join(differ)}; "
                           "start a new run (another --out, or --init from this checkpoint)")
    return state


class _Stop(FtervitError):
    """A non-finite loss: training stops before the bad step is applied."""


def _train_epoch(model: nn.Module, teacher: nn.Module | None, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 scheduler: CosineLRScheduler, cfg: TrainConfig, env: distributed.DistEnv, epoch: int,
                 step: int) -> tuple[dict[str, float], int]:
    """One pass over this process's shard; returns the epoch's train metrics and the new step."""
    model.train()
    device = env.device
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    show = env.is_main and not cfg.quiet and sys.stderr.isatty()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not show, dynamic_ncols=True)
    for i, (images, targets) in enumerate(bar):
        scheduler.step_update(step)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            logits = model(images)
            if teacher is None:
                loss = cross_entropy(logits, targets, cfg.label_smoothing)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(images)
                loss = distillation_kl(logits, teacher_logits, cfg.temperature)
                if cfg.ce_weight:
                    loss = loss + cfg.ce_weight * cross_entropy(logits, targets)
        if distributed.any_true(not torch.isfinite(loss).item(), device):
            raise _Stop(f"loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1} of {len(loader)} "
                        f"(step {step + 1}); stopped before applying it")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        loss_sum += loss.item() * len(targets)
        correct += topk_correct(logits.detach(), targets, ks=(1,))[0]
        seen += len(targets)
        if show:
            rate = seen * env.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", img_s=f"{rate:.0f}")
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], device)
    return {"train_loss": loss_sum / seen, "train_top1": correct / seen,
            "images_per_s": seen / seconds, "seconds": seconds}, step


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the teacher training or distillation that ``cfg`` describes; return its metrics.

    Writes ``config.yaml``, ``last.pth`` and ``best.pth`` (model, optimizer, scheduler,
    epoch/step, RNG states of every process, config, history), a copy ``epoch_NNN.pth`` after
    each epoch of ``cfg.save_epochs``, ``log.jsonl`` and, at the end, ``curves.png`` into
    ``cfg.out``.

    Raises:
        FtervitError: bad settings, data or checkpoints (nothing is written), or a non-finite
            loss (training stops; the last good checkpoint stays as it was).
    """
    cfg = cfg.resolved()
    env = distributed.setup(cfg.device)
    try:
        return _run(cfg, env)
    finally:
        distributed.cleanup()


def _run(cfg: TrainConfig, env: distributed.DistEnv) -> dict[str, Any]:
    out = Path(cfg.out)
    check_output_dir(out)
    state = _resume_state(cfg, out)
    if cfg.batch_size % env.world_size:
        raise FtervitError(f"batch size {cfg.batch_size} is not divisible by {env.world_size} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + env.rank)

    data = build_data(cfg.data, model_data_config(cfg.model, cfg.img_size), cfg.data_dir, cfg.augment,
                      cfg.re_prob, cfg.download)
    model, teacher = build_models(cfg, data.num_classes)
    model.to(env.device)
    if teacher is not None:
        teacher.to(env.device)

    # Each epoch's order is a function of (seed, epoch) only, so a resumed run sees the same batches;
    # workers are not persistent, so each epoch seeds them afresh from the (saved) torch RNG.
    sampler = DistributedSampler(data.train, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed)
    train_loader = DataLoader(data.train, batch_size=cfg.batch_size // env.world_size, sampler=sampler,
                              num_workers=cfg.workers, drop_last=True, pin_memory=env.device.type == "cuda")
    if len(train_loader) == 0:
        raise FtervitError(f"batch size {cfg.batch_size} exceeds the {len(data.train)} training images")
    val_loader = eval_loader(data.test, cfg.batch_size // env.world_size, cfg.workers, env.rank, env.world_size)

    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_loader)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(cfg.epochs * steps_per_epoch - warmup, 1),
                                  lr_min=cfg.min_lr, warmup_t=warmup, warmup_lr_init=cfg.min_lr,
                                  warmup_prefix=True, t_in_epochs=False)

    start_epoch, step, history, best = 0, 0, [], -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        best = max((h["val_top1"] for h in history), default=-1.0)
        rngs = state["rng"]
        if len(rngs) != env.world_size:
            raise FtervitError(f"last.pth was written by {len(rngs)} processes; resume with the same number "
                               f"(now {env.world_size}) to continue exactly")
        set_rng_state(rngs[env.rank])

    raw = model
    if env.world_size > 1:
        model = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if cfg.compile:  # the frozen teacher too: its forward pass is a third of a distillation step
        model = torch.compile(model)
        teacher = torch.compile(teacher) if teacher is not None else None
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
    distributed.barrier()

    saved = start_epoch  # the epoch of the last.pth on disk
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            try:
                metrics, step = _train_epoch(model, teacher, train_loader, optimizer, scheduler, cfg, env, epoch, step)
            except _Stop as exc:
                kept = f"{out / 'last.pth'} (epoch {epoch}) is kept" if epoch else "no checkpoint had been written"
                raise FtervitError(f"{exc}; {kept}; lower --lr or set --grad-clip") from None
            val = evaluate(raw, val_loader, env.device, cfg.amp)
            record = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"], **metrics,
                      "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"]}
            history.append(record)
            rngs = distributed.gather_objects(rng_state())
            if env.is_main:
                ckpt = {"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "step": step, "history": history,
                        "config": cfg.to_dict(), "rng": rngs, "ftervit_version": __version__}
                atomic_save(out / "last.pth", ckpt)
                saved = epoch + 1
                if saved in cfg.snapshot_epochs:
                    atomic_save(out / snapshot_name(saved), ckpt)
                if val["top1"] > best:
                    atomic_save(out / "best.pth", ckpt)
                atomic_write_text(out / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
                if not cfg.quiet:
                    print(f"epoch {epoch + 1}/{cfg.epochs}  loss {metrics['train_loss']:.4f}  "
                          f"train {metrics['train_top1']:.2%}  val top-1 {val['top1']:.2%} top-5 {val['top5']:.2%}  "
                          f"lr {record['lr']:.2e}  {metrics['images_per_s']:.0f} img/s  {metrics['seconds']:.1f}s",
                          flush=True)
            best = max(best, val["top1"])
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are written atomically, so last.pth is whole
        kept = (f"{out / 'last.pth'} (epoch {saved}) is kept; continue with --resume" if saved
                else "no checkpoint had been written")
        raise KeyboardInterrupt(kept) from None
    if env.is_main and history:
        plot_curves(history, out / "curves.png")
    final = history[-1] if history else {}
    return {"out": str(out), "epochs": cfg.epochs, "top1": final.get("val_top1"), "top5": final.get("val_top5"),
            "best_top1": best, "history": history}
