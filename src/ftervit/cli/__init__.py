"""The ``ftervit`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func``. User errors (:class:`FtervitError`) end as one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ftervit.errors import FtervitError

SUBCOMMANDS = ("info", "teacher", "distill", "eval", "quickstart", "export", "inspect", "size", "run", "firmware")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftervit", description="Fully ternary Vision Transformers: convert, train, export, run.")
    from ftervit import __version__

    parser.add_argument("--version", action="version", version=f"ftervit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"ftervit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FtervitError as exc:
        print(f"ftervit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ftervit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error worth a traceback
        sys.stderr.close()
        return 0

