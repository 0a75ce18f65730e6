"""The C engine and the Python package read .ftv files by one contract.

engine/include/ftv_format.h agrees with ftervit.export.format (constants, limits, struct
layout, CRC, ternary unpacking, FP16 decoding: a C program reads a file the Python writer
made); the tensor table of engine/include/ftv_tensors.h is tensor_specs() for every flag
combination; and the C loader accepts and refuses exactly what the Python reader does, with
the same message, on the shared corpus of damaged and forged files and on mutated files."""
from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftervit
import ftv_corpus
from ftervit.engine import _load_library
from ftervit.export import format as ftv
from ftervit.export import export_model, read

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "engine" / "include" / "ftv_format.h"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

# Decode every tensor of a file into one stream: ternary and u8 as int8/uint8 bytes, floats
# as float32, in table order; exit 3 on a bad magic, size or CRC.
_DECODER = r"""
#include <stdio.h>
#include <stdlib.h>
static int decode(const char *in, const char *out) {
    FILE *f = fopen(in, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) return 2;
    fclose(f);
    const ftv_header *h = (const ftv_header *)buf;
    uint32_t crc;
    memcpy(&crc, buf + n - FTV_CRC_SIZE, sizeof crc);
    if (memcmp(h->magic, FTV_MAGIC, FTV_MAGIC_SIZE) || h->version != FTV_VERSION ||
        h->file_size != (uint64_t)n || ftv_crc32(0, buf, (size_t)n - FTV_CRC_SIZE) != crc) return 3;
    FILE *o = fopen(out, "wb");
    const ftv_tensor *t = (const ftv_tensor *)(buf + h->header_size);
    for (uint32_t i = 0; i < h->num_tensors; i++, t++) {
        const uint8_t *d = buf + t->offset;
        if (t->kind == FTV_KIND_TQ2 || t->kind == FTV_KIND_TQ1) {
            uint64_t rows = t->ndim == 1 ? 1 : t->dims[0], k = 1;
            for (uint32_t j = t->ndim == 1 ? 0 : 1; j < t->ndim; j++) k *= t->dims[j];
            for (uint64_t r = 0; r < rows; r++)
                for (uint32_t c = 0; c < k; c++) fputc((int8_t)ftv_ternary_get(d + r * t->row_bytes, c, t->kind), o);
        } else if (t->kind == FTV_KIND_F16) {
            for (uint64_t j = 0; j < t->nbytes / 2; j++) {
                uint16_t v;
                memcpy(&v, d + 2 * j, 2);
                float x = ftv_f16_to_f32(v);
                fwrite(&x, 4, 1, o);
            }
        } else {
            fwrite(d, 1, t->nbytes, o);
        }
    }
    fclose(o);
    free(buf);
    return 0;
}
"""


def _program() -> str:
    """C source printing every layout fact the Python module defines, named as in Python."""
    lines = ['#include "ftv_format.h"', _DECODER, "int main(int argc, char **argv) {",
             "    if (argc == 3) return decode(argv[1], argv[2]);"]
    for struct_name, fields in (("ftv_header", ftv.HEADER_FIELDS), ("ftv_tensor", ftv.ENTRY_FIELDS)):
        lines.append(f'    printf("sizeof {struct_name} %zu\\n", sizeof({struct_name}));')
        for name, _ in fields:
            lines.append(f'    printf("{struct_name}.{name} %zu %zu\\n", offsetof({struct_name}, {name}), '
                         f'sizeof((({struct_name} *)0)->{name}));')
    for name, value in _constants().items():
        lines.append(f'    printf("{name} %lld\\n", (long long)({name}));')
    for name in _float_constants():
        lines.append(f'    printf("{name} %.17g\\n", (double)({name}));')
    lines.append('    for (int i = 0; i < FTV_MAGIC_SIZE; i++) printf("magic %d\\n", (uint8_t)FTV_MAGIC[i]);')
    lines.append("    return 0;\n}")
    return "\n".join(lines)


