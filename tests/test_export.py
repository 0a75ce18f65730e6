"""The .ftv file: bit-exact round trip, published size budgets, damaged files, atomic write."""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ftervit
from ftervit.errors import FtervitError, UnsupportedModelError
from ftervit.export import FormatError, Kind, build, export_model, parse, read
from ftervit.export import format as ftv
from ftervit.quantization import ternary_absmean, ternary_absmean_per_channel


def _bits(a) -> np.ndarray:
    """The IEEE bit patterns of float32 values, to compare scales bit for bit."""
    return np.asarray(a, dtype=np.float32).view(np.uint32)


@functools.lru_cache(maxsize=None)
def _digits_file(fmt: str = "tq2") -> bytes:
    torch.manual_seed(0)
    return build(ftervit.create_model("ftervit_digits"), fmt).data


def _with_crc(buf: bytearray) -> bytes:
    """``buf`` with its CRC recomputed: a file whose damage the checksum cannot see."""
    ftv.CRC_STRUCT.pack_into(buf, len(buf) - ftv.CRC_SIZE, ftv.crc32(bytes(buf[:-ftv.CRC_SIZE])))
    return bytes(buf)


def _set_header(data: bytes, **fields) -> bytes:
    h = ftv.unpack_header(data)
    h.update(fields)
    buf = bytearray(data)
    buf[:ftv.HEADER_SIZE] = ftv.pack_header(h)
    return _with_crc(buf)


# --- round trip ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["tq2", "tq1"])
@pytest.mark.parametrize("kwargs", [{}, {"global_pool": "avg", "init_values": 0.1, "img_size": 10}])
def test_round_trip_bit_exact(tmp_path, fmt, kwargs):
    torch.manual_seed(1)
    model = ftervit.create_model("ftervit_digits", **kwargs)
    with torch.no_grad():  # trained-like values instead of the constant inits
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "channel_scale")) and p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5)
    names = [f"class {i}" for i in range(10)]
    export_model(model, tmp_path / "m.ftv", fmt, class_names=names)
    f = read(tmp_path / "m.ftv")
    params = dict(model.named_parameters())
    assert f.class_names == names and f.format.name.lower() == fmt and f.version == ftv.VERSION
    assert f.config.img_size == (model.patch_embed.img_size[0],) * 2 and f.config.depth == len(model.blocks)
    checked = 0
    for e in f.entries:
        p = params.get(e.name)
        if e.kind in (Kind.TQ2, Kind.TQ1):
            quant = ternary_absmean_per_channel if e.name == "patch_embed.proj.weight" else ternary_absmean
            codes, scale = quant(p.detach())
            np.testing.assert_array_equal(f.tensors[e.name], codes.numpy().astype(np.int8))
            np.testing.assert_array_equal(_bits(f.scales[e.name]), _bits(scale.numpy().reshape(f.scales[e.name].shape)))
        elif e.kind == Kind.F16:
            np.testing.assert_array_equal(f.tensors[e.name], p.detach().half().numpy())
        elif e.kind == Kind.F32 and p is not None:
            np.testing.assert_array_equal(_bits(f.tensors[e.name]), _bits(p.detach().numpy()))
        checked += p is not None
    unused = {f"{n}.bias" for n, m in model.named_modules() if isinstance(m, ftervit.BitLinear)}
    assert checked == len(set(params) - unused)  # every parameter but BitLinear's unused biases


def test_leftover_precision():
    model = ftervit.create_model("ftervit_digits", init_values=0.1)
    kinds = {e.name: e.kind for e in build(model).entries}
    assert kinds["pos_embed"] == Kind.F16 and kinds["blocks.0.attn.qkv.norm.weight"] == Kind.F16
    assert kinds["blocks.0.ls1.gamma"] == Kind.F32 and kinds["patch_embed.proj.channel_scale"] == Kind.F32
    assert "blocks.0.attn.qkv.bias" not in kinds  # never added by BitLinear, so not stored
    with torch.no_grad():
        model.pos_embed.fill_(1e-6)  # an FP16 subnormal: kept in FP32
    assert {e.name: e.kind for e in build(model).entries}["pos_embed"] == Kind.F32


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 23), st.sampled_from([Kind.TQ2, Kind.TQ1]), st.randoms())
def test_pack_unpack_inverse(rows, k, kind, rnd):
    codes = np.array([[rnd.choice((-1, 0, 1)) for _ in range(k)] for _ in range(rows)], dtype=np.int8)
    packed = ftv.pack_ternary(codes, kind)
    assert packed.shape == (rows, ftv.row_bytes(k, kind))
    np.testing.assert_array_equal(ftv.unpack_ternary(packed, k, kind), codes)


def test_packing_is_the_documented_one():
    codes = np.array([[1, -1, 0, 1, -1]], dtype=np.int8)  # codes q + 1: 2, 0, 1, 2, 0
    assert ftv.pack_ternary(codes, Kind.TQ2).tolist() == [[2 | 0 << 2 | 1 << 4 | 2 << 6, 0 | 1 << 2 | 1 << 4 | 1 << 6]]
    assert ftv.pack_ternary(codes, Kind.TQ1).tolist() == [[2 + 0 * 3 + 1 * 9 + 2 * 27 + 0 * 81]]
    with pytest.raises(FormatError, match="code 3"):
        ftv.unpack_ternary(np.array([[0xFF]], dtype=np.uint8), 4, Kind.TQ2)
    with pytest.raises(FormatError, match="above 242"):
        ftv.unpack_ternary(np.array([[243]], dtype=np.uint8), 5, Kind.TQ1)
    with pytest.raises(FormatError, match="padding"):
        ftv.unpack_ternary(np.array([[0]], dtype=np.uint8), 3, Kind.TQ2)  # 4th code is -1


