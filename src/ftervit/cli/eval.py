"""``ftervit eval``: top-1/top-5 of a ternary checkpoint, the FP32 teacher's side by side."""
from __future__ import annotations

import argparse

from ftervit.cli.common import format_table, non_negative_int, positive_int, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="top-1/top-5 of a ternary checkpoint (and its FP32 teacher) on a test split",
        description="Evaluate a ternary checkpoint of MODEL on the test split of --data (ImageNet and "
                    "image folders: val/), with the FP32 --teacher beside it when given.")
    p.add_argument("--model", required=True, help="timm ViT name or ftervit preset")
    p.add_argument("--checkpoint", required=True,
                   help="ternary checkpoint (.pth from ftervit distill: last.pth, best.pth, epoch_NNN.pth; published "
                        "file); the student is rebuilt with the --quant/--scope it was trained with")
    p.add_argument("--data", required=True, help="digits, fashion-mnist, cifar10, cifar100, imagefolder or imagenet")
    p.add_argument("--data-dir", help="dataset directory (Fashion-MNIST default: the Debian package's)")
    p.add_argument("--teacher", help="FP32 teacher checkpoint of the same architecture")
    p.add_argument("--engine", metavar="FILE",
                   help="also run this .ftv file (ftervit export of the checkpoint) in the C engine and "
                        "report its top-1 and its top-1 agreement with PyTorch")
    p.add_argument("--threads", type=positive_int, default=1, help="C engine threads (with --engine) [default: 1]")
    p.add_argument("--img-size", type=positive_int, help="input resolution (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--workers", type=non_negative_int, default=0, help="data-loader worker processes")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--download", action="store_true", help="let torchvision download Fashion-MNIST/CIFAR (online)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftervit.evaluation import evaluate_checkpoints
    from ftervit.factory import student_recipe

    if args.engine:  # before the PyTorch pass: the engine runs FTerViT students only
        student_recipe(args.checkpoint, ftervit_only=True)
    result = evaluate_checkpoints(args.model, args.checkpoint, args.data, teacher=args.teacher,
                                  data_dir=args.data_dir, img_size=args.img_size, batch_size=args.batch_size,
                                  workers=args.workers, device=args.device, download=args.download)
    if args.teacher:
        result["gap_pp"] = 100 * (result["teacher"]["top1"] - result["ternary"]["top1"])
    if args.engine:
        from ftervit.evaluation import evaluate_engine

        result["engine"] = evaluate_engine(args.model, args.checkpoint, args.engine, args.data,
                                           data_dir=args.data_dir, img_size=args.img_size,
                                           batch_size=args.batch_size, threads=args.threads,
                                           download=args.download, progress=not args.json)
    if args.json:
        print_json(result)
        return 0
    engine = result.get("engine", {}).get("engine")
    rows = [[name, f"{m['top1']:.2%}", f"{m['top5']:.2%}"]
            for name, m in (("FP32 teacher", result.get("teacher")), ("ternary", result["ternary"]),
                            ("ternary, C engine", engine)) if m]
    print(f"{args.model} on {args.data} ({result['n']:,} test images)")
    print(format_table(["model", "top-1", "top-5"], rows))
    if args.teacher:
        print(f"top-1 gap: {result['gap_pp']:.2f} pp")
    if engine:
        e = result["engine"]
        print(f"C engine ({e['kernels']}, {args.threads} thread(s)): top-1 agrees with PyTorch on "
              f"{e['agreement']:.2%} of images; logits differ by {e['median_rel_diff']:.1e} relative "
              f"(median), {e['max_rel_diff']:.1e} (max)")
    return 0
