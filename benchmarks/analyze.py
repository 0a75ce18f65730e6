"""``ftervit analyze`` timed on trained models: the digits quickstart and the Fashion-MNIST benchmark.

Each model set (a directory holding teacher/last.pth, phase2/last.pth and model.ftv, as
``ftervit quickstart`` and benchmarks/fashion_mnist.py write them) is analysed by the command
itself, in a subprocess, with every analysis and the .ftv file; the wall time includes Python's
start. Goals: digits under 60 s, Fashion-MNIST with 512 images under 5 minutes on 2 cores.
The results, with the numbers docs/analysis.md quotes, go to benchmarks/results/analyze.json;
with --docs the Fashion-MNIST figures are copied to docs/analysis/. It also records
``ftervit size`` of DeiT-Tiny and DeiT-III-S (the paper's bytes by component).

    flock /work/heavy.lock .venv/bin/python benchmarks/analyze.py --docs     # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/analyze.py --quickstart runs/quickstart --fashion runs/fashion_mnist
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "analyze.json"
DOCS = ROOT / "docs" / "analysis"
SETS = {  # name: (model, data, --images, goal in seconds)
    "digits": ("ftervit_digits", "digits", 512, 60),
    "fashion_mnist": ("ftervit_fashion_mnist", "fashion-mnist", 512, 300),
}


def ftervit(*args: str) -> tuple[dict, float]:
    """``ftervit ARGS --json`` in a subprocess running this checkout's code: its output and wall time."""
    cmd = [sys.executable, "-m", "ftervit", *args, "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout), wall


def analyze(name: str, models: Path, out: Path) -> dict:
    """Run ``ftervit analyze`` on one model set; its report, the wall time and the numbers the docs quote."""
    model, data, images, goal = SETS[name]
    args = ["analyze", "--model", model, "--data", data, "--teacher", str(models / "teacher" / "last.pth")]
    full = [*args, "--checkpoint", str(models / "phase2" / "last.pth"), "--ftv", str(models / "model.ftv"),
            "--images", str(images), "--out", str(out)]
    report, wall = ftervit(*full)
    # The teacher's weights through the ternary quantizers before any distillation, for comparison.
    ftervit(*args, "--only", "weights", "--out", str(out / "converted_teacher"))
    converted = json.loads((out / "converted_teacher" / "weights.json").read_text())["model"]["overall"]
    imp = json.loads((out / "importance.json").read_text())
    fid = json.loads((out / "fidelity.json").read_text())
    weights = json.loads((out / "weights.json").read_text())
    roll = json.loads((out / "rollout.json").read_text())
    recipe = models / "summary.json"
    stages = {s: yaml.safe_load((models / s / "config.yaml").read_text())
              for s in ("teacher", "phase1", "phase2") if (models / s / "config.yaml").is_file()}
    return {
        "models": str(models), "command": "ftervit " + " ".join(full), "wall_seconds": round(wall, 1),
        "goal_seconds": goal, "goal_met": wall < goal,
        "recipe": json.loads(recipe.read_text()) if recipe.is_file() else None,
        "stages": stages,  # the training settings that made the models
        "report": report,
        "importance": {who: {"components": imp[who]["components"], "most_important_layer": imp[who]["most_important_layer"],
                             "top_layers": sorted(imp[who]["layers"], key=lambda r: -r["taylor"])[:5]}
                       for who in ("teacher", "student")},
        "weights": {k: {"components": weights[k]["components"], "overall": weights[k]["overall"]}
                    for k in ("model", "ftv")} | {"ftv_differs": weights["ftv"]["differs_from_model"],
                                                  "converted_teacher": converted},
        "fidelity": {k: v for k, v in fid.items() if k != "patch_embed"}
                    | {"patch_embed": {k: fid["patch_embed"][k] for k in ("mean", "std", "tokens")}},
        "rollout": {"mean_cosine": roll["mean_cosine"], "mean_iou": roll["mean_iou"], "grid": roll["grid"],
                    "images": [{k: r[k] for k in ("index", "label", "teacher_pred", "student_pred", "cosine", "iou")}
                               for r in roll["images"]]},
    }


def reference_ternary(samples: int = 10**6) -> dict:
    """Zeros and cosine (value vs dequantized ternary) of absmean on known distributions: what the
    models' numbers are compared with in docs/analysis.md (heavier tails, more zeros, lower cosine)."""
    import torch

    from ftervit.quantization import ternary_absmean

    gen = torch.Generator().manual_seed(0)
    draws = {"normal": torch.randn(samples, generator=gen, dtype=torch.float64)}
    u = torch.rand(samples, generator=gen, dtype=torch.float64) - 0.5
    draws["laplace"] = -u.sign() * torch.log1p(-2 * u.abs())
    chi2 = torch.randn(3, samples, generator=gen, dtype=torch.float64).pow(2).sum(0)
    draws["student_t3"] = torch.randn(samples, generator=gen, dtype=torch.float64) / (chi2 / 3).sqrt()
    out = {}
    for name, w in draws.items():
        codes, scale = ternary_absmean(w)
        out[name] = {"zero_fraction": float((codes == 0).double().mean()),
                     "cosine": float(torch.nn.functional.cosine_similarity(w, codes / scale, dim=0))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quickstart", type=Path, default=Path("runs/quickstart"), help="digits models")
    parser.add_argument("--fashion", type=Path, default=Path("runs/fashion_mnist"), help="Fashion-MNIST models")
    parser.add_argument("--out", type=Path, default=Path("runs/analyze_bench"), help="analysis outputs")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--docs", action="store_true", help="copy the Fashion-MNIST figures to docs/analysis/")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from ftervit.fileio import atomic_write, atomic_write_json

    import torch

    record = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__, "platform": platform.platform()},
              "sets": {}}
    for name, models in (("digits", args.quickstart), ("fashion_mnist", args.fashion)):
        if not (models / "phase2" / "last.pth").is_file():
            print(f"{name}: no models in {models}, skipped")
            continue
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        r = analyze(name, models, out)
        record["sets"][name] = r
        print(f"{name}: {r['wall_seconds']} s (goal < {r['goal_seconds']} s: {'met' if r['goal_met'] else 'NOT met'}); "
              f"analyses {r['report']['seconds']}")
        if args.docs and name == "fashion_mnist":
            DOCS.mkdir(parents=True, exist_ok=True)
            for png in sorted(out.glob("*.png")):
                atomic_write(DOCS / png.name, png.read_bytes())
    # The paper's component table: bytes by scenario of the two architectures it names.
    for model in ("deit_tiny_patch16_224", "deit3_small_patch16_224"):
        size, _ = ftervit("size", model)
        record.setdefault("size", {})[model] = {k: size[k] for k in ("scenario_bytes", "leftover_percent")}
    record["reference_ternary"] = reference_ternary()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results, record)
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
