"""Python binding of the C engine: ``Engine(path).forward(x)``.

The engine is the same code that runs on microcontrollers; this binding loads it with ctypes
(compiled on first use, see :mod:`ftervit.engine.build`) so tests and tools can compare it
with PyTorch.
"""
from __future__ import annotations

import ctypes
import operator
import threading
from pathlib import Path

import numpy as np

from ftervit.engine.build import EngineBuildError, library_path
from ftervit.errors import FtervitError

__all__ = ["MAX_THREADS", "Engine", "EngineBuildError", "EngineError"]

MAX_THREADS = 256  # FTV_MAX_THREADS in engine/include/ftervit.h (tests/test_engine.py compares them)


class EngineError(FtervitError):
    """The engine refused a file or an input."""


class _Config(ctypes.Structure):  # mirrors ftv_config in engine/include/ftervit.h
    _fields_ = [(n, ctypes.c_int) for n in (
        "img_h", "img_w", "patch_h", "patch_w", "in_chans", "embed_dim", "depth", "num_heads",
        "mlp_hidden", "num_classes", "num_tokens")] + [
        ("flags", ctypes.c_uint32), ("format", ctypes.c_uint32),
        ("mean", ctypes.c_float * 4), ("std", ctypes.c_float * 4)]


_libs: dict[bool, ctypes.CDLL] = {}


def _load_library(profile: bool = False) -> ctypes.CDLL:
    if profile not in _libs:
        lib = ctypes.CDLL(str(library_path(profile)))
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
        lib.ftv_model_set_numerics.argtypes = [p, ctypes.c_int]
        lib.ftv_model_set_numerics.restype = ctypes.c_int
        lib.ftv_model_numerics.argtypes = [p]
        lib.ftv_model_numerics.restype = ctypes.c_int
        lib.ftv_model_profile.argtypes = [p, ctypes.POINTER(ctypes.c_double), ctypes.c_int]
        lib.ftv_model_profile.restype = ctypes.c_int
        lib.ftv_profile_phase_name.argtypes = [ctypes.c_int]
        lib.ftv_profile_phase_name.restype = ctypes.c_char_p
        lib.ftv_model_forward_rollout.argtypes = [p] + [ctypes.POINTER(ctypes.c_float)] * 3
        lib.ftv_model_forward_rollout.restype = ctypes.c_int
        lib.ftv_model_rollout_bytes.argtypes = [p]
        lib.ftv_model_rollout_bytes.restype = c_size
        lib.ftv_status_string.argtypes = [ctypes.c_int]
        lib.ftv_status_string.restype = ctypes.c_char_p
        _libs[profile] = lib
    return _libs[profile]


