"""Phase-2 recovery study on Fashion-MNIST: the ablations the paper's reviewers asked for.

One FP32 teacher, one Phase-1 run that keeps snapshots (``--save-epochs``), then Phase 2
restarted from every snapshot (the paper's Figure 2b), and from the last snapshot at
several learning rates and lengths, with KL + cross-entropy instead of KL alone, and with
absmax instead of absmean weight scaling (its own Phase 1). Every row gives the top-1 right
before the restart (the snapshot's) and after it, on the 10,000 test images.
Writes benchmarks/results/recovery_study.{json,md,png}.

    .venv/bin/python benchmarks/recovery_study.py                 # Fashion-MNIST (see the JSON for the time)
    .venv/bin/python benchmarks/recovery_study.py --max-minutes 30  # in steps: rerun to continue
    .venv/bin/python benchmarks/recovery_study.py --teacher runs/fashion_mnist/teacher/last.pth
    .venv/bin/python benchmarks/recovery_study.py --smoke --out /tmp/s --results-dir /tmp/s  # digits, < 2 min
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
PHASE2_LR = 1e-5  # SPEC section 3
# Per mode: the recipe's settings, the Phase-1 length and snapshots, the restart grid.
MODES: dict[str, dict[str, Any]] = {
    "fashion-mnist": dict(
        common=FASHION_SETTINGS, teacher=FASHION_STAGES["teacher"],
        phase1=dict(epochs=8, lr=FASHION_STAGES["phase1"]["lr"]), snapshots=(1, 2, 4, 8),
        restart_epochs=2, lrs=(3e-6, 1e-5, 3e-5, 1e-4), lengths=(1, 2, 4), ce_weight=1.0),
    "smoke": dict(
        common=DIGITS_SETTINGS, teacher=dict(DIGITS_STAGES["teacher"], epochs=10, warmup_epochs=1),
        phase1=dict(epochs=4, lr=DIGITS_STAGES["phase1"]["lr"]), snapshots=(1, 2, 4),
        restart_epochs=1, lrs=(1e-5, 1e-4), lengths=(1, 2), ce_weight=1.0),
}


def plan(mode: dict[str, Any]) -> list[dict[str, Any]]:
    """The Phase-2 restarts: ``{name, group, source, from_epoch, lr, epochs, ce_weight, weight_scale}``."""
    last, length = mode["snapshots"][-1], mode["restart_epochs"]
    base = dict(source="phase1", from_epoch=last, lr=PHASE2_LR, epochs=length, ce_weight=0.0, weight_scale="absmean")
    rows = [dict(base, name=f"from_epoch_{e}", group="snapshot", from_epoch=e) for e in mode["snapshots"]]
    rows += [dict(base, name=f"lr_{lr:g}", group="learning rate", lr=lr) for lr in mode["lrs"] if lr != PHASE2_LR]
    rows += [dict(base, name=f"epochs_{n}", group="length", epochs=n) for n in mode["lengths"] if n != length]
    rows.append(dict(base, name="kl_plus_ce", group="loss", ce_weight=mode["ce_weight"]))
    rows.append(dict(base, name="absmax", group="weight scale", source="phase1_absmax", weight_scale="absmax"))
    return rows


def run_study(args: argparse.Namespace, study: Study) -> dict[str, Any]:
    mode, common = args.mode, args.common
    teacher, teacher_top1 = teacher_checkpoint(study, args)
    distill = dict(mode="distill", teacher=teacher, **common)
    last = str(mode["snapshots"][-1])
    jobs = {"phase1": dict(distill, save_epochs=",".join(str(e) for e in mode["snapshots"]), **mode["phase1"]),
            "phase1_absmax": dict(distill, weight_scale="absmax", save_epochs=last, **mode["phase1"])}
    restarts = plan(mode)
    for r in restarts:
        init = study.out / r["source"] / f"epoch_{r['from_epoch']:03d}.pth"
        jobs[r["name"]] = dict(distill, phase=2, init=str(init), lr=r["lr"], epochs=r["epochs"],
                               ce_weight=r["ce_weight"], weight_scale=r["weight_scale"])
    records = study.run_all(jobs, after={r["name"]: [r["source"]] for r in restarts})
    rows = []
    for r in restarts:
        result = records[r["name"]]
        before = records[r["source"]]["history"][r["from_epoch"] - 1]["val_top1"]
        rows.append(dict(r, before_top1=before, after_top1=result["top1"],
                         gain_pp=round(100 * (result["top1"] - before), 2),
                         gap_pp=round(100 * (teacher_top1 - result["top1"]), 2),
                         curve=[h["val_top1"] for h in result["history"]], seconds=result["seconds"]))
    return {"teacher": teacher, "teacher_top1": teacher_top1,
            "phase1": {k: records[k] for k in ("phase1", "phase1_absmax")}, "restarts": rows}


def findings(result: dict[str, Any]) -> dict[str, Any]:
    """The paper's claims, measured: each a number and whether it holds here."""
    rows = {r["name"]: r for r in result["restarts"]}
    snaps = [r for r in result["restarts"] if r["group"] == "snapshot"]
    last = snaps[-1]
    best_lr = max((r for r in result["restarts"] if r["group"] in ("snapshot", "learning rate")
                   and r["from_epoch"] == last["from_epoch"] and r["epochs"] == last["epochs"]),
                  key=lambda r: r["after_top1"])
    return {
        "recovery_gain_pp_from_last_snapshot": last["gain_pp"],
        "early_snapshots_end_lower": all(r["after_top1"] <= last["after_top1"] for r in snaps[:-1]),
        "early_snapshots_gain_less": all(r["gain_pp"] <= last["gain_pp"] for r in snaps[:-1]),
        "best_learning_rate": best_lr["lr"],
        "kl_only_beats_kl_plus_ce_pp": round(100 * (last["after_top1"] - rows["kl_plus_ce"]["after_top1"]), 2),
        "absmean_beats_absmax_pp": round(100 * (last["after_top1"] - rows["absmax"]["after_top1"]), 2),
    }


