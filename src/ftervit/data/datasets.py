"""Dataset builders: scikit-learn digits, Fashion-MNIST, CIFAR-10/100, image folders, ImageNet."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets as tvd

from ftervit.data.transforms import CIFAR_MEAN_STD, folder_transform, small_image_transform
from ftervit.errors import FtervitError
from ftervit.fileio import atomic_output

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "imagenet")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DIGITS_TEST_FRACTION = 0.2


@dataclass
class DataSplits:
    """Train and test datasets (ImageNet's val/ is its test split) and the class count."""

    train: Dataset | None  # None when built for evaluation only
    test: Dataset
    num_classes: int


class TensorImageDataset(Dataset):
    """Images already in a float tensor (N, C, H, W) with integer labels, plus a transform."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform: Callable | None = None) -> None:
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.targets[index])


def cache_dir() -> Path:
    """Where derived data files go: ``$FTERVIT_CACHE`` or ``~/.cache/ftervit``."""
    return Path(os.environ.get("FTERVIT_CACHE", Path.home() / ".cache" / "ftervit"))


def _digits(train_tf: Callable, test_tf: Callable) -> DataSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # grey levels 0..16
    targets = torch.tensor(bunch.target, dtype=torch.int64)
    # Fixed stratified split: the same 1437/360 images on every machine and run.
    train_idx, test_idx = train_test_split(torch.arange(len(targets)).numpy(), test_size=DIGITS_TEST_FRACTION,
                                           stratify=targets.numpy(), random_state=0)
    return DataSplits(TensorImageDataset(images[train_idx], targets[train_idx], train_tf),
                      TensorImageDataset(images[test_idx], targets[test_idx], test_tf), num_classes=10)


def _fashion_mnist_root(data_dir: Path, download: bool) -> Path:
    """A root that torchvision's FashionMNIST reads (``<root>/FashionMNIST/raw/<files>``).

    Accepts that layout, or the four IDX files (gzipped or not) directly in ``data_dir`` as
    the Debian package installs them; gzipped files are decompressed once into the cache.
    """
    if all((data_dir / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_MNIST_FILES) or download:
        return data_dir
    found = {f: next((p for p in (data_dir / f, data_dir / f"{f}.gz") if p.is_file()), None)
             for f in FASHION_MNIST_FILES}
    missing = [f for f, p in found.items() if p is None]
    if missing:
        raise FtervitError(
            f"Fashion-MNIST not found in {data_dir} (missing {', '.join(missing)}[.gz]); install the Debian "
            f"package dataset-fashion-mnist (files in {FASHION_MNIST_DIR}), pass --data-dir with the IDX files, "
            "or add --download when online")
    key = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]
    root = cache_dir() / "fashion-mnist" / key
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in found.items():
        if (raw / name).is_file():
            continue
        if src.suffix != ".gz":
            with contextlib.suppress(FileExistsError):  # another DDP process linked it first
                (raw / name).symlink_to(src.resolve())
            continue
        # Decompress beside the target, then rename: concurrent ranks never see half a file.
        with atomic_output(raw / name) as tmp, gzip.open(src, "rb") as packed, open(tmp, "wb") as out:
            shutil.copyfileobj(packed, out)
    return root


def _check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FtervitError(f"{what} directory not found: {path}; pass --data-dir with the dataset")
    return path


def build_data(
    name: str,
    data_cfg: dict[str, Any],
    data_dir: str | Path | None = None,
    augment: str = "default",
    re_prob: float = 0.0,
    download: bool = False,
    train: bool = True,
) -> DataSplits:
    """Build the train and test splits of dataset ``name`` for a model with ``data_cfg``.

    Args:
        name: one of :data:`DATASETS`.
        data_cfg: the model's timm data config (``timm.data.resolve_data_config(model=m)``).
        data_dir: where the data lies: Fashion-MNIST IDX files (default: the Debian package's
            directory), CIFAR's torchvision layout, or ``train/`` and ``val/`` class folders.
        augment: ``"default"`` (augmentation suited to the data), ``"flip"`` (horizontal flips
            only; small images) or ``"none"``.
        re_prob: random-erasing probability on training images.
        download: let torchvision download Fashion-MNIST or CIFAR into ``data_dir``.
        train: also build the training split; evaluation passes False, so that an image
            folder needs only ``val/`` and nothing else is read.

    Raises:
        FtervitError: unknown dataset or missing files, with the way to fix it.
    """
    if name not in DATASETS:
        raise FtervitError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    data_dir = Path(data_dir).expanduser() if data_dir else None
    if name.startswith("cifar"):
        data_cfg = {**data_cfg, "mean": CIFAR_MEAN_STD[0], "std": CIFAR_MEAN_STD[1]}
    if name in ("imagefolder", "imagenet"):
        if augment == "flip":
            raise FtervitError(f"--augment flip is for digits, fashion-mnist and cifar; {name} takes default or none")
        train_tf = folder_transform(data_cfg, True, augment, re_prob)
        test_tf = folder_transform(data_cfg, False)
    else:
        train_tf = small_image_transform(name, data_cfg, True, augment, re_prob)
        test_tf = small_image_transform(name, data_cfg, False)

    if name == "digits":
        splits = _digits(train_tf, test_tf)
        return splits if train else DataSplits(None, splits.test, splits.num_classes)
    if name == "fashion-mnist":
        if data_dir is None:  # the Debian package's files, or a cache folder to download into
            data_dir = FASHION_MNIST_DIR if FASHION_MNIST_DIR.is_dir() or not download else cache_dir() / "downloads"
        root = _fashion_mnist_root(data_dir, download)
        return DataSplits(tvd.FashionMNIST(root, train=True, transform=train_tf, download=download) if train else None,
                          tvd.FashionMNIST(root, train=False, transform=test_tf, download=download), 10)
    if data_dir is None:
        raise FtervitError(f"dataset {name} needs --data-dir")
    if name.startswith("cifar"):
        cls, folder = (tvd.CIFAR10, "cifar-10-batches-py") if name == "cifar10" else (tvd.CIFAR100, "cifar-100-python")
        if not download and not (data_dir / folder).is_dir():
            raise FtervitError(f"{name} not found: {data_dir / folder} is missing (torchvision layout); "
                               "pass the directory that holds it, or add --download when online")
        return DataSplits(cls(str(data_dir), train=True, transform=train_tf, download=download) if train else None,
                          cls(str(data_dir), train=False, transform=test_tf, download=download),
                          10 if name == "cifar10" else 100)
    train_set = None
    if train:
        train_set = tvd.ImageFolder(str(_check_dir(data_dir / "train", "training")), transform=train_tf)
    test = tvd.ImageFolder(str(_check_dir(data_dir / "val", "validation")), transform=test_tf)
    if train_set is not None and train_set.classes != test.classes:
        raise FtervitError(f"{data_dir}: train/ has {len(train_set.classes)} classes and val/ {len(test.classes)}; "
                           "both need the same class folders")
    if name == "imagenet" and len(test.classes) != 1000:
        raise FtervitError(f"imagenet expects 1000 class folders in {data_dir / 'val'}, found "
                           f"{len(test.classes)}; use --data imagefolder for other class counts")
    return DataSplits(train_set, test, len(test.classes))


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
    """In-order loader over this process's shard (every ``world_size``-th image, no padding)."""
    shard = dataset if world_size == 1 else Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
