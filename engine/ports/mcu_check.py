"""``make mcu-check``: the C engine on emulated microcontrollers, compared with the host engine.

For each case (model, weight format, target core, GEMM kernels):
  1. export the model (random weights, fixed seed) to .ftv with ftervit.export, and write it
     and a fixed input (seeded normal noise) as C arrays (ftervit.export.c_array);
  2. build engine/ports/common/harness.c for the core (engine/ports/Makefile) and run it
     under QEMU with the instruction-counting plugin;
  3. compare the logits it prints (IEEE bits) with ftervit.engine.Engine on the same file and
     input: the same top-1 and equal within float tolerance ("logits match"; the engine does
     the same float operations everywhere, so they are expected to be bit-identical).
Prints one row per case: core, "logits match", instructions of the forward pass (exact:
TCG plugin), code and rodata bytes of the firmware, peak RAM. Exits 1 when any case fails.

Peak RAM = .data + .bss + the heap's high-water mark (sbrk; the engine allocates its arena
and bookkeeping once, at load) + the stack's high-water mark (painted at the start of main,
scanned after the forward pass). The model stays in ROM/flash and is read in place.

    python engine/ports/mcu_check.py [--full] [--jobs N] [--json FILE]
    python engine/ports/mcu_check.py --case deit3_small:tq2:an547 [--case ...]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mcu import ROOT, TARGETS, McuError, Run, build_tools, kib, map_bytes, run  # noqa: E402

MODELS = {  # short name -> timm / ftervit model
    "digits": "ftervit_digits",
    "deit_tiny": "deit_tiny_patch16_224",
    "deit3_small": "deit3_small_patch16_224",  # the paper's model size (5.8 MB tq2); only with --case
    "odd": "ftervit_digits",  # with ODD_SIZES: every GEMM's k off the 16- and 4-wide SIMD steps
}
# dim 36 (heads of 12) and MLP 99: the Helium and DSP kernels' tails run (k = 36, 99)
MODEL_KWARGS = {"odd": dict(embed_dim=36, num_heads=3, mlp_ratio=99 / 36)}
LABELS = {"odd": "ftervit_digits, dim 36, MLP 99"}


def model_label(model: str) -> str:
    return LABELS.get(model, MODELS[model])
ENGINE_OBJECTS = re.compile(r"^ftv_(model|forward|kernels\w*|threads)\.o$")
RTOL, ATOL = 1e-5, 1e-6  # "equal within float tolerance", relative to the largest logit


@dataclass(frozen=True)
class Case:
    model: str
    fmt: str
    target: str
    kernels: str = "scalar"

    @property
    def name(self) -> str:
        return f"{self.target}-{self.model}-{self.fmt}-{self.kernels}"


def cases(full: bool) -> list[Case]:
    """The CI set (about a minute), or the full set (DeiT-Tiny on every core, a few minutes)."""
    out = [Case("digits", fmt, t) for fmt in ("tq2", "tq1") for t in TARGETS]
    out += [Case("digits", "tq2", t, "lut") for t in TARGETS]
    out += [Case("odd", "tq2", t) for t in TARGETS]
    out.append(Case("deit_tiny", "tq2", "an547"))
    if full:
        out += [Case("deit_tiny", "tq2", t) for t in ("an386", "lx106")]
        out += [Case("deit_tiny", "tq2", t, "lut") for t in TARGETS]
        out.append(Case("deit_tiny", "tq1", "an547"))
    return out


def prepare(model: str, fmt: str, out: Path) -> tuple[Path, np.ndarray]:
    """Export the model, write the C arrays; returns the generated folder and the host logits."""
    import torch

    import ftervit
    from ftervit.engine import Engine
    from ftervit.export import export_model
    from ftervit.export.c_array import write_c_array, write_float_array

    gen = out / f"gen-{model}-{fmt}"
    gen.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = ftervit.create_model(MODELS[model], **MODEL_KWARGS.get(model, {})).eval()
    path = gen / f"{model}-{fmt}.ftv"
    packed = export_model(net, path, fmt)
    cfg = packed.config
    x = np.random.default_rng(0).standard_normal((cfg.in_chans, *cfg.img_size)).astype(np.float32)
    write_c_array(packed.data, gen / "ftv_fw_model.c", comment=f"{model_label(model)}, random weights (seed 0), {fmt}")
    write_float_array(x, gen / "ftv_fw_input.c", comment="standard normal noise, numpy default_rng(0)")
    with Engine(path) as engine:
        host = engine.forward(x[None])[0]
    return gen, host


def parse(stdout: str) -> dict:
    """The harness's "ftv-port" lines: logits (from their bits) and key=value numbers."""
    vals: dict = {}
    for line in stdout.splitlines():
        if line.startswith("ftv-port ") and "=" in line:
            vals.update(dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv))
    bits = [int(b, 16) for _, b in re.findall(r"^ftv-port logit (\d+) (0x[0-9a-f]+)$", stdout, re.M)]
    vals["logits"] = np.array(bits, dtype=np.uint32).view(np.float32)
    return vals


