"""Small .ftv files for the loader tests and the fuzzer: valid ones of every flag combination,
and a corpus of damaged and forged ones that both readers must refuse with the same message.

    python tests/ftv_corpus.py            # rewrite tests/data/ftv_corpus (files + MANIFEST.tsv)
    python tests/ftv_corpus.py --seeds DIR  # the fuzzer's seeds: a valid file per flag combination

MANIFEST.tsv holds one line per file: its name, a tab, and the Python reader's message for it
(empty for a valid file). tests/test_format_c.py checks that the reader still says that and
that the C loader says the same; engine/tests/test_loader.c checks the C loader on its own
(``make -C engine test``).
"""
from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ftervit.export import format as ftv  # noqa: E402
from ftervit.export.format import (  # noqa: E402
    CLASS_NAMES, ROW_SCALE, TERNARY, TERNARY_ROWS, Flag, FormatError, Kind, ModelConfig, TensorEntry,
    WeightFormat, pack_ternary, row_bytes, rows_and_k, tensor_specs, ternary_kind)
from ftervit.export.reader import parse  # noqa: E402
from ftervit.export.writer import assemble  # noqa: E402
from ftervit.fileio import atomic_write, atomic_write_text  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "data" / "ftv_corpus"
ALL_FLAGS = [Flag(v) for v in range(256) if v & (Flag.CLASS_TOKEN | Flag.AVG_POOL)]  # pooling needs one of them


def synthetic(flags: Flag, fmt: WeightFormat = WeightFormat.TQ2, seed: int = 0, *, img: int = 4, patch: int = 2,
              in_chans: int = 1, dim: int = 6, depth: int = 1, heads: int = 2, hidden: int = 6, classes: int = 3,
              alignment: int = 32, f16: bool | None = None) -> bytes:
    """A valid file of random values: every tensor the flags imply, its floats in F16 or F32
    (``f16`` None: at random, tensor by tensor; row scales are F32 in every file).

    The default shapes are tiny (a few KB) and leave padding in ternary rows (K = 6)."""
    rng = np.random.default_rng(seed)
    config = ModelConfig(img_size=(img, img), patch_size=(patch, patch), in_chans=in_chans, embed_dim=dim,
                         depth=depth, num_heads=heads, mlp_hidden=hidden, num_classes=classes, flags=Flag(flags),
                         mean=(0.5,) * in_chans, std=(0.25,) * in_chans, ln_eps=1e-6, rms_eps=1e-5, quant_eps=1e-5)
    tkind = ternary_kind(fmt)
    payloads = []
    for spec in tensor_specs(config):
        if spec.group in (TERNARY, TERNARY_ROWS):
            rows, k = rows_and_k(spec.shape)
            data = pack_ternary(rng.integers(-1, 2, (rows, k)), tkind).tobytes()
            scale = float(np.float32(rng.uniform(1, 10))) if spec.group == TERNARY else 0.0
            entry = TensorEntry(spec.name, tkind, spec.shape, 0, len(data), scale, row_bytes(k, tkind))
        elif spec.group == CLASS_NAMES:
            data = b"".join(f"class {i}".encode() + b"\0" for i in range(classes))
            entry = TensorEntry(spec.name, Kind.U8, (len(data),), 0, len(data))
        else:
            values = rng.uniform(1, 10, spec.shape) if spec.group == ROW_SCALE else rng.normal(0.5, 0.5, spec.shape)
            half = rng.random() < 0.5 if f16 is None else f16
            kind = Kind.F16 if half and spec.group != ROW_SCALE else Kind.F32
            data = values.astype("<f4" if kind == Kind.F32 else "<f2").tobytes()
            entry = TensorEntry(spec.name, kind, spec.shape, 0, len(data))
        payloads.append((entry, data))
    return assemble(config, fmt, payloads, 0, alignment).data


def seeds() -> dict[str, bytes]:
    """A valid file for every flag combination, tq2 and tq1 alternately, 1 or 2 blocks."""
    return {f"flags{int(f):03d}.ftv": synthetic(f, WeightFormat.TQ2 if i % 2 == 0 else WeightFormat.TQ1, seed=i,
                                                 depth=1 + i % 2) for i, f in enumerate(ALL_FLAGS)}


# --- editing files ------------------------------------------------------------------------

