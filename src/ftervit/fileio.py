"""Atomic file writes: every file ftervit writes goes through :func:`atomic_output`.

A reader (or a crash, or kill -9) sees the old file or the whole new one, never a part: the
data goes to a temporary file in the same directory, which is fsynced, renamed over the
destination, and the directory is fsynced so that the rename itself survives a power loss.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from ftervit.errors import FtervitError

__all__ = ["atomic_output", "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save",
           "save_figure"]


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on a clean exit it replaces ``path``.

    The caller (or a program it runs, such as a compiler) writes the temporary file; on an
    exception it is removed and ``path`` is untouched.

    Raises:
        FtervitError: the directory does not exist or cannot be written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FtervitError(f"cannot write {path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise FtervitError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        _fsync_path(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise FtervitError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    _fsync_path(path.parent, os.O_RDONLY)  # make the rename itself durable


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with a final newline, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_save(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def save_figure(fig: Any, path: str | Path, dpi: int) -> None:
    """Write a matplotlib figure atomically in the format its file name says (no suffix: PNG), then close it.

    Raises:
        FtervitError: a suffix matplotlib cannot write, or a path that cannot be written.
    """
    import matplotlib.pyplot as plt

    try:
        fmt = Path(path).suffix.lstrip(".").lower() or "png"
        if fmt not in fig.canvas.get_supported_filetypes():
            raise FtervitError(f"cannot write {path}: matplotlib does not write .{fmt} files; use .png, .svg or .pdf")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi)
        atomic_write(path, buf.getvalue())
    finally:
        plt.close(fig)
