"""Build, run and measure bare-metal firmware under QEMU: the Python side of engine/ports.

Used by mcu_check.py (``make mcu-check``) and benchmarks/fc1/run.py. The build and the QEMU
command lines live in the Makefile next to this file; this module calls ``make`` and reads
what comes back: the program's console output, the instruction counts of the TCG plugin
(plugin/insncount.c), section sizes (``<tool>size -A``) and the linker map.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PORTS = Path(__file__).resolve().parent
ROOT = PORTS.parents[1]


class McuError(RuntimeError):
    """A build or a run failed; the message carries the tool's output."""


@dataclass(frozen=True)
class Target:
    key: str      # the Makefile's TARGET
    core: str     # what the table calls it
    machine: str  # QEMU machine
    tool: str     # binutils prefix

    @property
    def label(self) -> str:
        return f"{self.core} ({self.machine})"


TARGETS = {t.key: t for t in (
    Target("an547", "Cortex-M55", "mps3-an547", "arm-none-eabi-"),
    Target("an386", "Cortex-M4F", "mps2-an386", "arm-none-eabi-"),
    Target("lx106", "Xtensa lx106", "sim -cpu lx106", "xtensa-lx106-elf-"),
)}

# sections holding instructions (and Xtensa's literal pools, which sit in .text)
CODE_SECTIONS = (".vectors", ".reset", ".text", ".ARM.exidx", ".ARM.extab", ".init_array")


@dataclass
class Run:
    """One firmware run: console output, exit status, instruction counts, sizes."""
    target: Target
    elf: Path
    stdout: str
    returncode: int
    insns: int
    marks: list[int]
    seconds: float
    sizes: dict[str, int] = field(default_factory=dict)

    def regions(self) -> list[int]:
        """Instructions between port_mark(2i) and port_mark(2i + 1), for each i."""
        return [self.marks[i + 1] - self.marks[i] for i in range(0, len(self.marks) - 1, 2)]


def make(*goals: str, timeout: float | None = None, **variables) -> str:
    """``make -s -C engine/ports GOALS VAR=value...``; returns stdout, raises McuError on failure."""
    cmd = ["make", "-s", "-C", str(PORTS), *goals, *(f"{k}={v}" for k, v in variables.items())]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise McuError(f"{' '.join(cmd)}: no result after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise McuError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def build_tools(out: Path) -> None:
    """What parallel builds share: the instruction counter and the lx106 libgcc additions."""
    make("tools", TARGET="lx106", OUT=out)


def build(target: Target, out: Path, build_dir: Path, **variables) -> Path:
    """Build ``build_dir/app.elf`` (variables: APP, GEN, KERNELS, EXTRA_CFLAGS)."""
    make("all", TARGET=target.key, OUT=out, BUILD=build_dir, **variables)
    return build_dir / "app.elf"


def run(target: Target, out: Path, build_dir: Path, timeout: float = 600, **variables) -> Run:
    """Build if needed, then run the firmware under QEMU with the instruction counter."""
    elf = build(target, out, build_dir, **variables)
    counts = build_dir / "counts.txt"
    counts.unlink(missing_ok=True)
    cmd = ["make", "-s", "-C", str(PORTS), "run", f"TARGET={target.key}", f"OUT={out}", f"BUILD={build_dir}",
           f"TIMEOUT={int(timeout)}", *(f"{k}={v}" for k, v in variables.items())]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    text = counts.read_text() if counts.is_file() else ""
    insns = re.search(r"^insns: (\d+)$", text, re.M)
    marks = [int(m) for m in re.findall(r"^mark: (\d+)$", text, re.M)]
    # make reports the program's exit status n as "Error n"; 124 is timeout's
    status = proc.returncode
    m = re.search(r"\] Error (\d+)", proc.stderr)
    if status and m:
        status = int(m.group(1))
    if status == 0 and insns is None:
        raise McuError(f"{target.key}: no instruction count in {counts}:\n{proc.stderr[-2000:]}")
    return Run(target, elf, proc.stdout + (proc.stderr if status else ""), status,
               int(insns.group(1)) if insns else 0, marks, seconds, section_sizes(target, elf))


def section_sizes(target: Target, elf: Path) -> dict[str, int]:
    """code (instructions, vectors, literal pools), rodata, data and bss bytes of an ELF."""
    out = subprocess.run([f"{target.tool}size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {"code": 0, "rodata": 0, "data": 0, "bss": 0}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        name, size = parts[0], int(parts[1])
        if name in CODE_SECTIONS:
            sizes["code"] += size
        elif name in (".rodata", ".data", ".bss"):
            sizes[name[1:]] += size
    return sizes


def map_bytes(map_file: Path, objects: re.Pattern) -> dict[str, int]:
    """Code and rodata bytes the linker kept from the objects whose file name matches ``objects``."""
    text = map_file.read_text(errors="replace")
    text = text[text.find("Linker script and memory map"):]  # skip the discarded sections
    totals = {"code": 0, "rodata": 0}
    pending = None
    for line in text.splitlines():
        m = re.match(r"^ (\.\S+)$", line)  # a long input section name, its numbers on the next line
        if m:
            pending = m.group(1)
            continue
        m = re.match(r"^ (\.\S+)?\s+0x[0-9a-fA-F]+\s+0x([0-9a-fA-F]+)\s+(\S+)$", line)
        name, pending = (m.group(1) or pending, None) if m else (None, None)
        if not m or not name or not objects.search(os.path.basename(m.group(3))):
            continue
        kind = "code" if name.startswith((".text", ".literal")) else "rodata" if name.startswith(".rodata") else None
        if kind:
            totals[kind] += int(m.group(2), 16)
    return totals


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"
