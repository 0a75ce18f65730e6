"""FTerViT against TerViT on Fashion-MNIST: the same teacher, data, loss and epochs for every recipe.

Rows: FTerViT full (everything ternary), FTerViT encoder-only (qkv, proj, fc1, fc2 ternary;
patch embedding, LayerNorm and head FP32), TerViT direct (its channel-wise TWN ternarization
of the encoder), TerViT progressive (int8 encoder first, then ternary from it: half the
Phase-1 epochs each), TerViT fully ternarized (TWN on the patch embedding, LayerNorm and head
too). Every recipe distils from the same FP32 teacher with the same KL loss, Phase 1 then a
Phase-2 recovery at lr 1e-5, so that only the quantizer and its scope differ. Per row: the
bits, the FP32 parts kept, the bytes (one rule for all: ``ftervit.analysis.size.recipe_bytes``;
the .ftv file for FTerViT full), top-1 on the 10,000 test images, the gap to the teacher and
the drop that full ternarization costs the recipe.
Writes benchmarks/results/tervit_baseline.{json,md}.

    .venv/bin/python benchmarks/tervit_baseline.py                  # Fashion-MNIST (see the JSON for the time)
    .venv/bin/python benchmarks/tervit_baseline.py --max-minutes 30  # in steps: rerun to continue
    .venv/bin/python benchmarks/tervit_baseline.py --teacher runs/fashion_mnist/teacher/last.pth
    .venv/bin/python benchmarks/tervit_baseline.py --smoke --out /tmp/b --results-dir /tmp/b  # digits, < 2 min
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fashion_mnist import SETTINGS as FASHION_SETTINGS
from fashion_mnist import STAGES as FASHION_STAGES
from study_runs import Study, markdown_table, study_main, teacher_checkpoint

from ftervit.cli.quickstart import SETTINGS as DIGITS_SETTINGS
from ftervit.cli.quickstart import STAGES as DIGITS_STAGES
# Fashion-MNIST: Phase 1 as the recipe's (4 epochs at 5e-4), then 2 Phase-2 epochs: 30 epochs of
# training for the five recipes, two runs side by side.
MODES: dict[str, dict[str, Any]] = {
    "fashion-mnist": dict(common=FASHION_SETTINGS, teacher=FASHION_STAGES["teacher"],
                          phase1=FASHION_STAGES["phase1"], phase2=dict(epochs=2, lr=1e-5)),
    "smoke": dict(common=DIGITS_SETTINGS, teacher=dict(DIGITS_STAGES["teacher"], epochs=10, warmup_epochs=1),
                  phase1=dict(epochs=4, lr=DIGITS_STAGES["phase1"]["lr"]), phase2=dict(epochs=1, lr=1e-5)),
}
# name -> (label, quant, scope, int8 first stage?)
RECIPES = {
    "ftervit_full": ("FTerViT full", "ftervit", "full", False),
    "ftervit_encoder": ("FTerViT encoder-only", "ftervit", "encoder", False),
    "tervit_direct": ("TerViT direct", "tervit", "encoder", False),
    "tervit_progressive": ("TerViT progressive (int8, then ternary)", "tervit", "encoder", True),
    "tervit_full": ("TerViT fully ternarized", "tervit", "full", False),
}
FP32_KEPT = {"full": "none (cls token, position embedding, scales)",
             "encoder": "patch embedding, LayerNorm, head (+ cls token, position embedding)"}
# The drop of full ternarization: each full recipe against its encoder-only twin.
TWIN = {"ftervit_full": "ftervit_encoder", "tervit_full": "tervit_direct"}


def recipe_jobs(name: str, quant: str, scope: str, progressive: bool, distill: dict[str, Any],
                mode: dict[str, Any], out: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """The runs of one recipe: Phase 1 (after TerViT's int8 stage when ``progressive``), then Phase 2."""
    distill = dict(distill, quant=quant, scope=scope)
    epochs, jobs, after = mode["phase1"]["epochs"], {}, {}
    init = None
    if progressive:  # the int8 stage takes half of Phase 1's epochs, the ternary stage the rest
        jobs[f"{name}_int8"] = dict(distill, **{**mode["phase1"], "epochs": epochs // 2}, quant="int8")
        init, after[f"{name}_phase1"] = str(out / f"{name}_int8" / "last.pth"), [f"{name}_int8"]
        epochs -= epochs // 2
    jobs[f"{name}_phase1"] = dict(distill, init=init, **{**mode["phase1"], "epochs": epochs})
    jobs[f"{name}_phase2"] = dict(distill, phase=2, init=str(out / f"{name}_phase1" / "last.pth"), **mode["phase2"])
    after[f"{name}_phase2"] = [f"{name}_phase1"]
    return jobs, after


def row(name: str, runs: dict[str, Any], teacher_top1: float, data_model: str) -> dict[str, Any]:
    """One table row: bits, FP32 parts, bytes and accuracy of a trained recipe."""
    from ftervit.analysis.size import recipe_bytes
    from ftervit.factory import create_student

    label, quant, scope, progressive = RECIPES[name]
    student = create_student(data_model, runs["phase2"]["checkpoint"]).eval()
    out = {"name": name, "recipe": label, "quant": quant, "scope": scope, "progressive": progressive,
           "bits": "W2/A8", "fp32_kept": FP32_KEPT[scope], "bytes": recipe_bytes(student),
           "phase1_top1": runs["phase1"]["top1"], "top1": runs["phase2"]["top1"],
           "gap_pp": round(100 * (teacher_top1 - runs["phase2"]["top1"]), 2)}
    if name == "ftervit_full":
        from ftervit.export import build

        out["ftv_bytes"] = len(build(student, "tq2").data)
    return out


def run_baseline(args: argparse.Namespace, study: Study) -> dict[str, Any]:
    teacher, teacher_top1 = teacher_checkpoint(study, args)
    distill = dict(mode="distill", teacher=teacher, **args.common)
    jobs, after = {}, {}
    for name, (_, quant, scope, progressive) in RECIPES.items():
        more, deps = recipe_jobs(name, quant, scope, progressive, distill, args.mode, study.out)
        jobs.update(more)
        after.update(deps)
    # TerViT's int8 stage first (the longest chain), every Phase 1 side by side, then the Phase 2 runs.
    order = sorted(jobs, key=lambda n: (n.endswith("_phase2"), not n.endswith("_int8")))
    records = study.run_all({n: jobs[n] for n in order}, after)
    rows = [row(name, {stage: records[f"{name}_{stage}"] for stage in ("phase1", "phase2")}, teacher_top1,
                args.common["model"]) for name in RECIPES]
    by_name = {r["name"]: r for r in rows}
    for full, twin in TWIN.items():
        by_name[full]["full_ternarization_drop_pp"] = round(100 * (by_name[twin]["top1"] - by_name[full]["top1"]), 2)
    return {"teacher": teacher, "teacher_top1": teacher_top1, "rows": rows}


def table(result: dict[str, Any]) -> str:
    rows = [[r["recipe"], r["bits"], r["fp32_kept"],
             f"{r['bytes']['total']:,}" + (f" (.ftv {r['ftv_bytes']:,})" if "ftv_bytes" in r else ""),
             f"{r['phase1_top1']:.2%}", f"{r['top1']:.2%}", f"{r['gap_pp']:.2f}",
             f"{r['full_ternarization_drop_pp']:.2f}" if "full_ternarization_drop_pp" in r else ""]
            for r in result["rows"]]
    headers = ["recipe", "bits", "FP32 parts kept", "bytes", "Phase 1 top-1", "top-1", "gap to teacher (pp)",
               "drop of full ternarization (pp)"]
    return f"Teacher top-1 {result['teacher_top1']:.2%}.\n\n" + markdown_table(headers, rows)


def main() -> None:
    study_main("tervit_baseline", __doc__, run_baseline, MODES, table)


if __name__ == "__main__":
    main()
