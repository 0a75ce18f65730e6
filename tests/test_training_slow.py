"""Subprocess tests: kill -9 during Phase 1 then --resume, and 2-process DDP (gloo, CPU)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import RUN_CLI, TINY, run_cli, state_of, tiny_config
from ftervit.errors import FtervitError
from ftervit.training import TrainConfig, train


@pytest.mark.slow
def test_kill_9_during_phase1_then_resume_equals_uninterrupted(trained, tmp_path):
    settings = dict(mode="distill", teacher=str(trained["teacher"]), epochs=3, lr=1e-3)
    train(tiny_config(tmp_path, "ref", **settings))  # the uninterrupted run, in-process
    args = ["distill", "--model", TINY, "--teacher", settings["teacher"], "--epochs", "3", "--lr", "1e-3",
            "--batch-size", "64", "--threads", "1", "--quiet", "--out", str(tmp_path / "cut")]
    proc = subprocess.Popen([sys.executable, str(RUN_CLI), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "cut" / "log.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)  # epoch 1 is saved: this lands in epoch 2 (or later)
    assert proc.wait() == -signal.SIGKILL
    assert 1 <= torch.load(tmp_path / "cut" / "last.pth", weights_only=True)["epoch"] < 3

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = state_of(tmp_path / "ref" / "last.pth"), state_of(tmp_path / "cut" / "last.pth")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(trained, tmp_path):
    # Distillation: the ternary student under DDP (its unused BitLinear biases must not stall it).
    # No augmentation: each process draws its own random numbers, so only then are the runs comparable.
    settings = dict(mode="distill", teacher=str(trained["teacher"]), lr=1e-4, augment="none")
    train(tiny_config(tmp_path, "single", **settings))
    args = ["distill", "--model", TINY, "--teacher", settings["teacher"], "--lr", "1e-4", "--augment", "none",
            "--epochs", "1", "--batch-size", "64", "--quiet", "--out", str(tmp_path / "ddp")]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(RUN_CLI), *args], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = state_of(tmp_path / "single" / "last.pth"), state_of(tmp_path / "ddp" / "last.pth")
    # Same samples per step, gradients averaged over the two halves: equal up to summation order.
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
    one = torch.load(tmp_path / "single" / "last.pth", weights_only=True)["history"][-1]
    two = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)
    assert len(two["rng"]) == 2 and two["step"] == 1437 // 64
    assert abs(one["val_top1"] - two["history"][-1]["val_top1"]) <= 1 / 360
    assert one["train_top1"] == pytest.approx(two["history"][-1]["train_top1"], abs=2 / 1408)


@pytest.mark.slow
def test_recipe_stage_in_two_processes(tmp_path):
    """run_recipe(processes=2): a stage runs under torchrun, and its result is read back from last.pth."""
    from ftervit.training.recipe import train_stage

    cfg = TrainConfig(model="ftervit_digits", data="digits", epochs=1, batch_size=64, augment="none", threads=1,
                      quiet=True, out=str(tmp_path / "t"))
    result = train_stage(cfg, processes=2)
    ckpt = torch.load(tmp_path / "t" / "last.pth", weights_only=True)
    assert len(ckpt["rng"]) == 2 and ckpt["step"] == 1437 // 64
    assert result["top1"] == ckpt["history"][-1]["val_top1"] and result["history"] == ckpt["history"]
    bad = TrainConfig(model="ftervit_digits", data="digits", epochs=1, batch_size=63, threads=1, quiet=True,
                      out=str(tmp_path / "bad"))
    with pytest.raises(FtervitError, match=r"^batch size 63 is not divisible"):  # the command's own words
        train_stage(bad, processes=2)
