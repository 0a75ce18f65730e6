"""Speed of the C engine on x86 against what a user would pick instead.

Whole models (deit_tiny_patch16_224, deit3_small_patch16_224; 224 px, batch 1, random weights:
the speed of every path does not depend on the values), in one process, on the same input
and the same number of threads (default 2):

- the engine (``ftervit.engine.Engine``), its .ftv file exported as tq2 and as tq1, with the
  kernels chosen at load (AVX-512, else AVX2, when the CPU has them; ``--scalar`` adds the portable kernels);
- PyTorch FP32 eager: the timm model, ``torch.set_num_threads``, ``inference_mode``;
- onnxruntime, int8 dynamic quantization of the same FP32 model (``torch.onnx.export`` at
  opset 17, then ``quantize_dynamic(weight_type=QInt8)``, ``intra_op_num_threads``).

Every run of every contender is timed in turn, round after round, so a change in the machine's
load (other jobs) hits them all alike; the table gives medians (and minima) of --runs rounds
after warm-up rounds. Speedups are ratios of medians. Then the ternary GEMM alone on (197 x 384) x (384 x 1536), DeiT-S's fc1:
engine/tests/bench_gemm.c (built with the engine's flags) against ``torch.matmul`` in FP32 on
the same shape, with 1 and 2 threads, in alternating rounds (the ratio is the median of the
rounds' ratios).

    python benchmarks/engine_speed.py [--threads 2] [--runs 20] [--models ...] [--scalar]
        [--out benchmarks/results/engine_speed.json]

Needs onnxruntime and onnx (``pip install onnxruntime onnx``) and a C compiler.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch

import ftervit
from ftervit.engine import Engine
from ftervit.export import export_model
from ftervit.fileio import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
KERNEL_SHAPE = (197, 384, 1536)  # tokens, k, rows: DeiT-S fc1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_flags() -> list[str]:
    """The CPU's flags that pick the engine's kernels: AVX2 and F16C, and AVX-512 F/BW/DQ/VL +
    VNNI for the "avx512" kernel set (GEMM, attention, GELU)."""
    wanted = ("avx2", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def onnx_int8(model: torch.nn.Module, x: torch.Tensor, workdir: Path, threads: int):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, int8 = workdir / "model.onnx", workdir / "model.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(fp32), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["logits"])
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


def time_round_robin(contenders: dict, runs: int, warmup: int = 3) -> dict:
    """Each round times every contender once; returns {name: [seconds...]}. A pause before
    each run lets the previous contender's idle threads stop spinning (OpenMP, onnxruntime
    and the engine's pool all spin a while before they sleep) instead of stealing its cores,
    and the order rotates from round to round, so that no contender always follows the same
    one (with a fixed order, the first engine, always right after PyTorch, measured 7-50%
    slower with 2 threads than the second, which runs the same code)."""
    times = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(warmup + runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = contenders[name]
            time.sleep(0.005)
            t = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def bench_model(name: str, threads: int, runs: int, scalar: bool, workdir: Path) -> dict:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    contenders, engines = {}, {}
    for fmt in ("tq2", "tq1"):
        path = workdir / f"{name}.{fmt}.ftv"
        export_model(ftervit.create_model(name).eval(), path, fmt)
        engines[f"engine_{fmt}"] = Engine(path, threads=threads)
        if scalar:
            os.environ["FTV_FORCE_SCALAR"] = "1"
            try:
                engines[f"engine_{fmt}_scalar"] = Engine(path, threads=threads)
            finally:
                del os.environ["FTV_FORCE_SCALAR"]
    xn = x.numpy()
    for key, engine in engines.items():
        contenders[key] = (lambda e: lambda: e.forward(xn))(engine)
    fp32 = timm.create_model(name).eval()
    contenders["onnxruntime_int8"] = onnx_int8(fp32, x, workdir, threads)
    torch.set_num_threads(threads)

    def torch_eager():
        with torch.inference_mode():
            fp32(x)

    contenders["torch_fp32"] = torch_eager
    times = time_round_robin(contenders, runs)
    result = {"model": name, "threads": threads, "runs": runs,
              "kernels": engines["engine_tq2"].kernels,
              "arena_bytes": engines["engine_tq2"].arena_bytes,
              "repacked_bytes": engines["engine_tq2"].repacked_bytes,
              "ms": {k: {"median": 1e3 * statistics.median(v), "min": 1e3 * min(v)} for k, v in times.items()}}
    for k in engines:
        result[f"{k}_speedup_vs_torch_fp32"] = result["ms"]["torch_fp32"]["median"] / result["ms"][k]["median"]
        result[f"{k}_speedup_vs_onnxruntime_int8"] = (result["ms"]["onnxruntime_int8"]["median"]
                                                      / result["ms"][k]["median"])
    return result


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224", "deit3_small_patch16_224"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20, help="timed rounds (>= 10)")
    p.add_argument("--scalar", action="store_true",
                   help="also time the engine's portable scalar kernels (slow: minutes for DeiT-III-S)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine_speed.json")
    args = p.parse_args()
    if args.runs < 10:
        p.error("--runs: at least 10")
    import onnxruntime

    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "simd_flags": simd_flags(),
                          "load_average_start": load_average()},
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                           "timm": timm.__version__},
              "threads": args.threads, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            report["models"].append(bench_model(name, args.threads, args.runs, args.scalar, Path(tmp)))
    report["kernel"] = bench_kernel(5, max(args.runs, 20), args.scalar)
    report["machine"]["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)

    print(f"{report['machine']['cpu']}, {args.threads} threads, medians of {args.runs} rounds (ms); "
          f"load average {report['machine']['load_average_start']} -> {report['machine']['load_average_end']}")
    for m in report["models"]:
        ms = m["ms"]
        print(f"\n{m['model']} (engine kernels: {m['kernels']}, arena {m['arena_bytes']:,} B, "
              f"repacked weights {m['repacked_bytes']:,} B)")
        print(f"  {'':24s} {'median':>8s} {'min':>8s}   vs torch FP32   vs ORT int8")
        for k, v in ms.items():
            extra = ""
            if k.startswith("engine"):
                extra = (f"   {m[f'{k}_speedup_vs_torch_fp32']:11.2f}x   "
                         f"{m[f'{k}_speedup_vs_onnxruntime_int8']:9.2f}x")
            print(f"  {k:24s} {v['median']:8.1f} {v['min']:8.1f}{extra}")
    kern = report["kernel"]
    print(f"\nternary GEMM (tokens, k, rows) = {tuple(kern['shape_tokens_k_rows'])}; torch FP32 matmul: "
          + ", ".join(f"{t} thread(s) {g:.1f} GMAC/s" for t, g in kern["torch_fp32_matmul_gmacs"].items()))
    for row in kern["engine"]:
        print(f"  {row['kernels']:6s} {row['format']} {row['threads']} thread(s): {row['gmacs']:7.1f} GMAC/s "
              f"({row['vs_torch_fp32_matmul']:.2f}x torch FP32, median of rounds)")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
