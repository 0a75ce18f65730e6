"""Shared test set-up: import paths, the tiny training ViT, trained checkpoints built once per session."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

# reference.py (the independent NumPy implementation) and tiny_models.py are imported by name.
sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402,F401  (registers ftervit_test_tiny with timm)
from ftervit.training import TrainConfig, train  # noqa: E402

TINY = "ftervit_test_tiny"
RUN_CLI = Path(__file__).parent / "run_cli.py"


def tiny_config(tmp: Path, name: str, **overrides) -> TrainConfig:
    """A fast run of the tiny model on digits: 1 epoch, 1 thread, no output."""
    settings = dict(model=TINY, data="digits", epochs=1, batch_size=64, lr=2e-3, threads=1, quiet=True, out=str(tmp / name))
    return TrainConfig(**{**settings, **overrides})


def train_stopped_after(cfg: TrainConfig, epochs_done: int) -> None:
    """Train ``cfg`` and stop it as a crash would, once ``epochs_done`` epochs are saved."""
    import ftervit.training.trainer as trainer

    real = trainer._train_epoch

    def stop(*args, **kwargs):
        if args[7] == epochs_done:  # the epoch index
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    trainer._train_epoch = stop
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(cfg)
    finally:
        trainer._train_epoch = real


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``ftervit ARGS`` in a subprocess (tiny test model registered); output captured."""
    return subprocess.run([sys.executable, str(RUN_CLI), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Teacher (2 epochs) and Phase-1 student (1 epoch) checkpoints of the tiny model."""
    tmp = tmp_path_factory.mktemp("trained")
    train(tiny_config(tmp, "teacher", epochs=2, warmup_epochs=0))
    train(tiny_config(tmp, "phase1", mode="distill", teacher=str(tmp / "teacher" / "last.pth"), lr=1e-3))
    return {"teacher": tmp / "teacher" / "last.pth", "phase1": tmp / "phase1" / "last.pth", "dir": tmp}


def state_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# Every kernel set the engine selects by FTV_KERNELS (a set the CPU lacks falls back to one it
# has: "amx" is the AVX-512 set on a CPU without AMX); None: the variable unset, the best set the
# CPU runs.
KERNEL_SETS = ("scalar", "lut", "avx2", "amx", None)


@pytest.fixture()
def each_kernel_set(monkeypatch):
    """``for kernels in each_kernel_set():`` runs its body once per kernel set, with
    ``FTV_KERNELS`` set for an engine loaded in it."""
    def sets():
        for kernels in KERNEL_SETS:
            if kernels:
                monkeypatch.setenv("FTV_KERNELS", kernels)
            else:
                monkeypatch.delenv("FTV_KERNELS", raising=False)
            yield kernels
    return sets