class Engine:
    """A .ftv model loaded into the C engine.

    Args:
        path: the .ftv file (validated completely: magic, version, bounds, checksum, codes).
        threads: threads of the forward pass (a fixed pool; the logits do not depend on it).
        profile: load the engine built with ``-DFTV_PROFILE``, which times the phases of its
            forward pass (:meth:`profile`); same logits, slightly slower.
        numerics: ``"exact"`` (every kernel set computes the same bits) or ``"fast"``
            (fused multiply-adds, and bf16 attention products on CPUs with AVX512_BF16, on
            AMX tiles where the CPU has AMX; x86 kernels only): see docs/engine.md for its
            measured effect on accuracy.

    The kernels are chosen at load: AMX, AVX-512 (VNNI) or AVX2 on x86 CPUs that have them,
    else the portable scalar code; the environment variable ``FTV_KERNELS=avx512``,
    ``FTV_KERNELS=avx2`` or ``FTV_KERNELS=scalar`` (or ``FTV_FORCE_SCALAR=1``) set before
    loading caps the choice. Every set gives bit-identical logits in the exact mode.

    One engine may be shared by threads: its calls are serialized (a lock around each
    :meth:`forward`, since the model has one arena of working memory), and :meth:`close`
    waits for a running call to end. For parallel throughput, give each thread its own
    engine, or one engine ``threads=N``.

    Raises:
        EngineError: the file is missing, damaged or of a newer version.
        EngineBuildError: the engine could not be compiled.
        ValueError: ``threads`` is not an integer from 1 to :data:`MAX_THREADS`.
    """

    NUMERICS = ("exact", "fast")

    def __init__(self, path: str | Path, threads: int = 1, profile: bool = False, numerics: str = "exact") -> None:
        self._model = None
        self._lock = threading.Lock()
        try:  # any integer (numpy's too), but not a bool or a float
            if isinstance(threads, bool):
                raise TypeError
            threads = operator.index(threads)
        except TypeError:
            raise ValueError(f"threads={threads!r}: expected an integer from 1 to {MAX_THREADS}") from None
        if not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads={threads}: expected an integer from 1 to {MAX_THREADS}")
        if numerics not in self.NUMERICS:
            raise ValueError(f"numerics={numerics!r}: expected one of {', '.join(self.NUMERICS)}")
        self.threads = threads
        self._lib = _load_library(profile)
        self._model = ctypes.c_void_p()
        err = ctypes.create_string_buffer(512)
        status = self._lib.ftv_model_load_file(str(path).encode(), ctypes.byref(self._model), err, len(err))
        if status != 0:
            self._model = None
            message = err.value.decode(errors="replace") or f"status {status}"
            raise EngineError(message if str(path) in message else f"{path}: {message}")
        if threads != 1 and (status := self._lib.ftv_model_set_threads(self._model, threads)) != 0:
            self.close()
            raise EngineError(f"threads={threads}: {self._lib.ftv_status_string(status).decode()}")
        if numerics == "fast" and self._lib.ftv_model_set_numerics(self._model, 1) != 0:
            kernels = self.kernels
            self.close()
            raise EngineError(f"numerics='fast': the {kernels} kernels have no fast mode (x86 with AVX2, AVX-512 or AMX only)")
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
        with self._lock:
            return int(self._lib.ftv_model_arena_bytes(self._require()))

    @property
    def repacked_bytes(self) -> int:
        """Bytes of the kernels' own copy of the weights (0 for the scalar kernels)."""
        with self._lock:
            return int(self._lib.ftv_model_repacked_bytes(self._require()))

    @property
    def numerics(self) -> str:
        """``"exact"`` or ``"fast"``."""
        with self._lock:
            return self.NUMERICS[self._lib.ftv_model_numerics(self._require())]

    @property
    def kernels(self) -> str:
        """The kernels chosen at load: ``"amx"``, ``"avx512"``, ``"avx2"`` or ``"scalar"``, the best the CPU
        runs unless ``FTV_KERNELS`` caps the choice; ``"lut"`` only when ``FTV_KERNELS`` names it."""
        with self._lock:
            return self._lib.ftv_model_kernels(self._require()).decode()

    def profile(self) -> dict[str, float]:
        """Seconds of the forward passes since the last call, by phase (``embed``,
        ``norm_quant``, ``gemm``, ``attention``, ``gelu``, ``wait``, ``other``), summed over the
        threads; then starts counting afresh.

        Raises:
            EngineError: the engine was not loaded with ``profile=True``.
        """
        seconds = (ctypes.c_double * 16)()
        with self._lock:
            n = self._lib.ftv_model_profile(self._require(), seconds, len(seconds))
        if n == 0:
            raise EngineError("this engine does not time its phases: load it with Engine(path, profile=True)")
        return {self._lib.ftv_profile_phase_name(i).decode(): seconds[i] for i in range(n)}

    def _require(self) -> ctypes.c_void_p:
        """The C model; call with ``self._lock`` held, so that close() cannot free it meanwhile."""
        if self._model is None:
            raise EngineError("the engine was closed")
        return self._model

    @property
    def rollout_bytes(self) -> int:
        """Bytes of :meth:`forward_rollout`'s workspace (allocated on its first call, not in the arena)."""
        with self._lock:
            return int(self._lib.ftv_model_rollout_bytes(self._require()))

    def _images(self, x) -> np.ndarray:
        x = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise EngineError(f"expected input (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        return x

    def _check(self, status: int, i: int, n: int) -> None:
        if status != 0:
            where = f"image {i}: " if n > 1 else ""
            raise EngineError(where + self._lib.ftv_status_string(status).decode())

    def forward(self, x) -> np.ndarray:
        """Logits (N, classes) of float32 images (N, C, H, W), normalized as the model expects.

        Raises:
            EngineError: a wrong shape, an image with NaN or infinite values, or one whose
                forward pass overflows float range (values near 1e38); the engine closed.
        """
        x = self._images(x)
        out = np.empty((x.shape[0], self.num_classes), dtype=np.float32)
        fp = ctypes.POINTER(ctypes.c_float)
        with self._lock:
            model = self._require()
            for i in range(x.shape[0]):
                status = self._lib.ftv_model_forward(model, x[i].ctypes.data_as(fp), out[i].ctypes.data_as(fp))
                self._check(status, i, len(x))
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
                    model, x[i].ctypes.data_as(fp), logits[i].ctypes.data_as(fp), maps[i].ctypes.data_as(fp)), i, len(x))
        return logits, maps

    __call__ = forward

    def close(self) -> None:
        """Free the model; waits for a call that is running in another thread."""
        with self._lock:
            if self._model is not None:
                self._lib.ftv_model_free(self._model)
                self._model = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_model", None) is not None and hasattr(self, "_lock"):
            self.close()
