"""Speed of the C engine on x86 against the engines a user would pick instead, and where its
time goes.

Whole models (deit_tiny_patch16_224, deit3_small_patch16_224; 224 px, batch 1, random
weights: the speed of every path does not depend on the values), in one process, on the same
input, with 1 and with 2 threads:

- ``engine_tq2``: ``ftervit.engine.Engine`` on the model exported as tq2, kernels chosen at
  load, exact numerics (the default); ``engine_tq2_fast``: the same with ``numerics="fast"``
  (x86); ``engine_tq2_avx512``: the AVX-512 set (``FTV_KERNELS=avx512``) where the engine picks
  the AMX set, to show what AMX buys; ``--tq1`` adds the tq1 file, ``--scalar`` the portable
  kernels;
- ``torch_fp32``: the timm model in PyTorch eager, ``torch.set_num_threads``, ``inference_mode``;
- ``onnxruntime_int8_dynamic``: ``torch.onnx.export`` (opset 17), then
  ``quantize_dynamic(weight_type=QInt8)``; ``intra_op_num_threads``;
- ``onnxruntime_int8_static``: the same ONNX file after ``quant_pre_process``, then
  ``quantize_static`` with its defaults (QDQ format, int8 activations and weights), calibrated
  on random images;
- ``openvino_default``: ``openvino.convert_model`` of the PyTorch model, compiled for the CPU
  with ``PERFORMANCE_HINT=LATENCY`` and ``INFERENCE_NUM_THREADS``; the precision it picks
  (``INFERENCE_PRECISION_HINT``: f32, or bf16 on CPUs with AMX) is recorded;
- ``openvino_int8``: that model after NNCF post-training quantization
  (``nncf.quantize(..., model_type=nncf.ModelType.TRANSFORMER)``, random calibration images),
  compiled the same way.

Every contender runs once per round, in an order that rotates from round to round, so a change
in the machine's load (other jobs) hits them all alike; tables give medians (and minima) of
--runs rounds after warm-up rounds; speedups are ratios of medians of the same run.

Then, per model and thread count, where the milliseconds go:

- the engine built with ``-DFTV_PROFILE`` (``Engine(path, profile=True)``): time by phase
  (patch embedding, norms and quantizers, ternary GEMMs, attention, GELU, barrier waits, the
  rest), summed over threads, medians over the runs;
- onnxruntime's own profiler (``enable_profiling``) on both int8 sessions: time by operator
  type, per forward pass (means over the runs), summed over threads' nodes as onnxruntime
  reports them.

With one thread, each phase's floor (``phase_floors``: its work at the instruction peaks of one
core, measured by engine/tests/bench_peak.c, AMX's tile products included where the engine runs
its AMX set) and the profile's ratio to it, for the exact mode and for the fast one. Last, the ternary
GEMM alone on (197 x 384) x (384 x 1536), DeiT-S's fc1: engine/tests/bench_gemm.c against
``torch.matmul`` in FP32.

    python benchmarks/engine_speed.py [--threads 1 2] [--runs 20] [--models ...] [--tq1]
        [--scalar] [--out benchmarks/results/engine_speed_<cpu>.json]

Needs the ``[bench]`` extra (onnxruntime, onnx, openvino, nncf) and a C compiler. Results
go to one file per machine (the CPU's name, family and model in the file name).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import statistics
import subprocess
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import timm
import torch

import ftervit
from ftervit.engine import Engine
from ftervit.export import export_model
from ftervit.fileio import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
KERNEL_SHAPE = (197, 384, 1536)  # tokens, k, rows: DeiT-S fc1
CALIBRATION_IMAGES = 8


def cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    info: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def machine() -> dict:
    """The CPU (name, vendor, family, model) and the flags that pick kernels: AVX2 and F16C,
    AVX-512 F/BW/DQ/VL + VNNI (the engine's "avx512" set), AVX512-BF16 and AMX (what
    OpenVINO and onnxruntime use where present)."""
    info = cpuinfo()
    wanted = ("avx2", "f16c", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    have = set(info.get("flags", "").split())
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "vendor": info.get("vendor_id"), "family": info.get("cpu family"), "model": info.get("model"),
            "kernel": platform.release(), "cores": os.cpu_count(),
            "simd_flags": [f for f in wanted if f in have]}


def machine_slug(m: dict) -> str:
    """A file-name tag for the CPU, e.g. ``amd-epyc-f26m2``."""
    name = re.sub(r"[^a-z0-9]+", "-", m["cpu"].lower()).strip("-")
    return f"{name}-f{m['family']}m{m['model']}" if m.get("family") else name


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def export_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["logits"])


def ort_session(path: Path, threads: int, profile_prefix: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_models(model: torch.nn.Module, x: torch.Tensor, calib: list[np.ndarray], workdir: Path) -> dict:
    """The FP32 ONNX export and its two int8 quantizations: {"dynamic": path, "static": path}."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre = workdir / "model.onnx", workdir / "model.pre.onnx"
    export_onnx(model, x, fp32)
    out = {"dynamic": workdir / "model.int8_dynamic.onnx", "static": workdir / "model.int8_static.onnx"}
    quantize_dynamic(str(fp32), str(out["dynamic"]), weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": c} for c in calib])

        def get_next(self):
            return next(self.feeds, None)

    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out["static"]), Reader())  # defaults: QDQ, int8 activations and weights
    return out


