"""The one atomic-write helper: old file or whole new file, never a part; no temporary left behind."""
import json

import pytest
import torch

from ftervit.errors import FtervitError
from ftervit.fileio import atomic_output, atomic_save, atomic_write, atomic_write_json


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_failure_inside_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_torch_save_round_trips(tmp_path):
    atomic_save(tmp_path / "m.pth", {"w": torch.arange(4)})
    assert torch.equal(torch.load(tmp_path / "m.pth", weights_only=True)["w"], torch.arange(4))


def test_missing_or_unwritable_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FtervitError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "f", b"x")
    (tmp_path / "ro").mkdir(mode=0o500)
    if (tmp_path / "ro").stat().st_uid != 0:  # root writes anywhere
        with pytest.raises(FtervitError, match="cannot write"):
            atomic_write(tmp_path / "ro" / "f", b"x")
