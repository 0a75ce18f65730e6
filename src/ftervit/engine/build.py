"""Compiling the C engine into a shared library on first use (no compiler step at install).

The library is cached per source hash in ``$FTERVIT_CACHE`` (default ``~/.cache/ftervit``),
so editing the C sources rebuilds it and concurrent first uses do not collide.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ftervit.errors import FtervitError
from ftervit.fileio import atomic_output

# Same flags as engine/Makefile's library; -ffp-contract=off keeps PyTorch's float rounding.
CFLAGS = ("-std=c11", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-pthread")
LIB_SOURCES = ("ftv_kernels.c", "ftv_kernels_scalar.c", "ftv_kernels_lut.c", "ftv_kernels_avx2.c", "ftv_kernels_avx512.c",
               "ftv_kernels_amx.c", "ftv_threads.c", "ftv_model.c", "ftv_forward.c", "ftv_rollout.c")


class EngineBuildError(FtervitError):
    """The C engine could not be found or compiled."""


def engine_dir() -> Path:
    """The engine/ source folder: ``$FTERVIT_ENGINE_DIR`` or the checkout this package is in."""
    env = os.environ.get("FTERVIT_ENGINE_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "engine"
    if not (path / "src" / LIB_SOURCES[0]).is_file():
        raise EngineBuildError(
            f"C engine sources not found in {path}; set FTERVIT_ENGINE_DIR to the engine/ folder "
            "of an ftervit checkout")
    return path


def library_path(profile: bool = False) -> Path:
    """Path of the compiled engine library, building it first when needed.

    Args:
        profile: the build with ``-DFTV_PROFILE``, whose forward pass times its phases
            (``ftv_model_profile``); the default build carries no timing code.
    """
    src = engine_dir()
    flags = (*CFLAGS, "-DFTV_PROFILE") if profile else CFLAGS
    files = [src / "src" / f for f in LIB_SOURCES] + sorted((src / "include").glob("*.h")) + sorted(
        (src / "src").glob("*.h"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    digest.update(" ".join(flags).encode())
    cache = Path(os.environ.get("FTERVIT_CACHE", Path.home() / ".cache" / "ftervit"))
    lib = cache / f"libftervit-{digest.hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise EngineBuildError("no C compiler found (install gcc or clang, or set CC) to build the ftervit engine")
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_output(lib) as tmp:  # a concurrent user sees no library or the whole one
        cmd = [cc, *flags, f"-I{src / 'include'}", *map(str, files[:len(LIB_SOURCES)]), "-o", str(tmp), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EngineBuildError(f"compiling the engine failed ({' '.join(cmd)}):\n{proc.stderr.strip()}")
    return lib