def openvino_models(model: torch.nn.Module, x: torch.Tensor, calib: list[np.ndarray]) -> dict:
    """The OpenVINO model at its default precision and after NNCF int8 quantization."""
    import nncf
    import openvino as ov

    ov_model = ov.convert_model(model, example_input=x)
    quantized = nncf.quantize(ov_model, nncf.Dataset(calib), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calib))
    return {"default": ov_model, "int8": quantized}


def openvino_runner(ov_model, threads: int, xn: np.ndarray):
    """(run, precision): one inference request; the precision the CPU plugin chose."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return (lambda: request.infer({0: xn})), str(compiled.get_property("INFERENCE_PRECISION_HINT"))


def time_round_robin(contenders: dict, runs: int, warmup: int = 3, order: str = "rotate",
                     pause_ms: float = 5.0) -> dict:
    """Each round times every contender once; returns {name: [seconds...]}. A pause before
    each run lets the previous contender's idle threads stop spinning (OpenMP, onnxruntime,
    OpenVINO and the engine's pool all spin a while before they sleep) instead of stealing its
    cores, and the order rotates from round to round, so that no contender always follows the
    same one (with a fixed order, the first engine, always right after PyTorch, measured
    7-50% slower with 2 threads than the second, which runs the same code). A rotation keeps
    each contender's predecessor, though; ``order="shuffle"`` draws a new order every round
    (seeded), and ``pause_ms`` sets the pause (docs/engine.md: what both do to two threads)."""
    times = {name: [] for name in contenders}
    names, rng = list(contenders), random.Random(0)
    for r in range(warmup + runs):
        if order == "shuffle":
            rng.shuffle(names)
        for name in names[r % len(names):] + names[:r % len(names)] if order == "rotate" else names:
            fn = contenders[name]
            time.sleep(pause_ms / 1e3)
            t = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def engine_profile(path: Path, threads: int, xn: np.ndarray, runs: int, numerics: str = "exact") -> dict:
    """Milliseconds per forward pass by phase (medians over runs), from the -DFTV_PROFILE build."""
    per_run = defaultdict(list)
    with Engine(path, threads=threads, profile=True, numerics=numerics) as engine:
        for _ in range(3):
            engine.forward(xn)
        engine.profile()
        for _ in range(runs):
            t = time.perf_counter()
            engine.forward(xn)
            per_run["wall"].append(time.perf_counter() - t)
            for phase, seconds in engine.profile().items():
                per_run[phase].append(seconds)
    return {phase: 1e3 * statistics.median(v) for phase, v in per_run.items()}


def ort_profile(path: Path, threads: int, feed: dict, runs: int, prefix: Path) -> dict:
    """onnxruntime's per-operator profile: milliseconds per forward pass by operator type."""
    session = ort_session(path, threads, prefix)
    for _ in range(3):
        session.run(None, feed)
    trace = Path(session.end_profiling())  # the warm-up runs' trace: discarded
    session = ort_session(path, threads, prefix)
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    by_op: dict = defaultdict(float)
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] * 1e-3 / runs
    return dict(sorted(by_op.items(), key=lambda kv: -kv[1]))


