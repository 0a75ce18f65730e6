"""The packed model file (.ftv): the single source of truth for its layout in Python.

docs/format.md describes the same layout byte by byte and engine/include/ftv_format.h for C;
tests/test_format_c.py compiles the C header against the tables below so the three cannot
drift. Everything is little-endian. A file is::

    header (HEADER_SIZE bytes) | tensor table (num_tensors * ENTRY_SIZE) | zero padding |
    tensor data, each tensor at an offset that is a multiple of ALIGNMENT | CRC32 (4 bytes)

The CRC32 (zlib's, the IEEE 802.3 polynomial) covers every byte before it.
"""
from __future__ import annotations

import enum
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ftervit.errors import FtervitError

MAGIC = b"\x89FTV\r\n\x1a\n"  # PNG-style: a non-ASCII byte, then CRLF/EOF bytes that text-mode copies mangle
VERSION = 1
ALIGNMENT = 64  # cache line, wide enough for AVX-512 and DMA
NAME_SIZE = 48  # bytes of a tensor name, NUL-padded (at most NAME_SIZE - 1 characters)
MAX_DIMS = 4
MAX_CHANNELS = 4  # input mean/std slots in the header
CRC_SIZE = 4

# Limits every reader enforces (engine/include/ftv_format.h holds the same values and
# tests/test_format_c.py compares them). They keep every size computation far from overflow
# and refuse values no trained model has; the float bounds are powers of two, so that float32
# (C) and float64 (Python) comparisons agree exactly.
MAX_DIM = 65536  # every header dimension, and the row length K of every matrix (in_chans * patch_h * patch_w too)
MAX_IMG_SIDE = 4096  # img_h, img_w: the engine quantizes a whole image at once
MAX_TOKENS = 65536  # patches + class token
MAX_DEPTH = 1024
MAX_ACTIVATIONS = 1 << 28  # tokens * max(embed_dim, mlp_hidden, K): the values of one activation matrix
MIN_EPS, MAX_EPS = 2.0 ** -100, 1.0  # ln_eps, rms_eps, quant_eps
MIN_SCALE, MAX_SCALE = 2.0 ** -24, 2.0 ** 24  # ternary scales s (value = code / s), per tensor and per row
MAX_ABS_VALUE = 2.0 ** 24  # every value of a float tensor
MIN_STD, MAX_STD = 2.0 ** -16, 2.0 ** 16  # input std per channel
MAX_ABS_MEAN = 2.0 ** 16  # input mean per channel


class FormatError(FtervitError):
    """A .ftv file is damaged, truncated, of another format or of a newer version."""


class WeightFormat(enum.IntEnum):
    """How every ternary tensor of a file is packed (header field ``format``)."""

    TQ2 = 1  # 4 codes per byte
    TQ1 = 2  # 5 trits per byte, base 3


class Kind(enum.IntEnum):
    """Storage kind of one tensor (tensor-table field ``kind``)."""

    F32 = 1
    F16 = 2
    TQ2 = 3
    TQ1 = 4
    U8 = 5


class Flag(enum.IntFlag):
    """Header ``flags``: the architecture switches of a timm VisionTransformer."""

    CLASS_TOKEN = 1 << 0  # a cls token is prepended to the patch tokens
    NO_EMBED_CLASS = 1 << 1  # pos_embed covers the patch tokens only, added before the cls token is prepended
    LAYER_SCALE = 1 << 2  # blocks.*.ls1/ls2.gamma scale each residual branch
    FINAL_NORM = 1 << 3  # LayerNorm ``norm`` on every token after the last block
    FC_NORM = 1 << 4  # LayerNorm ``fc_norm`` on the pooled feature
    AVG_POOL = 1 << 5  # pool = mean of the patch tokens; otherwise the cls token
    PATCH_BIAS = 1 << 6  # the patch-embedding conv has a bias
    CLASS_NAMES = 1 << 7  # the file holds a ``class_names`` tensor


# (field, struct code). C reads the same bytes as a plain struct: every field sits at its
# natural alignment, so the C struct has no padding (checked by _Static_assert there).
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("magic", "8s"),
    ("version", "I"),
    ("header_size", "I"),
    ("entry_size", "I"),
    ("num_tensors", "I"),
    ("file_size", "Q"),  # the whole file, CRC included
    ("source_params", "Q"),  # parameters of the FP32 model the file was converted from
    ("format", "I"),
    ("flags", "I"),
    ("alignment", "I"),
    ("img_h", "I"),
    ("img_w", "I"),
    ("patch_h", "I"),
    ("patch_w", "I"),
    ("in_chans", "I"),
    ("embed_dim", "I"),
    ("depth", "I"),
    ("num_heads", "I"),
    ("mlp_hidden", "I"),
    ("num_classes", "I"),
    ("ln_eps", "f"),
    ("rms_eps", "f"),
    ("quant_eps", "f"),
    ("mean", f"{MAX_CHANNELS}f"),
    ("std", f"{MAX_CHANNELS}f"),
    ("reserved", "120s"),  # zero; room for later versions
)
ENTRY_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", f"{NAME_SIZE}s"),
    ("kind", "I"),
    ("ndim", "I"),
    ("dims", f"{MAX_DIMS}I"),  # unused dims are 0
    ("offset", "Q"),  # absolute, a multiple of the header's alignment
    ("nbytes", "Q"),
    ("scale", "f"),  # ternary with one scale: s (value = code / s); 0 otherwise
    ("row_bytes", "I"),  # ternary: bytes per packed row; 0 otherwise
)
HEADER_STRUCT = struct.Struct("<" + "".join(code for _, code in HEADER_FIELDS))
ENTRY_STRUCT = struct.Struct("<" + "".join(code for _, code in ENTRY_FIELDS))
HEADER_SIZE = HEADER_STRUCT.size
ENTRY_SIZE = ENTRY_STRUCT.size
CRC_STRUCT = struct.Struct("<I")


