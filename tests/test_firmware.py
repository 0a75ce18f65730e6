"""``ftervit firmware`` and the C arrays it writes; the engine run from such an array (host
compiler), and once under QEMU when the microcontroller toolchains are installed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ftervit import create_model
from ftervit.cli import main
from ftervit.engine import Engine
from ftervit.engine.build import LIB_SOURCES, engine_dir
from ftervit.errors import FtervitError
from ftervit.export import export_model
from ftervit.export.c_array import c_identifier, write_c_array, write_float_array

CC = shutil.which("cc") or shutil.which("gcc")
PORTS = Path(__file__).resolve().parents[1] / "engine" / "ports"
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")

# Prints the array's alignment, its size and every byte (or float bits) back.
ECHO_C = r"""
#include <stdio.h>
#include <string.h>
#include "blob.h"
#include "vals.h"
int main(void) {
    printf("%d %zu\n", (int)((size_t)blob % 64), blob_size);
    for (size_t i = 0; i < BLOB_SIZE; i++) printf("%u ", blob[i]);
    printf("\n");
    for (size_t i = 0; i < vals_len; i++) { unsigned b; memcpy(&b, &vals[i], 4); printf("%08x ", b); }
    printf("\n");
    return 0;
}
"""

# The engine on a model compiled in, as on a microcontroller: logits as IEEE bits.
RUN_C = r"""
#include <stdio.h>
#include <string.h>
#include "ftervit.h"
#include "net.h"
#include "img.h"
int main(void) {
    ftv_model *m; char err[256]; float y[10];
    if (ftv_model_load_buffer(net, net_size, &m, err, sizeof err) != FTV_OK) { puts(err); return 1; }
    ftv_model_forward(m, img, y);
    for (int i = 0; i < 10; i++) { unsigned b; memcpy(&b, &y[i], 4); printf("%08x\n", b); }
    ftv_model_free(m);
    return 0;
}
"""


def compile_run(tmp: Path, main_c: str, sources: list[Path], flags: list[str] = ()) -> str:
    (tmp / "main.c").write_text(main_c)
    exe = tmp / "a.out"
    subprocess.run([CC, "-std=c11", "-O1", f"-I{tmp}", *flags, str(tmp / "main.c"),
                    *map(str, sources), "-o", str(exe), "-lm", "-pthread"], check=True, capture_output=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


@needs_cc
def test_arrays_compile_back_to_the_same_bytes_and_floats(tmp_path):
    data = bytes(np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8))
    vals = np.array([0.0, -0.0, 1.0, -1.5, 1e-40, 3.4e38, 0.1, np.pi], dtype=np.float32)
    c1, h1, sym = write_c_array(data, tmp_path / "blob.c")
    c2, _, _ = write_float_array(vals, tmp_path / "vals.c")
    assert sym == "blob" and h1.read_text().count("#define BLOB_SIZE 1000u") == 1
    lines = compile_run(tmp_path, ECHO_C, [c1, c2]).splitlines()
    assert lines[0] == "0 1000"  # 64-byte aligned, size exported
    assert bytes(int(v) for v in lines[1].split()) == data
    assert [int(v, 16) for v in lines[2].split()] == vals.view(np.uint32).tolist()  # exact, -0 and subnormal too


def test_identifiers_and_bad_arguments(tmp_path):
    assert c_identifier("deit-tiny.tq2") == "deit_tiny_tq2" and c_identifier("3x") == "_3x"
    assert c_identifier("int") == "_int"
    with pytest.raises(FtervitError, match="identifier"):
        write_c_array(b"x", tmp_path / "a.c", "no-dash")
    with pytest.raises(FtervitError, match="power of two"):
        write_c_array(b"x", tmp_path / "a.c", align=48)
    with pytest.raises(FtervitError, match=r"\.c file"):
        write_c_array(b"x", tmp_path / "a.txt")
    # a name ending with a slash is a directory, made when missing
    c_path, h_path, _ = write_c_array(b"x", f"{tmp_path / 'new' / 'fw'}/")
    assert c_path == tmp_path / "new" / "fw" / "ftv_model.c" and h_path.is_file()
    with pytest.raises(FtervitError, match="finite"):
        write_float_array(np.array([np.nan], np.float32), tmp_path / "v.c")


def test_cli_writes_model_and_header(tmp_path, capsys):
    assert main(["firmware", "--model", "ftervit_digits", "--format", "tq1", "-o", str(tmp_path)]) == 0
    assert "ftervit_digits_tq1[" in capsys.readouterr().out
    c_text = (tmp_path / "ftervit_digits_tq1.c").read_text()
    assert "__attribute__((aligned(64)))" in c_text and '#include "ftervit_digits_tq1.h"' in c_text
    assert "extern const uint8_t ftervit_digits_tq1[" in (tmp_path / "ftervit_digits_tq1.h").read_text()
    ftv = tmp_path / "m.ftv"
    export_model(create_model("ftervit_digits"), ftv, "tq2")
    assert main(["firmware", "--ftv", str(ftv), "-o", str(tmp_path / "fw.c"), "--symbol", "fw",
                 "--section", ".rodata.model"]) == 0
    assert 'section(".rodata.model")' in (tmp_path / "fw.c").read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind
    capsys.readouterr()
    ftv.write_bytes(ftv.read_bytes()[:-3])
    assert main(["firmware", "--ftv", str(ftv), "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("ftervit firmware: error: ")


def digits_firmware(gen: Path, model_c: str, input_c: str) -> np.ndarray:
    """A random-weight digits model and an input written as C arrays; the host engine's logits."""
    torch.manual_seed(0)
    ftv = gen / "net.ftv"
    export_model(create_model("ftervit_digits").eval(), ftv, "tq2")
    write_c_array(ftv.read_bytes(), gen / model_c)
    x = np.random.default_rng(0).standard_normal((1, 8, 8)).astype(np.float32)
    write_float_array(x, gen / input_c)
    with Engine(ftv) as engine:
        return engine.forward(x[None])[0]


@needs_cc
def test_engine_runs_from_the_array_like_the_host_engine(tmp_path):
    host = digits_firmware(tmp_path, "net.c", "img.c")
    src = engine_dir()
    sources = [tmp_path / "net.c", tmp_path / "img.c", *(src / "src" / f for f in LIB_SOURCES)]
    out = compile_run(tmp_path, RUN_C, sources, [f"-I{src / 'include'}", "-ffp-contract=off"])
    assert [int(v, 16) for v in out.split()] == host.view(np.uint32).tolist()


@pytest.mark.skipif(not all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make")),
                    reason="no Cortex-M toolchain / QEMU (make -C engine/ports deps)")
def test_cortex_m55_under_qemu_matches_the_host(tmp_path):
    """One case of `make mcu-check` (the rest run there): bit-identical logits on the M55."""
    gen = tmp_path / "gen"
    gen.mkdir()
    host = digits_firmware(gen, "ftv_fw_model.c", "ftv_fw_input.c")
    sys.path.insert(0, str(PORTS))
    try:
        import mcu
        import mcu_check
    finally:
        sys.path.remove(str(PORTS))
    r = mcu.run(mcu.TARGETS["an547"], tmp_path, tmp_path / "an547", timeout=60, GEN=gen)
    row = mcu_check.check(mcu_check.Case("digits", "tq2", "an547"), r, host)
    assert row["ok"] and row["identical"], row
    assert row["forward_insns"] > 1_000_000 and row["peak_ram_bytes"] < 64 * 1024