def _constants() -> dict[str, int]:
    out = {f"FTV_{n}": getattr(ftv, n) for n in
           ("VERSION", "ALIGNMENT", "NAME_SIZE", "MAX_DIMS", "MAX_CHANNELS", "CRC_SIZE", "HEADER_SIZE", "ENTRY_SIZE")}
    out |= {f"FTV_{n}": getattr(ftv, n) for n in ("MAX_DIM", "MAX_IMG_SIDE", "MAX_TOKENS", "MAX_DEPTH", "MAX_ACTIVATIONS")}
    out["FTV_MAGIC_SIZE"] = len(ftv.MAGIC)
    out |= {f"FTV_FORMAT_{m.name}": int(m) for m in ftv.WeightFormat}
    out |= {f"FTV_KIND_{m.name}": int(m) for m in ftv.Kind}
    out |= {f"FTV_FLAG_{m.name}": int(m) for m in ftv.Flag}
    return out


def _float_constants() -> dict[str, float]:
    return {f"FTV_{n}": getattr(ftv, n) for n in ("MIN_EPS", "MAX_EPS", "MIN_SCALE", "MAX_SCALE", "MAX_ABS_VALUE",
                                                  "MIN_STD", "MAX_STD", "MAX_ABS_MEAN")}


@pytest.fixture(scope="module")
def c_program(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("c")
    (d / "check.c").write_text(_program())
    exe = d / "check"
    subprocess.run(["gcc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{HEADER.parent}",
                    str(d / "check.c"), "-o", str(exe)], check=True, capture_output=True, text=True)
    return exe


def test_c_header_matches_python_layout(c_program):
    out = subprocess.run([str(c_program)], check=True, capture_output=True, text=True).stdout.splitlines()
    facts = [line.split() for line in out]
    floats = _float_constants()
    got = {f[0]: tuple(int(x) for x in f[1:]) for f in facts if f[0] not in ("magic", "sizeof") and f[0] not in floats}
    for name, value in floats.items():
        assert [float(f[1]) for f in facts if f[0] == name] == [value], name
    sizes = {f"{f[0]} {f[1]}": int(f[2]) for f in facts if f[0] == "sizeof"}
    assert sizes == {"sizeof ftv_header": ftv.HEADER_SIZE, "sizeof ftv_tensor": ftv.ENTRY_SIZE}
    for struct_name, fields in (("ftv_header", ftv.HEADER_FIELDS), ("ftv_tensor", ftv.ENTRY_FIELDS)):
        for name, (offset, size) in ftv.field_layout(fields).items():
            assert got[f"{struct_name}.{name}"] == (offset, size), name
    for name, value in _constants().items():
        assert got[name] == (value,), name
    assert bytes(int(f[1]) for f in facts if f[0] == "magic") == ftv.MAGIC


@pytest.mark.parametrize("fmt", ["tq2", "tq1"])
def test_c_decodes_python_file(c_program, tmp_path, fmt):
    model = ftervit.create_model("ftervit_digits", global_pool="avg", init_values=1e-2)
    path = tmp_path / "m.ftv"
    export_model(model, path, fmt, class_names=[str(i) for i in range(10)])
    subprocess.run([str(c_program), str(path), str(tmp_path / "decoded.bin")], check=True)
    f = read(path)
    expected = b"".join(
        (a.astype(np.float32) if a.dtype == np.float16 else a).tobytes() for a in f.tensors.values())
    assert (tmp_path / "decoded.bin").read_bytes() == expected


# --- the tensor table: ftv_tensors.h against tensor_specs() ---------------------------------

_TABLE_PROGRAM = r"""
#include <stdio.h>
#include "ftv_tensors.h"
typedef struct { const char *name; int group; unsigned flag; int dims[4]; } row;
#define ROW(name, group, flag, d0, d1, d2, d3, field) \
    {name, FTV_GROUP_##group, flag, {FTV_DIM_##d0, FTV_DIM_##d1, FTV_DIM_##d2, FTV_DIM_##d3}},
static const row stem[] = {FTV_TENSORS_STEM(ROW)}, block[] = {FTV_TENSORS_BLOCK(ROW)}, head[] = {FTV_TENSORS_HEAD(ROW)};
/* symbol -> value in a geometry where every value differs: D 10, H 14, classes 7, in_chans 3,
 * patch 2 x 3 on an 8 x 9 image (12 patches) */
static int value(int sym, unsigned flags) {
    int cls = (flags & FTV_FLAG_CLASS_TOKEN) && !(flags & FTV_FLAG_NO_EMBED_CLASS);
    switch (sym) {
    case FTV_DIM_1: return 1; case FTV_DIM_D: return 10; case FTV_DIM_D3: return 30; case FTV_DIM_H: return 14;
    case FTV_DIM_CLASSES: return 7; case FTV_DIM_CHANS: return 3; case FTV_DIM_PATCH_H: return 2;
    case FTV_DIM_PATCH_W: return 3; case FTV_DIM_POS: return 12 + cls; case FTV_DIM_ANY: return -1;
    }
    return 0;
}
static void show(const row *r, unsigned flags, int block_index) {
    if (r->flag && !(flags & r->flag)) return;
    if (block_index >= 0) printf("%u blocks.%d.%s %d", flags, block_index, r->name, r->group);
    else printf("%u %s %d", flags, r->name, r->group);
    for (int d = 0; d < 4 && r->dims[d]; d++) printf(" %d", value(r->dims[d], flags));
    printf("\n");
}
int main(void) {
    for (unsigned flags = 0; flags < 256; flags++) {
        for (size_t i = 0; i < sizeof stem / sizeof *stem; i++) show(&stem[i], flags, -1);
        for (int b = 0; b < 2; b++)
            for (size_t i = 0; i < sizeof block / sizeof *block; i++) show(&block[i], flags, b);
        for (size_t i = 0; i < sizeof head / sizeof *head; i++) show(&head[i], flags, -1);
    }
    return 0;
}
"""

_GROUPS = {ftv.TERNARY: 1, ftv.TERNARY_ROWS: 2, ftv.ROW_SCALE: 3, ftv.CLASS_NAMES: 5} | {g: 4 for g in ftv.FLOAT_GROUPS}


def test_c_tensor_table_is_tensor_specs(tmp_path):
    """For all 256 flag values, the C table lists the tensors of tensor_specs(): same names, in
    the same order, same groups (all float groups are one: F16 or F32) and shapes."""
    (tmp_path / "table.c").write_text(_TABLE_PROGRAM)
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", f"-I{HEADER.parent}", str(tmp_path / "table.c"), "-o",
                    str(tmp_path / "table")], check=True, capture_output=True)
    out = subprocess.run([str(tmp_path / "table")], check=True, capture_output=True, text=True).stdout
    got: dict[int, list] = {}
    for line in out.splitlines():
        flags, name, group, *dims = line.split()
        got.setdefault(int(flags), []).append((name, int(group), tuple(int(d) for d in dims)))
    for flags in range(256):
        config = ftv.ModelConfig(img_size=(8, 9), patch_size=(2, 3), in_chans=3, embed_dim=10, depth=2, num_heads=2,
                                 mlp_hidden=14, num_classes=7, flags=ftv.Flag(flags), mean=(0.0,) * 3,
                                 std=(1.0,) * 3, ln_eps=1e-6, rms_eps=1e-5, quant_eps=1e-5)
        want = [(s.name, _GROUPS[s.group], s.shape or (-1,)) for s in ftv.tensor_specs(config)]
        assert got.get(flags, []) == want, flags


