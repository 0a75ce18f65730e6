""".ftv bytes -> header, tensor table and decoded tensors, every field checked (format.py).

This is the reference of what a reader refuses. The C loader (engine/src/ftv_model.c) makes
the same checks in the same order with the same messages: tests/test_format_c.py runs both on
a corpus of damaged and forged files (tests/data/ftv_corpus) and on mutated files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftervit.export.format import (
    CLASS_NAMES,
    CRC_SIZE,
    CRC_STRUCT,
    ENTRY_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_ABS_MEAN,
    MAX_ACTIVATIONS,
    MAX_ABS_VALUE,
    MAX_CHANNELS,
    MAX_DEPTH,
    MAX_DIM,
    MAX_DIMS,
    MAX_EPS,
    MAX_IMG_SIDE,
    MAX_SCALE,
    MAX_STD,
    MAX_TOKENS,
    MIN_EPS,
    MIN_SCALE,
    MIN_STD,
    ROW_SCALE,
    TERNARY,
    TERNARY_ROWS,
    VERSION,
    Flag,
    FormatError,
    Kind,
    ModelConfig,
    TensorEntry,
    TensorSpec,
    WeightFormat,
    crc32,
    row_bytes,
    rows_and_k,
    tensor_specs,
    ternary_kind,
    unpack_entry,
    unpack_header,
    unpack_ternary,
)

_ITEM_BYTES = {Kind.F32: 4, Kind.F16: 2, Kind.U8: 1}
_NUMPY_DTYPES = {Kind.F32: "<f4", Kind.F16: "<f2", Kind.U8: "u1"}
_SIZES = ("img_h", "img_w", "patch_h", "patch_w", "in_chans", "embed_dim", "depth", "num_heads", "mlp_hidden",
          "num_classes")


@dataclass(frozen=True)
class FtvFile:
    """A decoded .ftv file.

    Attributes:
        tensors: every table entry by name: ternary tensors as int8 codes in {-1, 0, 1} of
            the tensor's shape, the others as float32 / float16 / uint8 arrays.
        scales: for each ternary tensor, its float32 scale (value = code / scale): shape ()
            for per-tensor scales, (rows,) for per-row ones.
        class_names: the class names, or None when the file has none.
    """

    version: int
    format: WeightFormat
    config: ModelConfig
    source_params: int
    file_size: int
    checksum: int
    entries: list[TensorEntry]
    tensors: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]
    class_names: list[str] | None


def read(path: str | Path) -> FtvFile:
    """Read and check a .ftv file.

    Raises:
        FormatError: the file is missing, not a .ftv file, of a newer version, truncated,
            damaged (checksum) or inconsistent; the message starts with the path.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return parse(data)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None


def _g(v: float) -> str:
    """A float in messages, as C's ``%.9g`` prints it (every NaN as ``nan``)."""
    return "nan" if math.isnan(v) else f"{v:.9g}"