def check(case: Case, r: Run, host: np.ndarray) -> dict:
    """Compare a run with the host logits; the row of results."""
    vals = parse(r.stdout)
    dev = vals["logits"]
    row = {"case": case.name, "core": r.target.core, "machine": r.target.machine, "model": model_label(case.model),
           "format": case.fmt, "kernels": vals.get("kernels", case.kernels), "exit_status": r.returncode,
           "qemu_seconds": round(r.seconds, 2)}
    if r.returncode != 0 or dev.shape != host.shape or "heap_peak" not in vals:
        row.update(ok=False, status=f"FAILED (exit {r.returncode})", output=r.stdout[-2000:])
        return row
    diff = np.abs(dev.astype(np.float64) - host.astype(np.float64))
    scale = float(np.abs(host).max()) or 1.0
    same_top1 = int(dev.argmax()) == int(host.argmax())
    close = bool(np.all(diff <= ATOL + RTOL * scale))
    identical = bool(np.array_equal(dev.view(np.uint32), host.view(np.uint32)))
    ok = same_top1 and close
    marks = r.marks  # 0: before load, 1: after load, 2: before forward, 3: after forward
    static = r.sizes["data"] + r.sizes["bss"]
    heap, stack = int(vals["heap_peak"]), int(vals["stack_peak"])
    engine = map_bytes(r.elf.parent / "app.map", ENGINE_OBJECTS)
    row.update(
        ok=ok, identical=identical, same_top1=same_top1,
        status=("logits match" + (" (bit-identical)" if identical else "")) if ok else "LOGITS DIFFER",
        max_abs_diff=float(diff.max()), max_rel_diff=float(diff.max() / scale),
        forward_insns=marks[3] - marks[2], load_insns=marks[1] - marks[0], total_insns=r.insns,
        code_bytes=r.sizes["code"], engine_code_bytes=engine["code"], rodata_bytes=r.sizes["rodata"],
        model_bytes=int(vals["model_bytes"]), arena_bytes=int(vals["arena_bytes"]),
        static_ram_bytes=static, heap_peak_bytes=heap, stack_peak_bytes=stack,
        peak_ram_bytes=static + heap + stack)
    return row


def table(rows: list[dict]) -> str:
    head = ["core", "model", "fmt", "kernels", "logits", "forward insns", "code (engine)", "rodata (model)",
            "peak RAM (arena)"]
    body = []
    for r in rows:
        if not r["ok"] and "forward_insns" not in r:
            body.append([f"{r['core']} ({r['machine']})", r["model"], r["format"], r["kernels"], r["status"],
                         "-", "-", "-", "-"])
            continue
        body.append([f"{r['core']} ({r['machine']})", r["model"], r["format"], r["kernels"], r["status"],
                     f"{r['forward_insns']:,}", f"{kib(r['code_bytes'])} ({kib(r['engine_code_bytes'])})",
                     f"{kib(r['rodata_bytes'])} ({kib(r['model_bytes'])})",
                     f"{kib(r['peak_ram_bytes'])} ({kib(r['arena_bytes'])})"])
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i < 5 else str(c).rjust(w) for i, (c, w) in enumerate(zip(x, widths)))
             for x in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="DeiT-Tiny on every core and with both GEMMs")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "mcu", help="build folder [build/mcu]")
    ap.add_argument("--json", type=Path, help="write the results here [OUT/mcu_check.json]")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel builds and runs")
    ap.add_argument("--case", action="append", metavar="MODEL:FMT:TARGET[:KERNELS]",
                    help=f"run only these cases; MODEL in {', '.join(MODELS)}, TARGET in {', '.join(TARGETS)}, "
                         "KERNELS scalar (default) or lut")
    args = ap.parse_args(argv)
    try:
        picked = [Case(*spec.split(":")) for spec in args.case or ()]
    except TypeError:
        ap.error("--case takes MODEL:FMT:TARGET[:KERNELS]")
    for c in picked:
        if c.model not in MODELS or c.fmt not in ("tq2", "tq1") or c.target not in TARGETS \
                or c.kernels not in ("scalar", "lut"):
            ap.error(f"--case {c.model}:{c.fmt}:{c.target}:{c.kernels}: unknown model, format, target or kernels")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    todo = picked or cases(args.full)
    build_tools(out)
    prepared = {key: prepare(*key, out) for key in dict.fromkeys((c.model, c.fmt) for c in todo)}

    def one(c: Case) -> dict:
        gen, host = prepared[(c.model, c.fmt)]
        timeout = 60 if c.model == "digits" else 600
        try:
            r = run(TARGETS[c.target], out, out / c.name, timeout=timeout, GEN=gen, KERNELS=c.kernels)
        except McuError as exc:
            return {"case": c.name, "core": TARGETS[c.target].core, "machine": TARGETS[c.target].machine,
                    "model": model_label(c.model), "format": c.fmt, "kernels": c.kernels, "ok": False,
                    "status": "BUILD FAILED", "output": str(exc)[-3000:]}
        return check(c, r, host)

    # longest first, so the big runs do not end up alone at the end
    order = sorted(todo, key=lambda c: (c.model != "deit_tiny", c.target != "lx106"))
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = dict(zip(order, pool.map(one, order)))
    rows = [results[c] for c in todo]
    print("mcu-check: the C engine on emulated cores (QEMU 7.2, TCG) against the host engine, same input")
    print(table(rows))
    print("forward insns: executed instructions of ftv_model_forward (TCG plugin, exact). code: "
          "instructions + vectors; rodata: constants incl. the model; peak RAM: .data + .bss + heap and "
          "stack high-water marks (arena = the engine's working memory).")
    for r in rows:
        if not r["ok"]:
            print(f"\n{r['case']}: {r['status']}\n{r.get('output', '')}")
    path = args.json or out / "mcu_check.json"
    from ftervit.fileio import atomic_write_json

    atomic_write_json(path, {"cases": rows, "seconds": round(time.monotonic() - start, 1)})
    failed = [r["case"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} cases ok in {time.monotonic() - start:.0f}s; results in {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
