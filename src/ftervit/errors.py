"""Exceptions that the CLI turns into a one-line message and a non-zero exit."""
from __future__ import annotations


class FtervitError(Exception):
    """Base class: a user-facing error whose message says what was wrong and how to fix it."""


class UnsupportedModelError(FtervitError):
    """The model cannot be converted to ternary (unknown architecture or layer)."""


class CheckpointError(FtervitError):
    """A checkpoint could not be read or does not match the model."""
