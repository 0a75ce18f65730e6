"""``ftervit quickstart``: the whole recipe on scikit-learn digits in a few minutes on a CPU."""
from __future__ import annotations

import argparse
from typing import Any

from ftervit.cli.common import format_table

MODEL, DATA = "ftervit_digits", "digits"
# Tuned on 2 CPU cores: the teacher reaches ~97% and Phase 2 lands within 2 pp of it. Phase 1
# uses lr 3e-4 rather than the ImageNet 1e-4: 20 epochs of 1437 images are ~450 steps, not 250 epochs.
STAGES: dict[str, dict[str, Any]] = {
    "teacher": dict(epochs=30, lr=3e-3, warmup_epochs=2),
    "phase1": dict(epochs=20, lr=3e-4),
    "phase2": dict(epochs=10, lr=1e-5),
}
SETTINGS = dict(model=MODEL, data=DATA, batch_size=64, threads=1)
_NAMES = {"teacher": "FP32 teacher", "phase1": "ternary, Phase 1", "phase2": "ternary, Phase 2"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart", help="teacher, Phase 1, Phase 2 and eval on digits (a few minutes on a CPU)",
        description=f"Train the FP32 {MODEL} teacher on scikit-learn digits, distill the ternary student "
                    "(Phase 1, then Phase 2 from its last checkpoint), evaluate all three on the test split, "
                    "export the result to OUT/model.ftv and run it in the C engine on the test split, "
                    "print a table and write OUT/summary.json. Reruns start afresh in OUT.")
    p.add_argument("--out", default="runs/quickstart", help="output directory [default: runs/quickstart]")
    for stage, settings in STAGES.items():
        p.add_argument(f"--{stage}-epochs", type=int, default=settings["epochs"], metavar="N",
                       help=f"{stage} epochs [default: {settings['epochs']}]")
    p.add_argument("--format", choices=("tq2", "tq1"), default="tq2",
                   help="packing of the exported OUT/model.ftv run by the C engine [default: tq2]")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=run)


def summary_table(summary: dict[str, Any]) -> str:
    """The recipe's summary as a text table: epochs, top-1, top-5 and time per stage (a teacher
    given to :func:`run_recipe` rather than trained: "given", no time)."""
    rows = [[_NAMES[s], summary["epochs"].get(s, "given"), f"{summary[f'{s}_top1']:.2%}", f"{summary[f'{s}_top5']:.2%}",
             f"{summary['seconds'][s]:.0f}s" if s in summary["seconds"] else "-"] for s in _NAMES]
    lines = [f"{summary['model']} on {summary['data']} ({summary['test_images']:,} test images)"]
    if "engine_top1" in summary:
        rows.append([f"ternary, C engine ({summary['file_format']})", "", f"{summary['engine_top1']:.2%}",
                     f"{summary['engine_top5']:.2%}", f"{summary['seconds']['engine']:.0f}s"])
    lines.append(format_table(["model", "epochs", "top-1", "top-5", "time"], rows))
    lines.append(f"gap to the teacher: {summary['gap_pp']:.2f} pp; total {summary['seconds']['total']:.0f}s")
    if "engine_top1" in summary:
        lines.append(f"{summary['file']}: {summary['file_bytes']:,} bytes; the engine's top-1 agrees with "
                     f"PyTorch on {summary['engine_agreement']:.2%} of the test images")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ftervit.training.recipe import run_recipe

    stages = {s: {**settings, "epochs": getattr(args, f"{s}_epochs")} for s, settings in STAGES.items()}
    stages["teacher"]["warmup_epochs"] = min(STAGES["teacher"]["warmup_epochs"], stages["teacher"]["epochs"])
    summary = run_recipe(args.out, stages, export_format=args.format, overwrite=True, quiet=args.quiet, **SETTINGS)
    print(summary_table(summary))
    print(f"summary in {args.out}/summary.json")
    return 0
