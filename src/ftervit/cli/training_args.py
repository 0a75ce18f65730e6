"""``ftervit teacher`` and ``ftervit distill``: options generated from TrainConfig's fields, one runner."""
from __future__ import annotations

import argparse
from pathlib import Path

from ftervit.errors import FtervitError
from ftervit.training.config import FIELDS, TrainConfig, build_config, field_type, read_yaml


def add_training_args(parser: argparse.ArgumentParser, mode: str) -> None:
    """``-c/--config`` and one ``--option`` per TrainConfig field that ``mode`` uses.

    Defaults are left out of the namespace (SUPPRESS), so that only the options actually
    given override the YAML file and the per-phase defaults.
    """
    parser.add_argument("-c", "--config", metavar="YAML", help="settings file (TrainConfig fields); options override it")
    for name, f in FIELDS.items():
        if mode not in f.metadata["modes"]:
            continue
        kind = field_type(name)
        helptext = f.metadata["help"] + (f" [default: {f.default}]" if f.default is not None and f.default is not False else "")
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=argparse.SUPPRESS, help=helptext)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, help=helptext,
                                metavar=name.upper())


def config_from_args(args: argparse.Namespace, mode: str) -> TrainConfig:
    """The resolved config: defaults < YAML < command line; ``--resume`` starts from the run's config.yaml."""
    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    from_yaml = read_yaml(args.config) if args.config else {}
    layers = [from_yaml, given, {"mode": mode}]
    base: dict = {}
    if given.get("resume", from_yaml.get("resume", False)):
        out = Path(given.get("out", from_yaml.get("out", TrainConfig.out)))
        saved = out / "config.yaml"
        if not saved.is_file():
            raise FtervitError(f"nothing to resume in {out}: no config.yaml (drop --resume to start a new run)")
        base = read_yaml(saved)
    return build_config(base, *layers)


def register_training_command(sub: argparse._SubParsersAction, mode: str, help: str, description: str) -> None:
    """Add the ``teacher`` or ``distill`` subcommand: same options (per mode), same runner."""
    p = sub.add_parser(mode, help=help, description=description)
    add_training_args(p, mode)
    p.set_defaults(func=lambda args: run_training(args, mode))


def run_training(args: argparse.Namespace, mode: str) -> int:
    """Train, then print the one-line summary that ends the command."""
    from ftervit.training import train

    cfg = config_from_args(args, mode)
    result = train(cfg)
    what = "teacher" if mode == "teacher" else f"phase {cfg.phase}"
    print(f"{what}: val top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%} (best top-1 "
          f"{result['best_top1']:.2%}) after {result['epochs']} epoch{'s' * (result['epochs'] != 1)}; "
          f"checkpoints in {result['out']}")
    return 0