def field_layout(fields: Sequence[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """``{field: (offset, size)}`` of a struct described by (name, code) pairs."""
    layout, offset = {}, 0
    for name, code in fields:
        size = struct.calcsize("<" + code)
        layout[name] = (offset, size)
        offset += size
    return layout


def _unpack(fields: Sequence[tuple[str, str]], packed: struct.Struct, data: bytes, offset: int) -> dict:
    values = iter(packed.unpack_from(data, offset))
    out = {}
    for name, code in fields:
        count = int(code[:-1]) if code[:-1] and code[-1] != "s" else 1
        out[name] = next(values) if count == 1 else tuple(next(values) for _ in range(count))
    return out


def _pack(fields: Sequence[tuple[str, str]], packed: struct.Struct, values: dict) -> bytes:
    flat = []
    for name, code in fields:
        v = values[name]
        flat.extend(v if isinstance(v, (tuple, list)) else [v])
    return packed.pack(*flat)


def unpack_header(data: bytes) -> dict:
    return _unpack(HEADER_FIELDS, HEADER_STRUCT, data, 0)


def pack_header(values: dict) -> bytes:
    return _pack(HEADER_FIELDS, HEADER_STRUCT, values)


def unpack_entry(data: bytes, offset: int) -> dict:
    return _unpack(ENTRY_FIELDS, ENTRY_STRUCT, data, offset)


def pack_entry(values: dict) -> bytes:
    return _pack(ENTRY_FIELDS, ENTRY_STRUCT, values)


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table."""

    name: str
    kind: Kind
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    scale: float = 0.0
    row_bytes: int = 0

    def pack(self) -> bytes:
        return pack_entry({
            "name": self.name.encode("utf-8"), "kind": int(self.kind), "ndim": len(self.shape),
            "dims": tuple(self.shape) + (0,) * (MAX_DIMS - len(self.shape)), "offset": self.offset,
            "nbytes": self.nbytes, "scale": self.scale, "row_bytes": self.row_bytes})


def crc32(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


# --- model configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """What an engine needs, besides the tensors, to rebuild the forward pass."""

    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    num_classes: int
    flags: Flag
    mean: tuple[float, ...]  # one per input channel
    std: tuple[float, ...]
    ln_eps: float
    rms_eps: float
    quant_eps: float

    @property
    def num_patches(self) -> int:
        return (self.img_size[0] // self.patch_size[0]) * (self.img_size[1] // self.patch_size[1])

    @property
    def pos_embed_len(self) -> int:
        with_cls = Flag.CLASS_TOKEN in self.flags and Flag.NO_EMBED_CLASS not in self.flags
        return self.num_patches + int(with_cls)


# --- tensors ------------------------------------------------------------------------------

# Groups of stored tensors. Ternary ones are packed with the file's WeightFormat; the floating
# point ones are F16 or F32 (the writer's choice, docs/format.md says why); row scales are F32.
TERNARY = "ternary"  # one scale, in the table entry
TERNARY_ROWS = "ternary_rows"  # one scale per row, in the F32 tensor "<name>_scale" that follows
ROW_SCALE = "row_scale"
CLASS_NAMES = "class_names"  # U8: UTF-8 names, each followed by a NUL byte
FLOAT_GROUPS = ("patch_bias", "channel_scale", "cls_token", "pos_embed", "rmsnorm", "layerscale")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor the file must hold: its name, shape (None: any 1-D) and group."""

    name: str
    shape: tuple[int, ...] | None
    group: str


def tensor_specs(config: ModelConfig) -> list[TensorSpec]:
    """Every tensor of a file with ``config``, in file order (the order of the forward pass).

    Names are the timm parameter names of the ternary model, except ``<conv>.weight_scale``
    (per-channel ternary scales) and ``class_names``.
    """
    d, h, f = config.embed_dim, config.mlp_hidden, config.flags
    specs = [
        TensorSpec("patch_embed.proj.weight", (d, config.in_chans, *config.patch_size), TERNARY_ROWS),
        TensorSpec("patch_embed.proj.weight_scale", (d,), ROW_SCALE),
        TensorSpec("patch_embed.proj.channel_scale", (d,), "channel_scale"),
    ]
    if Flag.PATCH_BIAS in f:
        specs.append(TensorSpec("patch_embed.proj.bias", (d,), "patch_bias"))
    if Flag.CLASS_TOKEN in f:
        specs.append(TensorSpec("cls_token", (1, 1, d), "cls_token"))
    specs.append(TensorSpec("pos_embed", (1, config.pos_embed_len, d), "pos_embed"))

    def layer_norm(prefix: str) -> list[TensorSpec]:
        return [TensorSpec(f"{prefix}.weight", (d,), TERNARY), TensorSpec(f"{prefix}.bias", (d,), TERNARY)]

    def bit_linear(prefix: str, out_features: int, in_features: int) -> list[TensorSpec]:
        return [TensorSpec(f"{prefix}.norm.weight", (in_features,), "rmsnorm"),
                TensorSpec(f"{prefix}.weight", (out_features, in_features), TERNARY)]

    for i in range(config.depth):
        b = f"blocks.{i}"
        specs += layer_norm(f"{b}.norm1") + bit_linear(f"{b}.attn.qkv", 3 * d, d)
        specs += bit_linear(f"{b}.attn.proj", d, d)
        if Flag.LAYER_SCALE in f:
            specs.append(TensorSpec(f"{b}.ls1.gamma", (d,), "layerscale"))
        specs += layer_norm(f"{b}.norm2") + bit_linear(f"{b}.mlp.fc1", h, d) + bit_linear(f"{b}.mlp.fc2", d, h)
        if Flag.LAYER_SCALE in f:
            specs.append(TensorSpec(f"{b}.ls2.gamma", (d,), "layerscale"))
    if Flag.FINAL_NORM in f:
        specs += layer_norm("norm")
    if Flag.FC_NORM in f:
        specs += layer_norm("fc_norm")
    specs += bit_linear("head", config.num_classes, d)
    if Flag.CLASS_NAMES in f:
        specs.append(TensorSpec("class_names", None, CLASS_NAMES))
    return specs


# --- ternary packing ----------------------------------------------------------------------
# A ternary tensor is stored as rows: dim 0 is the row (output channel), the other dims are
# flattened in C order into K codes; a 1-D tensor is one row. Each row starts on a byte
# boundary; its last byte is completed with codes for 0, so kernels may work on whole bytes.
# A code is q + 1 for q in {-1, 0, +1}. tq2: code i of a row goes to bits 2*(i%4) of byte
# i//4 (first code in the low bits; code 3 is invalid). tq1: byte j holds codes 5j..5j+4 as
# sum(code_i * 3**i), first code the least significant digit (bytes above 242 are invalid).

CODES_PER_BYTE = {Kind.TQ2: 4, Kind.TQ1: 5}
_TQ1_POWERS = np.array([1, 3, 9, 27, 81], dtype=np.uint8)
_TQ1_DIGITS = (np.arange(243)[:, None] // np.array([1, 3, 9, 27, 81]) % 3).astype(np.int8)


def ternary_kind(fmt: WeightFormat) -> Kind:
    return Kind.TQ2 if fmt == WeightFormat.TQ2 else Kind.TQ1


def rows_and_k(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, codes per row) of a ternary tensor of ``shape``."""
    if len(shape) == 1:
        return 1, int(shape[0])
    return int(shape[0]), math.prod(int(d) for d in shape[1:])


def row_bytes(k: int, kind: Kind) -> int:
    return -(-k // CODES_PER_BYTE[kind])


def pack_ternary(codes: np.ndarray, kind: Kind) -> np.ndarray:
    """Pack a (rows, K) array of values in {-1, 0, 1} into (rows, row_bytes(K)) uint8."""
    rows, k = codes.shape
    per = CODES_PER_BYTE[kind]
    padded = np.ones((rows, row_bytes(k, kind) * per), dtype=np.uint8)  # 1 = code of q = 0
    padded[:, :k] = codes.astype(np.int8) + 1
    groups = padded.reshape(rows, -1, per)
    if kind == Kind.TQ2:
        return groups[..., 0] | groups[..., 1] << 2 | groups[..., 2] << 4 | groups[..., 3] << 6
    return (groups * _TQ1_POWERS).sum(axis=-1, dtype=np.uint8)


def unpack_ternary(packed: np.ndarray, k: int, kind: Kind) -> np.ndarray:
    """Inverse of :func:`pack_ternary`: int8 (rows, K) values in {-1, 0, 1}.

    Raises:
        FormatError: an invalid code, or padding that does not encode 0.
    """
    rows = packed.shape[0]
    if kind == Kind.TQ2:
        codes = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=-1).astype(np.int8)
        if (codes == 3).any():
            raise FormatError("invalid tq2 code 3 in ternary data")
    else:
        if (packed > 242).any():
            raise FormatError("invalid tq1 byte (above 242) in ternary data")
        codes = _TQ1_DIGITS[packed]
    codes = codes.reshape(rows, -1) - 1
    if codes[:, k:].any():
        raise FormatError("row padding of ternary data does not encode 0")
    return codes[:, :k]