def bench_model(name: str, threads_list: list[int], runs: int, tq1: bool, scalar: bool, workdir: Path,
                floors: dict | None, timing: dict) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    xn = x.numpy()
    rng = np.random.default_rng(2)
    calib = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(CALIBRATION_IMAGES)]
    files = {}
    for fmt in ("tq2", "tq1") if tq1 else ("tq2",):
        files[fmt] = workdir / f"{name}.{fmt}.ftv"
        export_model(ftervit.create_model(name).eval(), files[fmt], fmt)
    fp32 = timm.create_model(name).eval()
    onnx_paths = onnx_models(fp32, x, calib, workdir)
    ov_models = openvino_models(fp32, x, calib)
    results = []
    for threads in threads_list:
        contenders, engines, extra = {}, {}, {}
        for fmt, path in files.items():
            engines[f"engine_{fmt}"] = Engine(path, threads=threads)
            if fmt == "tq2" and engines["engine_tq2"].kernels in ("avx2", "avx512", "amx"):
                engines["engine_tq2_fast"] = Engine(path, threads=threads, numerics="fast")
            if fmt == "tq2" and engines["engine_tq2"].kernels == "amx":  # what the AMX set buys
                os.environ["FTV_KERNELS"] = "avx512"
                try:
                    engines["engine_tq2_avx512"] = Engine(path, threads=threads)
                finally:
                    del os.environ["FTV_KERNELS"]
            if scalar:
                os.environ["FTV_KERNELS"] = "scalar"
                try:
                    engines[f"engine_{fmt}_scalar"] = Engine(path, threads=threads)
                finally:
                    del os.environ["FTV_KERNELS"]
        for key, engine in engines.items():
            contenders[key] = (lambda e: lambda: e.forward(xn))(engine)
        torch.set_num_threads(threads)

        def torch_eager():
            with torch.inference_mode():
                fp32(x)

        contenders["torch_fp32"] = torch_eager
        feed = {"x": xn}
        for kind, path in onnx_paths.items():
            session = ort_session(path, threads)
            contenders[f"onnxruntime_int8_{kind}"] = (lambda s: lambda: s.run(None, feed))(session)
        for kind, ov_model in ov_models.items():
            contenders[f"openvino_{kind}"], extra[f"openvino_{kind}_precision"] = openvino_runner(ov_model, threads, xn)
        times = time_round_robin(contenders, runs, **timing)
        ms = {k: {"median": 1e3 * statistics.median(v), "min": 1e3 * min(v)} for k, v in times.items()}
        engine = engines["engine_tq2"]
        result = {"model": name, "threads": threads, "runs": runs, "kernels": engine.kernels,
                  "arena_bytes": engine.arena_bytes, "repacked_bytes": engine.repacked_bytes, **extra, "ms": ms}
        others = [k for k in ms if not k.startswith("engine")]
        result["speedup"] = {e: {o: ms[o]["median"] / ms[e]["median"] for o in others} for e in engines}
        for engine in engines.values():
            engine.close()
        result["engine_profile_ms"] = engine_profile(files["tq2"], threads, xn, runs)
        if "engine_tq2_fast" in ms:
            result["engine_fast_profile_ms"] = engine_profile(files["tq2"], threads, xn, runs, "fast")
        if threads == 1 and floors:
            with Engine(files["tq2"]) as e:
                result["floor_ms"] = phase_floors(e, floors)
                result["profile_over_floor"] = {k: result["engine_profile_ms"][k] / v
                                                for k, v in result["floor_ms"].items()}
                if "engine_fast_profile_ms" in result:
                    result["fast_floor_ms"] = phase_floors(e, floors, fast=True)
                    result["fast_profile_over_floor"] = {k: result["engine_fast_profile_ms"][k] / v
                                                         for k, v in result["fast_floor_ms"].items()}
        result["onnxruntime_profile_ms"] = {
            kind: ort_profile(path, threads, feed, runs, workdir / f"ort_{kind}") for kind, path in onnx_paths.items()}
        results.append(result)
    return results


