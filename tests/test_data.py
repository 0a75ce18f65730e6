"""Datasets and transforms: digits split, Fashion-MNIST IDX files, errors, model-driven normalization."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from ftervit.data import build_data, model_data_config
from ftervit.errors import FtervitError


def test_digits_fixed_stratified_split():
    a = build_data("digits", model_data_config("ftervit_digits"), augment="none")
    b = build_data("digits", model_data_config("ftervit_digits"), augment="none")
    assert (len(a.train), len(a.test), a.num_classes) == (1437, 360, 10)
    assert torch.equal(a.test.targets, b.test.targets)
    counts = torch.bincount(a.test.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 20% of each class
    image, label = a.test[0]
    assert image.shape == (1, 8, 8) and image.min() >= -1 and image.max() <= 1  # mean = std = 0.5


def _write_idx(path, tensor: torch.Tensor) -> None:
    dims = tensor.shape
    header = struct.pack(">I", 0x0800 + len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + tensor.to(torch.uint8).numpy().tobytes())


@pytest.fixture(params=[".gz", ""])
def fake_fashion(request, tmp_path, monkeypatch):
    """IDX files laid out flat, gzipped as the Debian package installs them, or not."""
    monkeypatch.setenv("FTERVIT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "fmnist"
    root.mkdir()
    for split, n in (("train", 20), ("t10k", 10)):
        _write_idx(root / f"{split}-images-idx3-ubyte{request.param}", torch.randint(0, 256, (n, 28, 28)))
        _write_idx(root / f"{split}-labels-idx1-ubyte{request.param}", torch.arange(n) % 10)
    return root


def test_fashion_mnist_from_gzipped_idx(fake_fashion):
    data = build_data("fashion-mnist", model_data_config("ftervit_fashion_mnist"), fake_fashion)
    assert (len(data.train), len(data.test), data.num_classes) == (20, 10, 10)
    image, label = data.test[3]
    assert image.shape == (1, 28, 28) and label == 3


def test_grey_data_fits_an_rgb_model(fake_fashion):
    data = build_data("fashion-mnist", model_data_config("deit_tiny_patch16_224", img_size=32), fake_fashion)
    assert data.train[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("name, data_dir, message", [
    ("mnist", None, "unknown dataset"),
    ("fashion-mnist", "/nonexistent", "Fashion-MNIST not found"),
    ("cifar10", "/nonexistent", "cifar10 not found"),
    ("imagefolder", "/nonexistent", "training directory not found"),
    ("imagefolder", None, "needs --data-dir"),
])
def test_missing_data_is_a_clear_error(name, data_dir, message):
    with pytest.raises(FtervitError, match=message):
        build_data(name, model_data_config("deit_tiny_patch16_224"), data_dir)


def test_imagefolder_uses_timm_eval_transform(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / split / cls / "x.png")
    data = build_data("imagefolder", model_data_config("deit_tiny_patch16_224", img_size=32), tmp_path)
    assert data.num_classes == 2 and data.test[0][0].shape == (3, 32, 32)


def test_evaluation_needs_only_val(tmp_path):
    """ImageNet users often hold only val/: evaluation builds the test split alone."""
    from PIL import Image

    for cls in ("a", "b", "c"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "val" / cls / "x.png")
    cfg = model_data_config("deit_tiny_patch16_224", img_size=32)
    data = build_data("imagefolder", cfg, tmp_path, train=False)
    assert data.train is None and data.num_classes == 3 and len(data.test) == 3
    with pytest.raises(FtervitError, match="training directory not found"):
        build_data("imagefolder", cfg, tmp_path)  # training still needs train/
    with pytest.raises(FtervitError, match="1000 class folders in .*val"):
        build_data("imagenet", cfg, tmp_path, train=False)


def test_flip_augmentation_keeps_the_patch_grid(fake_fashion):
    """--augment flip: each training image is itself or its mirror, never shifted."""
    data = build_data("fashion-mnist", model_data_config("ftervit_fashion_mnist"), fake_fashion, augment="flip")
    plain = build_data("fashion-mnist", model_data_config("ftervit_fashion_mnist"), fake_fashion, augment="none")
    torch.manual_seed(0)
    seen = set()
    for i in range(len(data.train)):
        for _ in range(4):
            image, ref = data.train[i][0], plain.train[i][0]
            mirrored = torch.equal(image, ref.flip(-1))
            assert torch.equal(image, ref) or mirrored
            seen.add(mirrored)
    assert seen == {True, False}
    with pytest.raises(FtervitError, match="--augment flip is for digits, fashion-mnist and cifar"):
        build_data("imagefolder", model_data_config("ftervit_digits"), fake_fashion, augment="flip")


def test_fashion_mnist_benchmark_without_the_dataset_is_one_line(tmp_path):
    """Finding 7: benchmarks/fashion_mnist.py printed a traceback when the dataset was missing."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "fashion_mnist.py"), "--data-dir",
                           str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--results",
                           str(tmp_path / "r.json"), "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fashion_mnist.py: error: Fashion-MNIST not found") and proc.stderr.count("\n") == 1