def with_crc(buf: bytes | bytearray) -> bytes:
    """``buf`` with its CRC recomputed: damage that the checksum cannot see."""
    buf = bytearray(buf)
    ftv.CRC_STRUCT.pack_into(buf, len(buf) - ftv.CRC_SIZE, ftv.crc32(bytes(buf[:-ftv.CRC_SIZE])))
    return bytes(buf)


def with_header(data: bytes, **fields) -> bytes:
    h = ftv.unpack_header(data)
    h.update(fields)
    return with_crc(ftv.pack_header(h) + data[ftv.HEADER_SIZE:])


def entry_index(data: bytes, tensor: str) -> int:
    n = ftv.unpack_header(data)["num_tensors"]
    names = [ftv.unpack_entry(data, ftv.HEADER_SIZE + i * ftv.ENTRY_SIZE)["name"].rstrip(b"\0") for i in range(n)]
    return names.index(tensor.encode())


def entry(data: bytes, tensor: str) -> dict:
    return ftv.unpack_entry(data, ftv.HEADER_SIZE + entry_index(data, tensor) * ftv.ENTRY_SIZE)


def with_entry(data: bytes, tensor: str, **fields) -> bytes:
    at = ftv.HEADER_SIZE + entry_index(data, tensor) * ftv.ENTRY_SIZE
    e = ftv.unpack_entry(data, at)
    e.update(fields)
    return with_crc(data[:at] + ftv.pack_entry(e) + data[at + ftv.ENTRY_SIZE:])


def with_data(data: bytes, tensor: str, values: bytes, at: int = 0) -> bytes:
    """The data of ``tensor`` overwritten from byte ``at`` on."""
    start = entry(data, tensor)["offset"] + at
    return with_crc(data[:start] + values + data[start + len(values):])


def f32(*v: float) -> bytes:
    return struct.pack(f"<{len(v)}f", *v)


# --- the corpus ---------------------------------------------------------------------------

