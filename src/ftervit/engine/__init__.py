"""Python binding of the C engine: ``Engine(path).forward(x)``.

The engine is the same code that runs on microcontrollers; this binding loads it with ctypes
(compiled on first use, see :mod:`ftervit.engine.build`) so tests and tools can compare it
with PyTorch.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from ftervit.engine.build import EngineBuildError, library_path
from ftervit.errors import FtervitError

__all__ = ["Engine", "EngineBuildError", "EngineError"]


class EngineError(FtervitError):
    """The engine refused a file or an input."""


class _Config(ctypes.Structure):  # mirrors ftv_config in engine/include/ftervit.h
    _fields_ = [(n, ctypes.c_int) for n in (
        "img_h", "img_w", "patch_h", "patch_w", "in_chans", "embed_dim", "depth", "num_heads",
        "mlp_hidden", "num_classes", "num_tokens")] + [
        ("flags", ctypes.c_uint32), ("format", ctypes.c_uint32),
        ("mean", ctypes.c_float * 4), ("std", ctypes.c_float * 4)]


_lib = None


def _load_library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(str(library_path()))
        p, c_size = ctypes.c_void_p, ctypes.c_size_t
        lib.ftv_model_load_file.argtypes = [ctypes.c_char_p, ctypes.POINTER(p), ctypes.c_char_p, c_size]
        lib.ftv_model_load_file.restype = ctypes.c_int
        lib.ftv_model_free.argtypes = [p]
        lib.ftv_model_config.argtypes = [p]
        lib.ftv_model_config.restype = ctypes.POINTER(_Config)
        lib.ftv_model_arena_bytes.argtypes = [p]
        lib.ftv_model_arena_bytes.restype = c_size
        lib.ftv_model_repacked_bytes.argtypes = [p]
        lib.ftv_model_repacked_bytes.restype = c_size
        lib.ftv_model_set_threads.argtypes = [p, ctypes.c_int]
        lib.ftv_model_set_threads.restype = ctypes.c_int
        lib.ftv_model_kernels.argtypes = [p]
        lib.ftv_model_kernels.restype = ctypes.c_char_p
        lib.ftv_model_class_name.argtypes = [p, ctypes.c_int]
        lib.ftv_model_class_name.restype = ctypes.c_char_p
        lib.ftv_model_forward.argtypes = [p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
        lib.ftv_model_forward.restype = ctypes.c_int
        lib.ftv_model_forward_rollout.argtypes = [p] + [ctypes.POINTER(ctypes.c_float)] * 3
        lib.ftv_model_forward_rollout.restype = ctypes.c_int
        lib.ftv_model_rollout_bytes.argtypes = [p]
        lib.ftv_model_rollout_bytes.restype = c_size
        _lib = lib
    return _lib


class Engine:
    """A .ftv model loaded into the C engine.

    Args:
        path: the .ftv file (validated completely: magic, version, bounds, checksum, codes).
        threads: threads of the forward pass (a fixed pool; the logits do not depend on it).

    The kernels are chosen at load: AVX-512 (VNNI) or AVX2 on x86 CPUs that have them, else
    the portable scalar code; the environment variable ``FTV_KERNELS=avx2`` or
    ``FTV_KERNELS=scalar`` (or ``FTV_FORCE_SCALAR=1``) set before loading caps the choice.
    Every set gives bit-identical logits.

    Calls are serialized by a lock (the model's arena is one), so one engine may be shared by
    threads; they run one pass at a time, each on ``threads`` threads.

    Raises:
        EngineError: the file is missing, damaged or of a newer version.
        EngineBuildError: the engine could not be compiled.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads={threads!r}: expected a positive integer")
        self.threads = threads
        self._lock = threading.Lock()
        self._lib = _load_library()
        self._model = ctypes.c_void_p()
        err = ctypes.create_string_buffer(512)
        status = self._lib.ftv_model_load_file(str(path).encode(), ctypes.byref(self._model), err, len(err))
        if status != 0:
            self._model = None
            message = err.value.decode(errors="replace") or f"status {status}"
            raise EngineError(message if str(path) in message else f"{path}: {message}")
        if threads != 1 and self._lib.ftv_model_set_threads(self._model, threads) != 0:
            self.close()
            raise EngineError(f"threads={threads}: this engine build cannot run that many threads")
        cfg = self._lib.ftv_model_config(self._model).contents
        self.config = {name: getattr(cfg, name) for name, _ in _Config._fields_[:13]}
        self.config["mean"] = tuple(cfg.mean[: cfg.in_chans])
        self.config["std"] = tuple(cfg.std[: cfg.in_chans])
        self.num_classes = cfg.num_classes
        self.input_shape = (cfg.in_chans, cfg.img_h, cfg.img_w)
        self.grid = (cfg.img_h // cfg.patch_h, cfg.img_w // cfg.patch_w)
        names = [self._lib.ftv_model_class_name(self._model, i) for i in range(cfg.num_classes)]
        self.class_names = [n.decode() for n in names] if all(names) else None

    @property
    def arena_bytes(self) -> int:
        """Working memory of the forward pass in bytes, beyond the weights."""
        return int(self._lib.ftv_model_arena_bytes(self._require()))

    @property
    def repacked_bytes(self) -> int:
        """Bytes of the kernels' own copy of the weights (0 for the scalar kernels)."""
        return int(self._lib.ftv_model_repacked_bytes(self._require()))

    @property
    def kernels(self) -> str:
        """The kernels chosen at load: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
        return self._lib.ftv_model_kernels(self._require()).decode()

    def _require(self) -> ctypes.c_void_p:
        if self._model is None:
            raise EngineError("the engine was closed")
        return self._model

    @property
    def rollout_bytes(self) -> int:
        """Bytes of :meth:`forward_rollout`'s workspace (allocated on its first call, not in the arena)."""
        return int(self._lib.ftv_model_rollout_bytes(self._require()))

    def _images(self, x) -> np.ndarray:
        x = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise EngineError(f"expected input (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        return x

    def _check(self, status: int, i: int) -> None:
        if status == 6:  # FTV_ERR_ARG: the pointers are ours, so the image was not finite
            raise EngineError(f"image {i} holds NaN or infinity")
        if status == 5:
            raise EngineError("out of memory for the attention-rollout workspace")
        if status != 0:
            raise EngineError(f"the engine failed on image {i} (status {status})")

    def forward(self, x) -> np.ndarray:
        """Logits (N, classes) of float32 images (N, C, H, W), normalized as the model expects."""
        x = self._images(x)
        out = np.empty((x.shape[0], self.num_classes), dtype=np.float32)
        fp = ctypes.POINTER(ctypes.c_float)
        with self._lock:
            model = self._require()
            for i in range(x.shape[0]):
                self._check(self._lib.ftv_model_forward(model, x[i].ctypes.data_as(fp), out[i].ctypes.data_as(fp)), i)
        return out

    def forward_rollout(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N, classes) and attention-rollout maps (N, grid_h, grid_w) from one pass each.

        The logits equal :meth:`forward`'s to the bit; the maps are what
        :func:`ftervit.analysis.rollout.attention_rollout` computes from the PyTorch model
        (class token's row, or the mean row for models pooled without one), in float32.
        """
        x = self._images(x)
        logits = np.empty((x.shape[0], self.num_classes), dtype=np.float32)
        maps = np.empty((x.shape[0], *self.grid), dtype=np.float32)
        fp = ctypes.POINTER(ctypes.c_float)
        with self._lock:
            model = self._require()
            for i in range(x.shape[0]):
                self._check(self._lib.ftv_model_forward_rollout(
                    model, x[i].ctypes.data_as(fp), logits[i].ctypes.data_as(fp), maps[i].ctypes.data_as(fp)), i)
        return logits, maps

    __call__ = forward

    def close(self) -> None:
        with self._lock:  # waits for a pass in progress
            if self._model is not None:
                self._lib.ftv_model_free(self._model)
                self._model = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_model", None) is not None:
            self.close()