# --- the C loader against the Python reader -----------------------------------------------

def c_verdict(data: bytes) -> str:
    """The C loader's verdict on a file in memory: '' when it loads, else its message."""
    lib = _load_library()
    lib.ftv_model_load_buffer.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p),
                                          ctypes.c_char_p, ctypes.c_size_t]
    lib.ftv_model_load_buffer.restype = ctypes.c_int
    model, err = ctypes.c_void_p(), ctypes.create_string_buffer(512)
    status = lib.ftv_model_load_buffer(data, len(data), ctypes.byref(model), err, len(err))
    if status == 0:
        lib.ftv_model_free(model)
        return ""
    return err.value.decode() or f"status {status}"


def test_corpus_refused_alike_by_both_readers():
    """Every file of the shared corpus: the Python reader says what MANIFEST.tsv records, and the
    C loader says the same (engine/tests/test_loader.c checks the C side on its own as well)."""
    manifest = ftv_corpus.read_manifest()
    assert len(manifest) >= 90 and sum(m == "" for m in manifest.values()) >= 2
    for name, message in manifest.items():
        data = (ftv_corpus.CORPUS / name).read_bytes()
        assert ftv_corpus.message(data) == message, name
        assert c_verdict(data) == message, name


def test_every_flag_combination_loads_in_c():
    for name, data in ftv_corpus.seeds().items():
        assert c_verdict(data) == "", name


