"""Latency of ``ftervit demo``: the engine's time and the whole request's, and what the rollout costs.

For each model (the quickstart's digits model, and DeiT-III-S/224 with random weights exported
as tq2: speed does not depend on the values):

- requests: ``ftervit demo FILE --port 0`` in a subprocess, --requests sequential POSTs of one
  image to /api/classify over loopback (httpx, one kept-alive connection) after warm-up; "total"
  is the client's wall time from sending to the parsed JSON (upload, multipart parsing, Pillow
  decoding and resizing, the engine, the answer), "engine" the ``ms`` the server reports (the
  forward pass with its rollout, inside the engine lock). The digits image is a 128x128 PNG of
  a scikit-learn digit; the DeiT image a 640x480 JPEG (a camera frame's size).
- in process: ``Engine.forward`` and ``Engine.forward_rollout`` on the same input, alternating,
  --rounds rounds of --calls calls each (median of the per-round medians).
- plain forward against a baseline git ref (default ``main``; ``--baseline ''`` skips it): the
  engine and Python package of that ref, extracted with ``git archive``, in a worker process
  beside one of this checkout; the C function ``ftv_model_forward`` of each is timed in
  alternating rounds, and the arena sizes compared. This checks that adding the rollout left
  the plain forward pass alone.

    flock /work/heavy.lock python benchmarks/demo_latency.py [--quickstart runs/quickstart/model.ftv]
        [--threads 1] [--requests 50] [--out benchmarks/results/demo_latency.json]
        [--screenshot docs/demo.png]

``--screenshot`` also saves the page on the quickstart model after one upload, in Debian's
Chromium driven by Playwright (the README's picture).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from ftervit.engine import Engine
from ftervit.fileio import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]

# A worker that times the C function ftv_model_forward (through ctypes, without the binding's
# Python checks and lock): reads a number of calls per line, answers the median ms.
WORKER = """
import ctypes, sys, time, statistics, numpy as np
from ftervit.engine import Engine
e = Engine(sys.argv[1], threads=int(sys.argv[2]))
x = np.random.default_rng(0).standard_normal(e.input_shape).astype(np.float32)
out = np.empty(e.num_classes, np.float32)
fp = ctypes.POINTER(ctypes.c_float)
forward, model, xp, op = e._lib.ftv_model_forward, e._model, x.ctypes.data_as(fp), out.ctypes.data_as(fp)
forward(model, xp, op)
print(e.arena_bytes, flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t = time.perf_counter(); forward(model, xp, op); times.append((time.perf_counter() - t) * 1000)
    print(statistics.median(times), flush=True)
"""


def digit_png(index: int = 1000) -> bytes:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits().images[index]
    buf = io.BytesIO()
    Image.fromarray(np.round(d * 255 / 16).astype(np.uint8)).resize((128, 128), Image.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def frame_jpeg() -> bytes:
    """A 640x480 smooth colour image: decodes and resizes like a camera frame."""
    from PIL import Image

    y, x = np.mgrid[0:480, 0:640] / 100.0
    rgb = np.stack([np.sin(x) * np.cos(y), np.sin(x + y), np.cos(x * 0.7 - y)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(np.uint8((rgb + 1) * 127.5)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def summary(values: list[float]) -> dict:
    v = sorted(values)
    return {"median": round(statistics.median(v), 3), "p90": round(v[int(0.9 * (len(v) - 1))], 3),
            "min": round(v[0], 3), "n": len(v)}


def start_server(path: Path, threads: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "ftervit", "demo", str(path), "--port", "0", "--threads",
                             str(threads)], stdout=subprocess.PIPE, text=True)
    match = re.search(r"http://[^ ]+/", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit(f"ftervit demo did not start on {path}")
    return proc, match.group(0)


def requests(path: Path, image: bytes, name: str, threads: int, n: int) -> dict:
    import httpx

    proc, url = start_server(path, threads)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            total, engine, top = [], [], None
            for i in range(n + 5):
                start = time.perf_counter()
                r = client.post("api/classify", files={"image": (name, image)})
                answer = r.json()
                if i >= 5:  # warm-up: the first requests build caches and the rollout workspace
                    total.append((time.perf_counter() - start) * 1000)
                    engine.append(answer["ms"])
                top = answer["top"][0]
    finally:
        proc.terminate()
        proc.wait()
    return {"image": name, "image_bytes": len(image), "total_ms": summary(total), "engine_ms": summary(engine),
            "top1": top}


def in_process(path: Path, threads: int, rounds: int, calls: int) -> dict:
    e = Engine(path, threads=threads)
    x = np.random.default_rng(0).standard_normal((1, *e.input_shape)).astype(np.float32)
    e.forward_rollout(x)
    result = {"forward": [], "forward_rollout": []}
    for _ in range(rounds):
        for name, f in (("forward", e.forward), ("forward_rollout", e.forward_rollout)):
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                f(x)
                times.append((time.perf_counter() - start) * 1000)
            result[name].append(statistics.median(times))
    fwd, rollout = statistics.median(result["forward"]), statistics.median(result["forward_rollout"])
    return {"forward_ms": round(fwd, 3), "forward_rollout_ms": round(rollout, 3),
            "rollout_over_forward": round(rollout / fwd, 3), "arena_bytes": e.arena_bytes,
            "rollout_bytes": e.rollout_bytes, "kernels": e.kernels}


def against_baseline(ref: str, path: Path, threads: int, rounds: int, calls: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "engine", "src"], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        workers = {}
        for name, src in (("baseline", Path(tmp) / "src"), ("this", ROOT / "src")):
            env = dict(os.environ, PYTHONPATH=str(src))
            env.pop("FTERVIT_ENGINE_DIR", None)
            workers[name] = subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(threads)], env=env,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        arena = {name: int(w.stdout.readline()) for name, w in workers.items()}
        times = {name: [] for name in workers}
        for _ in range(rounds):
            for name, w in workers.items():
                w.stdin.write(f"{calls}\n")
                w.stdin.flush()
                times[name].append(float(w.stdout.readline()))
        for w in workers.values():
            w.stdin.close()
            w.wait()
    ratios = [a / b for a, b in zip(times["this"], times["baseline"])]
    return {"ref": ref, "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], capture_output=True,
                                                 text=True).stdout.strip(),
            "forward_ms": {name: round(statistics.median(t), 3) for name, t in times.items()},
            "this_over_baseline": round(statistics.median(ratios), 4),
            "ratio_range": [round(min(ratios), 4), round(max(ratios), 4)], "arena_bytes": arena}


def screenshot(path: Path, image: bytes, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    proc, url = start_server(path, 1)
    try:
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            (Path(tmp) / "digit.png").write_bytes(image)
            browser = p.chromium.launch(executable_path=chromium, args=["--headless=new", "--no-sandbox",
                                                                        "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 860, "height": 620})
            page.goto(url)
            page.wait_for_function("document.getElementById('meta').textContent.includes('kernels')")
            page.set_input_files("input[type=file]", str(Path(tmp) / "digit.png"))
            page.wait_for_selector("#top li")
            page.wait_for_timeout(300)
            page.screenshot(path=str(Path(tmp) / "shot.png"), full_page=True)
            browser.close()
            from ftervit.fileio import atomic_write

            atomic_write(out, (Path(tmp) / "shot.png").read_bytes())
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quickstart", type=Path, default=ROOT / "runs" / "quickstart" / "model.ftv")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline", default="main", help="git ref whose plain forward pass is the baseline ('' skips)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo_latency.json")
    parser.add_argument("--screenshot", type=Path, help="also save the page on the quickstart model here")
    args = parser.parse_args()
    if not args.quickstart.is_file():
        raise SystemExit(f"{args.quickstart} is missing: run `make quickstart` or pass --quickstart")

    import torch

    from ftervit import create_model
    from ftervit.export import export_model

    results = {"command": "python benchmarks/demo_latency.py " + " ".join(sys.argv[1:]), "threads": args.threads,
               "cpu": platform.processor() or platform.machine(), "python": platform.python_version(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        deit = Path(tmp) / "deit3_small_224.ftv"
        export_model(create_model("deit3_small_patch16_224").eval(), deit, "tq2")
        for label, path, image, name in (("quickstart digits", args.quickstart, digit_png(), "digit.png"),
                                         ("deit3_small_patch16_224 (random)", deit, frame_jpeg(), "frame.jpg")):
            small = Engine(path).config["num_tokens"] < 64
            entry = {"file": str(path) if path != deit else "random weights, tq2", "file_bytes": path.stat().st_size}
            entry["requests"] = requests(path, image, name, args.threads, args.requests)
            entry["engine"] = in_process(path, args.threads, args.rounds, 200 if small else 10)
            if args.baseline:
                entry["plain_forward_vs_baseline"] = against_baseline(args.baseline, path, args.threads, args.rounds,
                                                                      200 if small else 10)
            results["models"][label] = entry
            print(label, json.dumps(entry, indent=1))
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    if args.screenshot:
        screenshot(args.quickstart, digit_png(), args.screenshot)
        print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()
