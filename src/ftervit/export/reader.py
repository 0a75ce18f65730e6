""".ftv bytes -> header, tensor table and decoded tensors, every field checked (format.py)."""
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
    MAX_CHANNELS,
    MAX_DIMS,
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
    entries = _table(data, h, config, ternary_kind(fmt))
    tensors = {e.name: _decode(data, e) for e in entries}
    scales = {e.name: np.float32(e.scale) if e.scale else tensors[e.name + "_scale"]
              for e in entries if e.kind == ternary_kind(fmt)}
    if not all((s > 0).all() for s in scales.values()):
        raise FormatError("a ternary scale is not positive")
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
    sizes = ("img_h", "img_w", "patch_h", "patch_w", "in_chans", "embed_dim", "depth", "num_heads", "mlp_hidden", "num_classes")
    if any(h[k] == 0 for k in sizes):
        raise FormatError("a model dimension is 0: " + ", ".join(f"{k}={h[k]}" for k in sizes))
    c = h["in_chans"]
    flags = Flag(h["flags"])
    problems = []
    if h["img_h"] % h["patch_h"] or h["img_w"] % h["patch_w"]:
        problems.append("image size is not a multiple of the patch size")
    if h["embed_dim"] % h["num_heads"]:
        problems.append("embed_dim is not a multiple of num_heads")
    if c > MAX_CHANNELS or any(h["mean"][c:]) or any(h["std"][c:]):
        problems.append(f"in_chans {c} and the mean/std slots disagree")
    if not all(math.isfinite(m) for m in h["mean"]) or not all(math.isfinite(s) and s > 0 for s in h["std"][:c]):
        problems.append("input mean/std not finite or std not positive")
    if not all(math.isfinite(e) and e > 0 for e in (h["ln_eps"], h["rms_eps"], h["quant_eps"])):
        problems.append("an epsilon is not a positive number")
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


def _entry(raw: dict, index: int) -> TensorEntry:
    name_bytes, nul, padding = raw["name"].partition(b"\0")
    ndim = raw["ndim"]
    if not nul or any(padding) or not name_bytes or not 1 <= ndim <= MAX_DIMS or any(raw["dims"][ndim:]):
        raise FormatError(f"tensor table entry {index} is malformed (name or shape)")
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"tensor table entry {index}: name is not UTF-8") from None
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
    good_scale = (math.isfinite(e.scale) and e.scale > 0) if spec.group == TERNARY else e.scale == 0
    if not good_scale:
        raise FormatError(f"tensor {e.name}: invalid scale {e.scale}")


def _table(data: bytes, h: dict, config: ModelConfig, tkind: Kind) -> list[TensorEntry]:
    n, end_of_data = h["num_tensors"], h["file_size"] - CRC_SIZE
    table_end = HEADER_SIZE + n * ENTRY_SIZE
    if table_end > end_of_data or config.depth > n:  # also bounds the work of tensor_specs below
        raise FormatError(f"tensor table of {n} entries does not fit the file or the model depth")
    specs = tensor_specs(config)
    if n != len(specs):
        raise FormatError(f"{n} tensors where the header's configuration implies {len(specs)}")
    entries, prev_end = [], table_end
    for i, spec in enumerate(specs):
        e = _entry(unpack_entry(data, HEADER_SIZE + i * ENTRY_SIZE), i)
        if e.name != spec.name:
            raise FormatError(f"tensor {i} is {e.name!r} where {spec.name!r} is expected")
        _check_entry(e, spec, tkind)
        if e.offset % h["alignment"] or e.offset < prev_end or e.offset + e.nbytes > end_of_data:
            raise FormatError(f"tensor {e.name}: data offset {e.offset} (+{e.nbytes} bytes) is misaligned, "
                              "overlaps or runs past the end")
        prev_end = e.offset + e.nbytes
        entries.append(e)
    return entries


def _decode(data: bytes, e: TensorEntry) -> np.ndarray:
    if e.kind in (Kind.TQ2, Kind.TQ1):
        rows, k = rows_and_k(e.shape)
        packed = np.frombuffer(data, np.uint8, e.nbytes, e.offset).reshape(rows, e.row_bytes)
        try:
            return unpack_ternary(packed, k, e.kind).reshape(e.shape)
        except FormatError as exc:
            raise FormatError(f"tensor {e.name}: {exc}") from None
    values = np.frombuffer(data, _NUMPY_DTYPES[e.kind], e.nbytes // _ITEM_BYTES[e.kind], e.offset)
    values = values.astype(values.dtype.newbyteorder("=")).reshape(e.shape)
    if e.kind != Kind.U8 and not np.isfinite(values).all():
        raise FormatError(f"tensor {e.name}: holds NaN or infinite values")
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