_HEADER_FIELDS = [name for name, code in ftv.HEADER_FIELDS if code in ("I", "Q", "f")]
_ENTRY_FIELDS = [name for name, code in ftv.ENTRY_FIELDS if code in ("I", "Q", "f")]
_INTERESTING = [0, 1, 2, 3, 4, 5, 31, 32, 64, 255, 256, 4096, 65535, 65536, 65537, 2 ** 31, 2 ** 32 - 1]
_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e-30, 2.0 ** -24, 2.0 ** 24, 3e38, float("inf"), float("nan"), 1e10]


def _mutate(data: bytes, draw) -> bytes:
    how = draw(st.sampled_from(["bytes", "header", "entry", "length", "data"]))
    buf = bytearray(data)
    n_entries = ftv.unpack_header(data)["num_tensors"]
    if how == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(0, len(buf) - 5))] ^= draw(st.integers(1, 255))
    elif how == "data":  # inside the tensor data, where most bytes are
        start = ftv.unpack_entry(data, ftv.HEADER_SIZE)["offset"]
        buf[draw(st.integers(start, len(buf) - 5))] = draw(st.integers(0, 255))
    elif how in ("header", "entry"):
        fields = _HEADER_FIELDS if how == "header" else _ENTRY_FIELDS
        name = draw(st.sampled_from(fields))
        codes = dict(ftv.HEADER_FIELDS if how == "header" else ftv.ENTRY_FIELDS)
        value = draw(st.sampled_from(_FLOATS)) if codes[name] == "f" else draw(
            st.sampled_from(_INTERESTING) | st.integers(0, 2 ** (64 if codes[name] == "Q" else 32) - 1))
        at = ftv.HEADER_SIZE + draw(st.integers(0, n_entries - 1)) * ftv.ENTRY_SIZE if how == "entry" else 0
        offset, size = ftv.field_layout(ftv.HEADER_FIELDS if how == "header" else ftv.ENTRY_FIELDS)[name]
        struct.pack_into("<" + codes[name], buf, at + offset, value)
    else:
        cut = draw(st.integers(-64, 64))
        buf = buf[:cut] if cut < 0 else buf + bytes(cut)
        if draw(st.booleans()) and len(buf) >= ftv.HEADER_SIZE:  # a header that agrees with the new length
            struct.pack_into("<Q", buf, 24, len(buf))
    if draw(st.integers(0, 9)) and len(buf) >= ftv.CRC_SIZE:  # mostly damage that the CRC cannot see
        return ftv_corpus.with_crc(buf)
    return bytes(buf)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_readers_agree_on_mutated_files(data):
    """Hypothesis mutates valid files of random flags and format (bytes anywhere, header and
    table fields set to edge values, lengths, mostly with the CRC recomputed): the C loader
    accepts exactly the files the Python reader accepts, and refuses the others with its message."""
    flags = data.draw(st.sampled_from(ftv_corpus.ALL_FLAGS))
    fmt = data.draw(st.sampled_from(list(ftv.WeightFormat)))
    good = ftv_corpus.synthetic(flags, fmt, seed=data.draw(st.integers(0, 3)), depth=data.draw(st.integers(1, 2)))
    bad = _mutate(good, data.draw)
    assert c_verdict(bad) == ftv_corpus.message(bad)