def torch_matmul_gmacs(threads: int, reps: int) -> float:
    tokens, k, rows = KERNEL_SHAPE
    torch.set_num_threads(threads)
    a, b = torch.randn(tokens, k), torch.randn(k, rows)
    for _ in range(5):
        a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return tokens * k * rows / statistics.median(ts) * 1e-9


# Vector instructions on the float/SIMD pipes (loads and stores not counted) per vector of 16
# values in the engine's own formulas, for the floors of the elementwise phases (docs/engine.md):
SOFTMAX_OPS = 29   # x - max, exp (26: clamp 2, reduction 6, polynomial 14, scaling 4), sum, normalize
GELU_OPS = 33      # x / sqrt 2, interval (abs, mul, cvt, min), 7 lookups, 6 mul + 6 add, cut, sign, 0.5 x (1 + erf)
RMS_QUANT_OPS = 16  # squares (sub, mul, add), |h r g| max (mul, mul, abs, max), quantize (3 mul, round, min, max, cvt, add, narrow)
LN_RMS_QUANT_OPS = 24  # LayerNorm mean (sub, add), variance (sub, mul, add), output + squares (sub, 2 mul, add, mul, add), then the 13 above
IMAGE_OPS = 9      # |x| max (abs, max), quantize (mul, round, min, max, cvt, narrow), position add (add)


