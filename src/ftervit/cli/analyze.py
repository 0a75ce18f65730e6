"""``ftervit analyze``: the paper's evidence (importance, zero weights, fidelity, rollout) on any model."""
from __future__ import annotations

import argparse
import os

from ftervit.cli.common import format_table, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="importance, ternary weight counts, FP32-vs-ternary fidelity and attention rollout",
        description="The paper's analyses of an FP32 teacher and its ternary student: importance per component "
                    "(Taylor first order, Hutchinson Hessian trace), -1/0/+1 counts, feature fidelity and "
                    "attention rollout. Writes DIR/{importance,weights,fidelity,rollout}.{json,png} and "
                    "report.json. Without --checkpoint the student is the ternary conversion of the teacher. "
                    "--ftv FILE alone counts the codes of a .ftv file. Models under 5 M parameters run on "
                    "one CPU thread unless OMP_NUM_THREADS says otherwise: their tensors are too small to gain "
                    "from more, and a second thread on shared cores made the Hessian products 20x slower.")
    p.add_argument("--model", metavar="M", help="timm ViT name or ftervit preset (required unless --ftv alone)")
    p.add_argument("--teacher", metavar="T.pth", help="FP32 teacher checkpoint (from ftervit teacher)")
    p.add_argument("--checkpoint", metavar="S.pth", help="ternary student checkpoint (default: the teacher converted to ternary)")
    p.add_argument("--data", metavar="D", help="digits, fashion-mnist, cifar10, cifar100, imagefolder or imagenet (test split)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset directory (Fashion-MNIST default: the Debian package's)")
    p.add_argument("--only", metavar="LIST", help="comma-separated subset of importance,weights,fidelity,rollout "
                                                "[default: all; weights with --ftv alone]")
    p.add_argument("--images", type=positive_int, metavar="N", default=512, help="test images for importance and fidelity [512]")
    p.add_argument("--batch-size", type=positive_int, metavar="N", default=64, help="images per pass [64]")
    p.add_argument("--probes", type=positive_int, metavar="N", default=32, help="Rademacher probes of the Hessian trace [32]")
    p.add_argument("--rollout-images", type=positive_int, metavar="N", default=10,
                   help="images for the rollout maps, one per class where possible [10]")
    p.add_argument("--seed", type=int, metavar="N", default=0, help="seeds the image subset and the probes [0]")
    p.add_argument("--device", metavar="DEVICE", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--ftv", metavar="FILE", help="also count the codes stored in this .ftv file (alone: only that)")
    p.add_argument("--out", metavar="DIR", default="runs/analysis", help="output directory [runs/analysis]")
    p.add_argument("--json", action="store_true", help="print report.json instead of the tables")
    p.set_defaults(func=run)


SMALL_MODEL_PARAMS = 5_000_000


def _load(args: argparse.Namespace, only: tuple[str, ...]):
    """Test split, teacher and student (None: the analysis converts the teacher), checked in that order."""
    from ftervit.analysis.report import check_models
    from ftervit.data import build_data, model_data_config
    from ftervit.errors import FtervitError
    from ftervit.factory import create_model, create_teacher, load_weights

    missing = [f"--{k}" for k in ("model", "teacher", "data") if not getattr(args, k)]
    if missing:
        raise FtervitError(f"{' and '.join(missing)} required (or give --ftv FILE alone to count its codes)")
    splits = build_data(args.data, model_data_config(args.model), args.data_dir, train=False)
    teacher = create_teacher(args.model, args.teacher, splits.num_classes)
    check_models(teacher, None, only)  # rollout on a model without attention fails here, before conversion
    student = None
    if args.checkpoint:
        student = create_model(args.model, num_classes=splits.num_classes)
        load_weights(student, args.checkpoint, splits.num_classes, f"ternary checkpoint for {args.model}")
    return splits.test, teacher, student


def run(args: argparse.Namespace) -> int:
    from ftervit.analysis.report import ANALYSES, analyze, parse_only, prepare_out
    from ftervit.device import resolve_device
    from ftervit.errors import FtervitError

    ftv_alone = args.ftv and not (args.model or args.teacher or args.checkpoint or args.data)
    only = parse_only(args.only or ("weights" if ftv_alone else ",".join(ANALYSES)))
    if ftv_alone and only != ("weights",):
        raise FtervitError("--ftv alone gives the weights analysis only; add --model, --teacher and --data for the others")
    prepare_out(args.out)  # an unwritable --out or a missing GPU fails before the models load
    resolve_device(args.device)
    dataset, teacher, student = (None, None, None) if ftv_alone else _load(args, only)
    if teacher is not None and "OMP_NUM_THREADS" not in os.environ:
        import torch

        if sum(p.numel() for p in teacher.parameters()) < SMALL_MODEL_PARAMS:
            torch.set_num_threads(1)
    settings = {k: getattr(args, k) for k in ("model", "teacher", "checkpoint", "data", "data_dir")}
    results = analyze(teacher, student, dataset, only=only, images=args.images, batch_size=args.batch_size,
                      probes=args.probes, rollout_images=args.rollout_images, seed=args.seed, device=args.device,
                      ftv=args.ftv, out=args.out, settings=settings, progress=not args.json)
    if args.json:
        print_json(results["report"])
        return 0
    print_tables(results)
    print(f"\nwrote {', '.join(f.rpartition('/')[2] for f in results['report']['files'])} in {args.out} "
          f"({results['report']['seconds']['total']:.1f} s)")
    return 0


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def fmt(d: dict | None) -> str:
    """``{"mean", "std"}`` as ``mean +- std``."""
    return f"{d['mean']:.3f} +- {d['std']:.3f}" if d else "-"


def print_tables(results: dict) -> None:
    """The text tables of ``ftervit analyze``: each analysis beside the paper's numbers."""
    blocks = []
    if "importance" in results:
        imp = results["importance"]
        paper = imp["paper"]
        notes = {"layernorm": f"< {100 * paper['layernorm_param_share_below']:.1f}% params, "
                              f"{100 * paper['layernorm_taylor_share'][0]:.0f}-"
                              f"{100 * paper['layernorm_taylor_share'][1]:.0f}% Taylor",
                 "patch_embed": f"{100 * paper['patch_embed_param_share'][0]:.0f}-"
                                f"{100 * paper['patch_embed_param_share'][1]:.0f}% params, most important layer (DeiT-S)",
                 "head": f"{100 * paper['head_param_share'][0]:.0f}-{100 * paper['head_param_share'][1]:.0f}% params, "
                         f"< {100 * paper['head_importance_share_below']:.1f}% importance"}
        for who in ("teacher", "student"):
            r = imp[who]
            rows = [[c, v["params"], _pct(v["param_share"]), _pct(v["taylor_share"]), _pct(v["hessian_share"]),
                     f"{v['hessian_trace']:.3g} +- {v['hessian_stderr'] or 0:.2g}", notes.get(c, "")]
                    for c, v in r["components"].items() if v["params"]]
            text = (f"importance of the {who} ({r['loss']}, {imp['images']} images, {r['probes']} probes); "
                    f"most important layer: {r['most_important_layer']}\n"
                    + format_table(["component", "params", "share", "Taylor", "Hessian", "trace",
                                    "paper (DeiT)"], rows))
            if any(v["hessian_trace"] < 0 for v in r["components"].values()):
                text += ("\nsome traces are negative: the model is not at a minimum of this loss, and Hessian "
                         "shares of a signed sum are not proportions")
            blocks.append(text)
    if "weights" in results:
        w = results["weights"]
        for key, what in (("model", "the model's quantizers"), ("ftv", f"{w.get('ftv', {}).get('file')}")):
            if key not in w:
                continue
            groups = {**w[key]["components"], "overall": w[key]["overall"]}
            rows = [[c, g["numel"], _pct(g["minus"] / g["numel"]), _pct(g["zero_fraction"]),
                     _pct(g["plus"] / g["numel"]), _pct(g.get("absmax_zero_fraction"))]
                    for c, g in groups.items()]
            text = (f"ternary weights from {what} (paper: {100 * w['paper']['zero_fraction']:.0f}% zeros)\n"
                    + format_table(["component", "weights", "-1", "0", "+1", "0 with absmax"], rows))
            if key == "ftv" and "differs_from_model" in w["ftv"]:
                diff = w["ftv"]["differs_from_model"]
                text += ("\nthe file's codes equal the model's" if not diff
                         else f"\nthe file's codes differ from the model's in {len(diff)} tensors: {', '.join(diff[:5])}")
            blocks.append(text)
    if "fidelity" in results:
        f = results["fidelity"]
        p = f["paper"]
        ln = f["layernorm"]
        rows = [["patch embedding, per token", fmt(f["patch_embed"]), str(p["patch_embed_cosine"])],
                ["LayerNorm gamma (scale)", fmt(ln["gamma"]), ""],
                ["LayerNorm beta (shift)", fmt(ln["beta"]),
                 f"{p['layernorm_beta_cosine']['mean']} +- {p['layernorm_beta_cosine']['std']}"]]
        rows += [[f"after block {b['block']}, class token / patch tokens",
                  f"{fmt(b['class_token'])} / {fmt(b['patch_tokens'])}", ""] for b in f["blocks"]]
        lg = f["logits"]
        rows += [["logits, per image", fmt(lg["cosine"]), ""]]
        blocks.append(f"fidelity, teacher vs student on {f['images']} images (cosine)\n"
                      + format_table(["feature", "ours (mean +- std)", "paper"], rows)
                      + f"\ntop-1 agreement {_pct(lg['top1_agreement'])}, KL(teacher || student) {lg['kl']:.4f}, "
                        f"top-1 teacher {_pct(lg['teacher_top1'])}, student {_pct(lg['student_top1'])}")
    if "rollout" in results:
        r = results["rollout"]
        rows = [[row["index"], row["label"], row["teacher_pred"], row["student_pred"], f"{row['cosine']:.3f}",
                 f"{row['iou']:.2f}"] for row in r["images"]]
        rows.append(["mean", "", "", "", f"{r['mean_cosine']:.3f}", f"{r['mean_iou']:.2f}"])
        blocks.append(f"attention rollout, teacher vs student ({r['grid'][0]}x{r['grid'][1]} patches; IoU of the top "
                      f"{100 * r['top_fraction']:.0f}%)\n"
                      + format_table(["image", "label", "teacher", "student", "cosine", "IoU"], rows))
    print("\n\n".join(blocks))