# --- published sizes (random init: the size does not depend on the values) ----------------

@pytest.mark.parametrize("name, kwargs, budgets", [
    ("deit3_small_patch16_224", {}, {"tq2": 5_810_000, "tq1": 4_750_000}),
    ("deit3_small_patch16_384", {}, {"tq2": 6_090_000}),
    ("deit_tiny_patch16_224", {"num_classes": 10}, {"tq2": 1_530_000, "tq1": 1_250_000}),
])
def test_file_size_within_paper_budget(tmp_path, name, kwargs, budgets):
    model = ftervit.create_model(name, **kwargs)
    for fmt, budget in budgets.items():
        path = tmp_path / f"{fmt}.ftv"
        export_model(model, path, fmt)
        assert os.path.getsize(path) <= budget, (name, fmt, os.path.getsize(path))
        assert read(path).file_size == os.path.getsize(path)


# --- damaged files ------------------------------------------------------------------------

def test_damaged_files_are_refused_with_a_reason(tmp_path):
    good = _digits_file()
    parse(good)
    cases = {
        "bad magic": b"PK\x03\x04" + good[4:],
        "newer than": _set_header(good, version=ftv.VERSION + 1),
        "checksum mismatch": good[:3000] + bytes([good[3000] ^ 0x10]) + good[3001:],
        "truncated": good[:-1000],
        "trailing bytes": good + b"\0",
        "shorter than the 256-byte header": good[:100],
        "empty file": b"",
        "implies": _set_header(good, num_classes=11),  # valid CRC, inconsistent table
    }
    for reason, data in cases.items():
        with pytest.raises(FormatError, match=reason):
            parse(data)
    (tmp_path / "bad.ftv").write_bytes(good[:-1])
    with pytest.raises(FormatError, match="bad.ftv: truncated"):
        read(tmp_path / "bad.ftv")
    with pytest.raises(FormatError, match="cannot read"):
        read(tmp_path / "missing.ftv")


def test_inconsistent_entries_are_refused_even_with_a_valid_crc():
    good = _digits_file()
    first = ftv.HEADER_SIZE  # table entry 0: patch_embed.proj.weight
    for field, value, reason in (("offset", 7, "misaligned"), ("nbytes", 1, "bytes where"),
                                 ("kind", Kind.F32, "kind"), ("kind", 99, "unknown kind"),
                                 ("name", b"patch_embed.proj.weigh", "expected")):
        entry = ftv.unpack_entry(good, first)
        entry[field] = value
        buf = bytearray(good)
        buf[first:first + ftv.ENTRY_SIZE] = ftv.pack_entry(entry)
        with pytest.raises(FormatError, match=reason):
            parse(_with_crc(buf))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_refused(data):
    good = _digits_file(data.draw(st.sampled_from(["tq2", "tq1"])))
    pos = data.draw(st.integers(0, len(good) - 1))
    bad = bytearray(good)
    bad[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FormatError):
        parse(bytes(bad))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_truncation_is_refused(data):
    good = _digits_file(data.draw(st.sampled_from(["tq2", "tq1"])))
    with pytest.raises(FormatError):
        parse(good[:data.draw(st.integers(0, len(good) - 1))])


# --- what the format cannot express; writing --------------------------------------------

def test_unsupported_models_are_named():
    import timm

    with pytest.raises(UnsupportedModelError, match="ternary"):
        build(timm.create_model("ftervit_digits"))
    with pytest.raises(UnsupportedModelError, match="register tokens"):
        build(ftervit.create_model("ftervit_digits", reg_tokens=2))
    with pytest.raises(FtervitError, match="3 class names"):
        build(ftervit.create_model("ftervit_digits"), class_names=["a", "b", "c"])
    with pytest.raises(FtervitError, match="unknown format"):
        build(ftervit.create_model("ftervit_digits"), "tq3")


def test_files_the_reader_would_refuse_are_not_written(tmp_path):
    """An image size off the patch grid (timm crops it) and a zero std once gave files that
    inspect and the engine refused (or that divide by zero); they are refused at export."""
    with pytest.raises(UnsupportedModelError, match=r"image size 7x7 that is not a multiple of the patch size 2x2"):
        export_model(ftervit.create_model("ftervit_digits", img_size=7), tmp_path / "a.ftv")
    model = ftervit.create_model("ftervit_digits")
    for kwargs, message in (({"std": [0.0]}, r"std must be positive numbers.*got \[0\.0\]"),
                            ({"std": [-0.5]}, "std must be positive"),
                            ({"mean": [float("nan")]}, "mean must be finite")):
        with pytest.raises(FtervitError, match=message):
            export_model(model, tmp_path / "b.ftv", **kwargs)
    assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    model = ftervit.create_model("ftervit_digits")
    path = tmp_path / "m.ftv"
    path.write_bytes(b"old")
    export_model(model, path)
    assert os.listdir(tmp_path) == ["m.ftv"] and read(path).config.embed_dim == 64
    with pytest.raises(FtervitError, match="does not exist"):
        export_model(model, tmp_path / "no" / "m.ftv")