def peaks() -> dict:
    """engine/tests/bench_peak.c: {instruction: {"g_per_s", "gmacs"}}, best of 5 rounds."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "engine"), "build/bench_peak"], check=True)
    out = subprocess.run([str(ROOT / "engine" / "build" / "bench_peak"), "5"], check=True, capture_output=True,
                         text=True).stdout
    return {row.pop("instruction"): row for row in map(json.loads, out.splitlines()) if row}


def phase_floors(engine: Engine, peak: dict, fast: bool = False) -> dict | None:
    """Milliseconds each phase needs at least on one core of this CPU with the engine's kernels:
    its multiply-adds at the instruction's peak (the ternary GEMMs and the patch embedding on
    vpdpbusd, or tdpbusd with the AMX set; attention on vmulps + vaddps in the exact mode; in the
    fast mode, scores on vfmadd231ps and weighted values on vdpbf16ps, or with the AMX set both on
    tdpbf16ps, the scores' three products a term), its other vector instructions at 4 per cycle
    (twice the rate of vmulps + vaddps pairs). None without AVX-512 VNNI."""
    if "vpdpbusd zmm" not in peak:
        return None
    c = engine.config
    T, D, H, depth, heads = c["num_tokens"], c["embed_dim"], c["mlp_hidden"], c["depth"], c["num_heads"]
    hd, classes = D // heads, c["num_classes"]
    patches, kp = T - 1, c["in_chans"] * c["patch_h"] * c["patch_w"]
    amx = engine.kernels == "amx" and "tdpbusd" in peak
    g = lambda name: peak[name]["gmacs"] * 1e9  # noqa: E731
    int8, fp32 = g("tdpbusd" if amx else "vpdpbusd zmm"), g("vmulps + vaddps zmm")
    vec_ops = 2 * peak["vmulps + vaddps zmm"]["g_per_s"] * 1e9  # instructions per second
    ms = lambda ops: 1e3 * ops / vec_ops  # noqa: E731
    gemm_macs = depth * T * (4 * D * D + 2 * D * H) + D * classes
    att_macs = depth * heads * T * T * hd  # scores; the weighted values as many
    if not fast:
        att = 1e3 * 2 * att_macs / fp32
    elif amx and "tdpbf16ps" in peak:
        att = 1e3 * 4 * att_macs / g("tdpbf16ps")
    else:
        pv = "vdpbf16ps zmm" if "vdpbf16ps zmm" in peak else "vfmadd231ps zmm"
        att = 1e3 * att_macs * (1 / g("vfmadd231ps zmm") + 1 / g(pv))
    return {"embed": 1e3 * patches * kp * D / int8 + ms(c["in_chans"] * c["img_h"] * c["img_w"] / 16 * IMAGE_OPS),
            "norm_quant": ms(depth * T * (2 * D * LN_RMS_QUANT_OPS + (D + H) * RMS_QUANT_OPS) / 16),
            "gemm": 1e3 * gemm_macs / int8,
            "attention": att + ms(depth * heads * T * T / 16 * SOFTMAX_OPS),
            "gelu": ms(depth * T * H / 16 * GELU_OPS)}


def bench_kernel(rounds: int, reps: int, scalar: bool) -> dict:
    """Rounds of (torch 1 and 2 threads, then bench_gemm): the machine's speed drifts (other
    jobs, the host), so each round's ratio compares runs a second apart; the result is the
    median over rounds."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "engine"), "build/bench_gemm"], check=True)
    cmd = [str(ROOT / "engine" / "build" / "bench_gemm"), *map(str, KERNEL_SHAPE), str(reps), "2",
           "all" if scalar else "simd"]
    per_round = []
    for _ in range(rounds):
        torch_gmacs = {t: torch_matmul_gmacs(t, reps) for t in (1, 2)}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        per_round.append((torch_gmacs, [json.loads(line) for line in out.splitlines() if line.strip()]))
    rows = []
    for i, row in enumerate(per_round[0][1]):
        gmacs = [r[1][i]["gmacs"] for r in per_round]
        ratios = [r[1][i]["gmacs"] / r[0][row["threads"]] for r in per_round]
        rows.append({key: row[key] for key in ("kernels", "format", "threads", "tokens", "k", "rows")}
                    | {"gmacs": statistics.median(gmacs), "gmacs_rounds": gmacs,
                       "vs_torch_fp32_matmul": statistics.median(ratios)})
    torch_gmacs = {t: statistics.median([r[0][t] for r in per_round]) for t in (1, 2)}
    return {"shape_tokens_k_rows": list(KERNEL_SHAPE), "rounds": rounds, "reps_per_round": reps,
            "torch_fp32_matmul_gmacs": torch_gmacs, "engine": rows}


