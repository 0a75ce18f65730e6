"""The packed model file (.ftv): writer, reader and the layout they share (docs/format.md)."""
from __future__ import annotations

from ftervit.export.format import FormatError, Kind, ModelConfig, TensorEntry, WeightFormat
from ftervit.export.reader import FtvFile, parse, read
from ftervit.export.writer import Packed, build, export_model

write = export_model

__all__ = ["FormatError", "FtvFile", "Kind", "ModelConfig", "Packed", "TensorEntry", "WeightFormat",
           "build", "export_model", "parse", "read", "write"]