def table(result: dict[str, Any]) -> str:
    rows = [[r["group"], r["source"], r["from_epoch"], f"{r['lr']:g}", r["epochs"],
             "KL + CE" if r["ce_weight"] else "KL", r["weight_scale"], f"{r['before_top1']:.2%}",
             f"{r['after_top1']:.2%}", f"{r['gain_pp']:+.2f}", f"{r['gap_pp']:.2f}"] for r in result["restarts"]]
    headers = ["ablation", "Phase 1", "from epoch", "lr", "epochs", "loss", "scale", "before", "after",
               "gain (pp)", "gap to teacher (pp)"]
    return (f"Teacher top-1 {result['teacher_top1']:.2%}; Phase 2 restarts (top-1 on the test split before "
            f"and after):\n\n" + markdown_table(headers, rows))


def plot(result: dict[str, Any], path: Path) -> None:
    """Figure-2 style: (a) Phase 1 and the restarts branching off it, (b) before/after per snapshot, (c) ablations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftervit.fileio import save_figure

    fig, (ax_a, ax_b, ax_c) = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.3, 1, 1.2]})
    teacher = 100 * result["teacher_top1"]
    for source, style in (("phase1", "-"), ("phase1_absmax", ":")):
        hist = result["phase1"][source]["history"]
        ax_a.plot([h["epoch"] for h in hist], [100 * h["val_top1"] for h in hist], style, color="black",
                  label=f"Phase 1 ({'absmax' if 'absmax' in source else 'absmean'})")
    colors = plt.get_cmap("viridis")
    snaps = [r for r in result["restarts"] if r["group"] == "snapshot"]
    for i, r in enumerate(snaps):
        xs = [r["from_epoch"] + k for k in range(len(r["curve"]) + 1)]
        ax_a.plot(xs, [100 * r["before_top1"]] + [100 * v for v in r["curve"]], "o-", ms=3,
                  color=colors(i / max(len(snaps) - 1, 1)), label=f"Phase 2 from epoch {r['from_epoch']}")
    for ax in (ax_a, ax_b):
        ax.axhline(teacher, color="grey", ls="--", lw=1)
    ax_c.axvline(teacher, color="grey", ls="--", lw=1)
    for ax in (ax_a, ax_b, ax_c):
        ax.grid(alpha=0.3)
    ax_a.set_title("(a) Phase 1, and Phase 2 restarted from its snapshots", fontsize=10)
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("test top-1 (%)")
    ax_a.legend(fontsize=8)
    x = range(len(snaps))
    ax_b.bar([i - 0.2 for i in x], [100 * r["before_top1"] for r in snaps], 0.4, label="before Phase 2")
    ax_b.bar([i + 0.2 for i in x], [100 * r["after_top1"] for r in snaps], 0.4, label="after Phase 2")
    ax_b.set_xticks(list(x), [f"epoch {r['from_epoch']}" for r in snaps])
    ax_b.set_title(f"(b) recovery by restart point (lr {PHASE2_LR:g})", fontsize=10)
    ax_b.legend(fontsize=8, loc="lower right")
    others = [snaps[-1]] + [r for r in result["restarts"] if r["group"] != "snapshot"]
    labels = ["reference"] + [f"{r['group']}: {_label(r)}" for r in others[1:]]
    ys = range(len(others))
    ax_c.barh(list(ys), [100 * r["after_top1"] for r in others], color="tab:orange", label="after")
    ax_c.plot([100 * r["before_top1"] for r in others], list(ys), "k|", ms=12, label="before")
    ax_c.set_yticks(list(ys), labels, fontsize=8)
    ax_c.invert_yaxis()
    ax_c.set_title(f"(c) restarts from epoch {snaps[-1]['from_epoch']}: ablations", fontsize=10)
    ax_c.set_xlabel("test top-1 (%)")
    ax_c.legend(fontsize=8, loc="lower right")
    low = min(100 * min(r["before_top1"] for r in result["restarts"]), teacher) - 1
    ax_b.set_ylim(low, teacher + 1)
    ax_c.set_xlim(low, teacher + 1)
    fig.suptitle(f"Phase-2 recovery (teacher {teacher:.2f}%, dashed)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _label(r: dict[str, Any]) -> str:
    return {"learning rate": f"lr {r['lr']:g}", "length": f"{r['epochs']} epochs", "loss": "KL + CE",
            "weight scale": "absmax (own Phase 1)"}[r["group"]]


def _extras(result: dict[str, Any], args: argparse.Namespace, stem: str) -> dict[str, Any]:
    plot(result, args.results_dir / f"{stem}.png")
    return {"findings": findings(result)}


def main() -> None:
    study_main("recovery_study", __doc__, run_study, MODES, table, _extras)


if __name__ == "__main__":
    main()