def print_report(report: dict) -> None:
    m = report["machine"]
    print(f"{m['cpu']} (family {m['family']} model {m['model']}), flags {' '.join(m['simd_flags'])}; "
          f"medians of {report['runs']} rounds (ms); load average {m['load_average_start']} -> {m['load_average_end']}")
    for r in report["models"]:
        prec = ", ".join(f"{k.removesuffix('_precision')}: {v}" for k, v in r.items() if k.endswith("_precision"))
        print(f"\n{r['model']}, {r['threads']} thread(s) (engine kernels: {r['kernels']}, arena {r['arena_bytes']:,} B, "
              f"repacked weights {r['repacked_bytes']:,} B; {prec})")
        for k, v in r["ms"].items():
            line = f"  {k:28s} {v['median']:8.2f} {v['min']:8.2f}"
            if k in r["speedup"]:
                line += "   " + ", ".join(f"{s:.2f}x {o}" for o, s in r["speedup"][k].items())
            print(line)
        print("  engine by phase (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in r["engine_profile_ms"].items()))
        if "engine_fast_profile_ms" in r:
            print("  engine, fast numerics, by phase (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["engine_fast_profile_ms"].items()))
        if "floor_ms" in r:
            print("  floors (ms): " + ", ".join(f"{k} {v:.2f} ({r['profile_over_floor'][k]:.2f}x)"
                                            for k, v in r["floor_ms"].items()))
        if "fast_floor_ms" in r:
            print("  fast numerics' floors (ms): " + ", ".join(f"{k} {v:.2f} ({r['fast_profile_over_floor'][k]:.2f}x)"
                                                           for k, v in r["fast_floor_ms"].items()))
        for kind, ops in r["onnxruntime_profile_ms"].items():
            print(f"  onnxruntime {kind} by operator (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in list(ops.items())[:8]))
    if report.get("peaks"):
        print("\ninstruction peaks, one core: " + ", ".join(f"{k} {v['g_per_s']:.2f} G/s" for k, v in report["peaks"].items()))
    kern = report.get("kernel")
    if kern:
        print(f"\nternary GEMM (tokens, k, rows) = {tuple(kern['shape_tokens_k_rows'])}; torch FP32 matmul: "
              + ", ".join(f"{t} thread(s) {g:.1f} GMAC/s" for t, g in kern["torch_fp32_matmul_gmacs"].items()))
        for row in kern["engine"]:
            print(f"  {row['kernels']:6s} {row['format']} {row['threads']} thread(s): {row['gmacs']:7.1f} GMAC/s "
                  f"({row['vs_torch_fp32_matmul']:.2f}x torch FP32, median of rounds)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224", "deit3_small_patch16_224"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--runs", type=int, default=20, help="timed rounds (>= 10)")
    p.add_argument("--order", choices=("rotate", "shuffle"), default="rotate",
                   help="contenders' order from round to round [default: rotate]")
    p.add_argument("--pause-ms", type=float, default=5.0, help="pause before each timed run [default: 5]")
    p.add_argument("--tq1", action="store_true", help="also time the model exported as tq1")
    p.add_argument("--scalar", action="store_true",
                   help="also time the engine's portable scalar kernels (slow: minutes for DeiT-III-S)")
    p.add_argument("--no-kernel", action="store_true", help="skip the GEMM-alone benchmark")
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/engine_speed_<cpu>.json)")
    args = p.parse_args()
    if args.runs < 10:
        p.error("--runs: at least 10")
    if any(t < 1 for t in args.threads):
        p.error("--threads: positive numbers")
    if not 0 <= args.pause_ms <= 10_000:
        p.error("--pause-ms: 0 to 10000")
    import nncf
    import onnxruntime
    import openvino

    logging.getLogger("nncf").setLevel(logging.ERROR)
    info = machine()
    out = args.out or ROOT / "benchmarks" / "results" / f"engine_speed_{machine_slug(info)}.json"
    report = {"machine": info | {"load_average_start": load_average()},
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                           "openvino": openvino.__version__, "nncf": nncf.__version__, "timm": timm.__version__},
              "runs": args.runs, "order": args.order, "pause_ms": args.pause_ms, "models": []}
    report["peaks"] = peaks() if platform.machine() in ("x86_64", "AMD64") else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            report["models"] += bench_model(name, args.threads, args.runs, args.tq1, args.scalar, Path(tmp),
                                            report["peaks"], {"order": args.order, "pause_ms": args.pause_ms})
    if not args.no_kernel:
        report["kernel"] = bench_kernel(5, max(args.runs, 20), args.scalar)
    report["machine"]["load_average_end"] = load_average()
    atomic_write_json(out, report)
    print_report(report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
