"""The ``ftervit`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func``. User errors (:class:`FtervitError`, a bad option, a file the system refuses) end as
one line on stderr and exit code 2; Ctrl-C as one line and exit code 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from ftervit.errors import FtervitError

SUBCOMMANDS = ("info", "teacher", "distill", "eval", "quickstart", "export", "inspect", "size", "run", "firmware",
               "analyze", "demo")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (the usage itself is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    except KeyboardInterrupt as exc:  # the message, when given, says what was kept
        print(f"ftervit {args.command}: interrupted" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error worth a traceback
        sys.stderr.close()
        return 0
    except OSError as exc:  # a path the system refuses (permissions, a full disk...) that no check caught
        where = f": {exc.filename}" if exc.filename else ""
        print(f"ftervit {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2