def _show(raw: bytes) -> str:
    """Bytes of a name in messages: printable ASCII as is, anything else as ``\\xNN``."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in b"\\'" else f"\\x{b:02x}" for b in raw)


def parse(data: bytes) -> FtvFile:
    """:func:`read` for bytes already in memory."""
    n = len(data)
    if n == 0:
        raise FormatError("empty file")
    if data[:len(MAGIC)] != MAGIC[:n]:
        raise FormatError("not an FTerViT .ftv file (bad magic bytes)")
    if n < HEADER_SIZE:
        raise FormatError(f"truncated: {n} bytes, shorter than the {HEADER_SIZE}-byte header")
    h = unpack_header(data)
    if h["version"] > VERSION:
        raise FormatError(f"format version {h['version']} is newer than this ftervit reads "
                          f"(version {VERSION}); upgrade ftervit")
    if h["version"] < 1 or h["header_size"] != HEADER_SIZE or h["entry_size"] != ENTRY_SIZE:
        raise FormatError(f"bad header (version {h['version']}, header size {h['header_size']}, "
                          f"entry size {h['entry_size']})")
    if h["file_size"] != n:
        what = "truncated" if n < h["file_size"] else "has trailing bytes"
        raise FormatError(f"{what}: the header says {h['file_size']} bytes, the file has {n}")
    stored, actual = CRC_STRUCT.unpack_from(data, n - CRC_SIZE)[0], crc32(memoryview(data)[:n - CRC_SIZE])
    if stored != actual:
        raise FormatError(f"checksum mismatch (stored CRC32 {stored:08x}, computed {actual:08x}): "
                          "the file is damaged; export it again")
    fmt, config = _config(h)
    tkind = ternary_kind(fmt)
    entries = _table(data, h, config, tkind)
    specs = tensor_specs(config)
    tensors = {e.name: _decode(data, e, spec) for e, spec in zip(entries, specs)}
    scales = {e.name: np.float32(e.scale) if e.scale else tensors[e.name + "_scale"]
              for e in entries if e.kind == tkind}
    names = _class_names(tensors["class_names"], config.num_classes) if "class_names" in tensors else None
    return FtvFile(h["version"], fmt, config, h["source_params"], n, stored, entries, tensors, scales, names)


def _config(h: dict) -> tuple[WeightFormat, ModelConfig]:
    """The weight format and model configuration of a header, checked for sense."""
    if h["format"] not in {f.value for f in WeightFormat}:
        raise FormatError(f"unknown weight format code {h['format']}")
    if h["flags"] & ~sum(Flag):
        raise FormatError(f"unknown flag bits {h['flags']:#x}")
    a = h["alignment"]
    if a < 32 or a & (a - 1):
        raise FormatError(f"alignment {a} is not a power of two of at least 32")
    if any(h[k] == 0 for k in _SIZES):
        raise FormatError("a model dimension is 0: " + ", ".join(f"{k}={h[k]}" for k in _SIZES))
    flags = Flag(h["flags"])
    limits = {k: MAX_IMG_SIDE if k in ("img_h", "img_w") else MAX_DEPTH if k == "depth" else MAX_DIM for k in _SIZES}
    over = [f"{k}={h[k]} (at most {limits[k]})" for k in _SIZES if h[k] > limits[k]]
    if not over:  # every dimension is bounded; then what they imply
        k = h["in_chans"] * h["patch_h"] * h["patch_w"]
        tokens = (h["img_h"] // h["patch_h"]) * (h["img_w"] // h["patch_w"]) + int(Flag.CLASS_TOKEN in flags)
        implied = {"in_chans*patch_h*patch_w": (k, MAX_DIM), "tokens": (tokens, MAX_TOKENS),
                   "tokens*width": (tokens * max(h["embed_dim"], h["mlp_hidden"], k), MAX_ACTIVATIONS)}
        over = [f"{name}={v} (at most {limit})" for name, (v, limit) in implied.items() if v > limit]
    if over:
        raise FormatError("model geometry out of range: " + ", ".join(over))
    c = h["in_chans"]
    problems = []
    if h["img_h"] % h["patch_h"] or h["img_w"] % h["patch_w"]:
        problems.append("image size is not a multiple of the patch size")
    if h["embed_dim"] % h["num_heads"]:
        problems.append("embed_dim is not a multiple of num_heads")
    if c > MAX_CHANNELS or any(h["mean"][c:]) or any(h["std"][c:]):
        problems.append(f"in_chans {c} and the mean/std slots disagree")
    if not all(abs(m) <= MAX_ABS_MEAN for m in h["mean"]) or not all(MIN_STD <= s <= MAX_STD for s in h["std"][:c]):
        problems.append(f"input mean/std out of range (|mean| <= {_g(MAX_ABS_MEAN)}, "
                        f"{_g(MIN_STD)} <= std <= {_g(MAX_STD)})")
    if not all(MIN_EPS <= e <= MAX_EPS for e in (h["ln_eps"], h["rms_eps"], h["quant_eps"])):
        problems.append(f"an epsilon is outside [{_g(MIN_EPS)}, {_g(MAX_EPS)}]")
    if Flag.AVG_POOL not in flags and Flag.CLASS_TOKEN not in flags:
        problems.append("token pooling without a class token")
    if any(h["reserved"]):
        problems.append("reserved header bytes are not zero")
    if problems:
        raise FormatError("inconsistent header: " + "; ".join(problems))
    return WeightFormat(h["format"]), ModelConfig(
        img_size=(h["img_h"], h["img_w"]), patch_size=(h["patch_h"], h["patch_w"]), in_chans=c,
        embed_dim=h["embed_dim"], depth=h["depth"], num_heads=h["num_heads"],
        mlp_hidden=h["mlp_hidden"], num_classes=h["num_classes"], flags=flags,
        mean=tuple(h["mean"][:c]), std=tuple(h["std"][:c]),
        ln_eps=h["ln_eps"], rms_eps=h["rms_eps"], quant_eps=h["quant_eps"])


def _entry(raw: dict, index: int, spec: TensorSpec) -> TensorEntry:
    """Table entry ``index``: well formed, named as ``spec`` says, of a known kind."""
    name_bytes, nul, padding = raw["name"].partition(b"\0")
    ndim = raw["ndim"]
    if not nul or any(padding) or not name_bytes or not 1 <= ndim <= MAX_DIMS or any(raw["dims"][ndim:]):
        raise FormatError(f"tensor table entry {index} is malformed (name or shape)")
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"tensor table entry {index}: name is not UTF-8") from None
    if name != spec.name:
        raise FormatError(f"tensor {index} is '{_show(name_bytes)}' where '{spec.name}' is expected")
    if raw["kind"] not in {k.value for k in Kind}:
        raise FormatError(f"tensor {name}: unknown kind code {raw['kind']}")
    return TensorEntry(name, Kind(raw["kind"]), tuple(raw["dims"][:ndim]), raw["offset"], raw["nbytes"],
                       raw["scale"], raw["row_bytes"])


def _check_entry(e: TensorEntry, spec: TensorSpec, tkind: Kind) -> None:
    """Kind, shape, size and scale of one entry against what the configuration implies."""
    ternary = spec.group in (TERNARY, TERNARY_ROWS)
    allowed = ((tkind,) if ternary else (Kind.F32,) if spec.group == ROW_SCALE
               else (Kind.U8,) if spec.group == CLASS_NAMES else (Kind.F16, Kind.F32))
    if e.kind not in allowed:
        raise FormatError(f"tensor {e.name}: kind {e.kind.name} where {'/'.join(k.name for k in allowed)} is expected")
    if spec.shape is not None and e.shape != spec.shape:
        raise FormatError(f"tensor {e.name}: shape {e.shape}, the header's configuration implies {spec.shape}")
    if spec.group == CLASS_NAMES and len(e.shape) != 1:
        raise FormatError(f"tensor {e.name}: must be 1-D")
    rows, k = rows_and_k(e.shape)
    expected = rows * row_bytes(k, e.kind) if ternary else rows * k * _ITEM_BYTES[e.kind]
    if e.nbytes != expected:
        raise FormatError(f"tensor {e.name}: {e.nbytes} bytes where its shape needs {expected}")
    if e.row_bytes != (row_bytes(k, e.kind) if ternary else 0):
        raise FormatError(f"tensor {e.name}: wrong row_bytes {e.row_bytes}")
    if spec.group == TERNARY:
        if not MIN_SCALE <= e.scale <= MAX_SCALE:
            raise FormatError(f"tensor {e.name}: scale {_g(e.scale)} outside [{_g(MIN_SCALE)}, {_g(MAX_SCALE)}]")
    elif e.scale != 0:
        raise FormatError(f"tensor {e.name}: scale {_g(e.scale)} where 0 is expected")


def _table(data: bytes, h: dict, config: ModelConfig, tkind: Kind) -> list[TensorEntry]:
    n, end_of_data = h["num_tensors"], h["file_size"] - CRC_SIZE
    table_end = HEADER_SIZE + n * ENTRY_SIZE
    if table_end > end_of_data or config.depth > n:
        raise FormatError(f"tensor table of {n} entries does not fit the file or the model depth")
    specs = tensor_specs(config)
    if n != len(specs):
        raise FormatError(f"{n} tensors where the header's configuration implies {len(specs)}")
    entries, prev_end = [], table_end
    for i, spec in enumerate(specs):
        e = _entry(unpack_entry(data, HEADER_SIZE + i * ENTRY_SIZE), i, spec)
        _check_entry(e, spec, tkind)
        if e.offset % h["alignment"] or e.offset < prev_end or e.offset + e.nbytes > end_of_data:
            raise FormatError(f"tensor {e.name}: data offset {e.offset} (+{e.nbytes} bytes) is misaligned, "
                              "overlaps or runs past the end")
        prev_end = e.offset + e.nbytes
        entries.append(e)
    return entries


def _decode(data: bytes, e: TensorEntry, spec: TensorSpec) -> np.ndarray:
    """The data of one entry, checked: valid codes and padding, finite floats in range."""
    if e.kind in (Kind.TQ2, Kind.TQ1):
        rows, k = rows_and_k(e.shape)
        packed = np.frombuffer(data, np.uint8, e.nbytes, e.offset).reshape(rows, e.row_bytes)
        try:
            return unpack_ternary(packed, k, e.kind).reshape(e.shape)
        except FormatError as exc:
            raise FormatError(f"tensor {e.name}: {exc}") from None
    values = np.frombuffer(data, _NUMPY_DTYPES[e.kind], e.nbytes // _ITEM_BYTES[e.kind], e.offset)
    values = values.astype(values.dtype.newbyteorder("=")).reshape(e.shape)
    if e.kind == Kind.U8:
        return values
    if not np.isfinite(values).all():
        raise FormatError(f"tensor {e.name}: holds NaN or infinite values")
    flat = values.reshape(-1).astype(np.float64)
    lo, hi = (MIN_SCALE, MAX_SCALE) if spec.group == ROW_SCALE else (-MAX_ABS_VALUE, MAX_ABS_VALUE)
    bad = (flat < lo) | (flat > hi)
    if bad.any():
        what = "scale" if spec.group == ROW_SCALE else "value"
        raise FormatError(f"tensor {e.name}: {what} {_g(flat[bad.argmax()])} outside [{_g(lo)}, {_g(hi)}]")
    return values


def _class_names(blob: np.ndarray, num_classes: int) -> list[str]:
    raw = blob.tobytes()
    parts = raw.split(b"\0")
    if not raw.endswith(b"\0") or len(parts) - 1 != num_classes or not all(parts[:-1]):
        raise FormatError(f"class_names does not hold {num_classes} NUL-terminated names")
    try:
        return [p.decode("utf-8") for p in parts[:-1]]
    except UnicodeDecodeError:
        raise FormatError("class_names is not UTF-8") from None