def damaged() -> dict[str, bytes]:
    """Damaged and forged files, each with one thing wrong (most with a valid CRC)."""
    base_flags = Flag.CLASS_TOKEN | Flag.PATCH_BIAS | Flag.CLASS_NAMES
    good = synthetic(base_flags, WeightFormat.TQ2, seed=1, f16=False)  # floats in F32
    tq1 = synthetic(Flag.AVG_POOL | Flag.LAYER_SCALE | Flag.FINAL_NORM | Flag.FC_NORM, WeightFormat.TQ1, seed=2,
                    f16=True)
    h = ftv.unpack_header(good)
    corpus = {
        "valid_tq2.ftv": good,
        "valid_tq1.ftv": tq1,
        # damage the checksum sees, and bytes that are not a .ftv file
        "empty.ftv": b"",
        "magic_prefix.ftv": ftv.MAGIC[:5],
        "bad_magic.ftv": b"PK\x03\x04" + good[4:],
        "header_cut.ftv": good[:100],
        "truncated.ftv": good[:-100],
        "trailing_byte.ftv": good + b"\0",
        "flipped_bit.ftv": good[:700] + bytes([good[700] ^ 0x10]) + good[701:],
        "version_newer.ftv": with_header(good, version=ftv.VERSION + 1),
        "version_zero.ftv": with_header(good, version=0),
        "header_size.ftv": with_header(good, header_size=128),
        # header fields (CRC recomputed)
        "format_code.ftv": with_header(good, format=3),
        "unknown_flag_bits.ftv": with_header(good, flags=h["flags"] | 0x300),
        "alignment_1.ftv": with_header(good, alignment=1),
        "alignment_2.ftv": with_header(good, alignment=2),
        "alignment_16.ftv": with_header(good, alignment=16),
        "alignment_48.ftv": with_header(good, alignment=48),
        "dim_zero.ftv": with_header(good, embed_dim=0),
        "image_65536_patch_1.ftv": with_header(good, img_h=65536, img_w=65536, patch_h=1, patch_w=1),
        "image_4096_patch_1.ftv": with_header(good, img_h=4096, img_w=4096, patch_h=1, patch_w=1),
        "patch_values.ftv": with_header(good, img_h=4096, img_w=4096, patch_h=4096, patch_w=4096),
        "activations.ftv": with_header(good, img_h=1024, img_w=1024, patch_h=8, patch_w=8, mlp_hidden=65536),
        "depth_2000.ftv": with_header(good, depth=2000),
        "heads_70000.ftv": with_header(good, num_heads=70000),
        "image_off_grid.ftv": with_header(good, img_h=5),
        "heads_not_divisor.ftv": with_header(good, num_heads=4),
        "in_chans_5.ftv": with_header(good, in_chans=5),
        "unused_mean_slot.ftv": with_header(good, mean=(0.5, 0.1, 0.0, 0.0)),
        "std_zero.ftv": with_header(good, std=(0.0, 0.0, 0.0, 0.0)),
        "std_negative.ftv": with_header(good, std=(-0.5, 0.0, 0.0, 0.0)),
        "std_nan.ftv": with_header(good, std=(float("nan"), 0.0, 0.0, 0.0)),
        "std_tiny.ftv": with_header(good, std=(1e-10, 0.0, 0.0, 0.0)),
        "mean_nan.ftv": with_header(good, mean=(float("nan"), 0.0, 0.0, 0.0)),
        "mean_huge.ftv": with_header(good, mean=(1e10, 0.0, 0.0, 0.0)),
        "eps_zero.ftv": with_header(good, ln_eps=0.0),
        "eps_nan.ftv": with_header(good, rms_eps=float("nan")),
        "eps_huge.ftv": with_header(good, rms_eps=10.0),
        "quant_eps_1e-45.ftv": with_header(good, quant_eps=1e-45),
        "pool_without_cls.ftv": with_header(good, flags=int(Flag.PATCH_BIAS | Flag.CLASS_NAMES)),
        "reserved.ftv": with_header(good, reserved=b"\0" * 7 + b"\x01"),
        "two_problems.ftv": with_header(good, img_w=5, reserved=b"\x01"),
        # the table
        "table_too_big.ftv": with_header(good, num_tensors=1000),
        "depth_over_tensors.ftv": with_header(good, depth=500),
        "tensor_count.ftv": with_header(good, flags=int(base_flags | Flag.LAYER_SCALE)),
        "num_classes.ftv": with_header(good, num_classes=4),
        "name_wrong.ftv": with_entry(good, "pos_embed", name=b"pos_embedding"),
        "name_unterminated.ftv": with_entry(good, "pos_embed", name=b"p" * ftv.NAME_SIZE),
        "name_padding.ftv": with_entry(good, "pos_embed", name=b"pos_embed\0x"),
        "name_empty.ftv": with_entry(good, "pos_embed", name=b""),
        "name_not_utf8.ftv": with_entry(good, "pos_embed", name=b"pos\xffembed"),
        "name_control.ftv": with_entry(good, "pos_embed", name=b"pos\nembed'\\"),
        "ndim_0.ftv": with_entry(good, "pos_embed", ndim=0),
        "ndim_5.ftv": with_entry(good, "pos_embed", ndim=5),
        "unused_dim.ftv": with_entry(good, "cls_token", dims=(1, 1, 6, 1)),
        "kind_unknown.ftv": with_entry(good, "pos_embed", kind=99),
        "kind_f32_for_ternary.ftv": with_entry(good, "head.weight", kind=Kind.F32),
        "kind_tq1_in_tq2_file.ftv": with_entry(good, "head.weight", kind=Kind.TQ1),
        "kind_f16_row_scale.ftv": with_entry(good, "patch_embed.proj.weight_scale", kind=Kind.F16),
        "kind_u8_float.ftv": with_entry(good, "cls_token", kind=Kind.U8),
        "kind_f32_class_names.ftv": with_entry(good, "class_names", kind=Kind.F32),
        "shape.ftv": with_entry(good, "pos_embed", dims=(1, 4, 6, 0)),
        "class_names_0_bytes.ftv": with_entry(good, "class_names", dims=(0, 0, 0, 0), nbytes=0),
        "class_names_2d.ftv": with_entry(good, "class_names", ndim=2, dims=(1, entry(good, "class_names")["dims"][0], 0, 0)),
        "nbytes.ftv": with_entry(good, "blocks.0.attn.qkv.weight", nbytes=entry(good, "blocks.0.attn.qkv.weight")["nbytes"] + 1),
        "row_bytes.ftv": with_entry(good, "blocks.0.mlp.fc1.weight", row_bytes=3),
        "row_bytes_float.ftv": with_entry(good, "pos_embed", row_bytes=4),
        "scale_nan.ftv": with_entry(good, "blocks.0.norm1.weight", scale=float("nan")),
        "scale_zero.ftv": with_entry(good, "blocks.0.norm1.bias", scale=0.0),
        "scale_negative.ftv": with_entry(good, "head.weight", scale=-2.0),
        "scale_1e-45.ftv": with_entry(good, "blocks.0.attn.proj.weight", scale=1e-45),
        "scale_1e30.ftv": with_entry(good, "blocks.0.attn.proj.weight", scale=1e30),
        "scale_on_float.ftv": with_entry(good, "head.norm.weight", scale=1.0),
        "scale_on_row_scaled.ftv": with_entry(good, "patch_embed.proj.weight", scale=1.0),
        "offset_misaligned.ftv": with_entry(good, "pos_embed", offset=entry(good, "pos_embed")["offset"] + 4),
        "offset_overlap.ftv": with_entry(good, "pos_embed", offset=entry(good, "cls_token")["offset"]),
        "offset_in_table.ftv": with_entry(good, "patch_embed.proj.weight", offset=ftv.HEADER_SIZE),
        "offset_past_end.ftv": with_entry(good, "class_names", offset=len(good)),
        "offset_2_64.ftv": with_entry(good, "class_names", offset=2 ** 64 - 32),
        # the data
        "tq2_code_3.ftv": with_data(good, "blocks.0.mlp.fc2.weight", b"\xff"),
        "tq2_padding.ftv": with_data(good, "blocks.0.norm2.weight", b"\x00", at=1),  # codes 4, 5 of K = 6 -> -1
        "tq1_byte_243.ftv": with_data(tq1, "blocks.0.attn.qkv.weight", b"\xf3"),
        "tq1_padding.ftv": with_data(tq1, "norm.bias", b"\x00", at=1),
        "pos_embed_nan.ftv": with_data(good, "pos_embed", f32(float("nan")), at=12),
        "cls_token_inf.ftv": with_data(good, "cls_token", f32(float("-inf"))),
        "rmsnorm_f16_inf.ftv": with_data(tq1, "blocks.0.mlp.fc2.norm.weight", struct.pack("<e", float("inf"))),
        "layer_scale_f16_nan.ftv": with_data(tq1, "blocks.0.ls1.gamma", b"\x00\x7e"),
        "channel_scale_3e38.ftv": with_data(good, "patch_embed.proj.channel_scale", f32(3e38) * 6),
        "bias_1e30.ftv": with_data(good, "patch_embed.proj.bias", f32(0.5, -1e30)),
        "row_scale_zero.ftv": with_data(good, "patch_embed.proj.weight_scale", f32(0.0), at=8),
        "row_scale_negative.ftv": with_data(good, "patch_embed.proj.weight_scale", f32(-3.0)),
        "row_scale_1e-45.ftv": with_data(good, "patch_embed.proj.weight_scale", f32(1e-45)),
        "row_scale_nan.ftv": with_data(good, "patch_embed.proj.weight_scale", f32(float("nan"))),
        "class_names_count.ftv": with_data(good, "class_names", b"\0", at=3),  # "cla", "s 0", ...: 4 names
        "class_names_extra.ftv": with_data(good, "class_names", b"a\0b\0c\0d\0"),
        "class_names_empty_name.ftv": with_data(good, "class_names", b"\0"),
        "class_names_unterminated.ftv": with_data(good, "class_names", b"x", at=entry(good, "class_names")["nbytes"] - 1),
        "class_names_not_utf8.ftv": with_data(good, "class_names", b"\xff"),
        "class_names_overlong.ftv": with_data(good, "class_names", b"\xc0\x80"),
        "class_names_surrogate.ftv": with_data(good, "class_names", b"\xed\xa0\x80"),
        "class_names_truncated_utf8.ftv": with_data(good, "class_names", b"ab\xe2\x82", at=2),
    }
    return corpus


def message(data: bytes) -> str:
    """The Python reader's verdict: '' for a valid file, else its message."""
    try:
        parse(data)
    except FormatError as exc:
        return str(exc)
    return ""


def write_corpus(folder: Path = CORPUS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = damaged()
    for old in folder.glob("*.ftv"):
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        atomic_write(folder / name, data)
    atomic_write_text(folder / "MANIFEST.tsv", "".join(f"{name}\t{message(data)}\n" for name, data in files.items()))


def read_manifest(folder: Path = CORPUS) -> dict[str, str]:
    return dict(line.rstrip("\n").split("\t", 1) for line in (folder / "MANIFEST.tsv").read_text().splitlines(True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=Path, help="write the fuzzer's seeds (valid files) to this folder instead")
    args = parser.parse_args()
    if args.seeds:
        args.seeds.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            atomic_write(args.seeds / name, data)
        return
    write_corpus()


if __name__ == "__main__":
    main()
