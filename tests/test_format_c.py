"""engine/include/ftv_format.h agrees with ftervit.export.format: constants, struct layout,
CRC, ternary unpacking and FP16 decoding (a C program reads a file the Python writer made)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ftervit
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
    lines.append('    for (int i = 0; i < FTV_MAGIC_SIZE; i++) printf("magic %d\\n", (uint8_t)FTV_MAGIC[i]);')
    lines.append("    return 0;\n}")
    return "\n".join(lines)


def _constants() -> dict[str, int]:
    out = {f"FTV_{n}": getattr(ftv, n) for n in
           ("VERSION", "ALIGNMENT", "NAME_SIZE", "MAX_DIMS", "MAX_CHANNELS", "CRC_SIZE", "HEADER_SIZE", "ENTRY_SIZE")}
    out["FTV_MAGIC_SIZE"] = len(ftv.MAGIC)
    out |= {f"FTV_FORMAT_{m.name}": int(m) for m in ftv.WeightFormat}
    out |= {f"FTV_KIND_{m.name}": int(m) for m in ftv.Kind}
    out |= {f"FTV_FLAG_{m.name}": int(m) for m in ftv.Flag}
    return out


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
    got = {f[0]: tuple(int(x) for x in f[1:]) for f in facts if f[0] not in ("magic", "sizeof")}
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
