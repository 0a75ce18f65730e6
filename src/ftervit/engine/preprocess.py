"""Image files -> the normalized float32 tensors an engine file expects."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from ftervit.errors import FtervitError


def load_image(path: str | Path | BinaryIO, input_shape: tuple[int, int, int], mean, std,
               crop_pct: float = 1.0, name: str | None = None) -> np.ndarray:
    """Decode ``path`` with Pillow and apply timm's eval transform: a (C, H, W) float32 array.

    The image is converted to the model's channel count, its shorter side resized (bicubic)
    to ``size / crop_pct``, center-cropped to the model's size and normalized with
    ``mean``/``std`` (the values stored in the .ftv file). ``path`` may be a binary file
    object (an upload: ``io.BytesIO(data)``), called ``name`` in messages.

    Raises:
        FtervitError: not an image, a damaged one, or more pixels than Pillow's
            decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``), checked before decoding.
    """
    from PIL import Image, UnidentifiedImageError
    from timm.data import create_transform

    if not 0.0 < crop_pct <= 1.0:
        raise FtervitError(f"crop_pct must be in (0, 1], got {crop_pct}")
    name = name or f"image {path}"
    try:
        with Image.open(path) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise FtervitError(f"{name} is {img.width}x{img.height} pixels, more than the {limit:,} "
                                   "this reads: scale it down")
            img = img.convert("L" if input_shape[0] == 1 else "RGB")
    except UnidentifiedImageError:
        raise FtervitError(f"cannot read {name}: not an image in a format Pillow reads (PNG, JPEG, BMP, ...)") from None
    except (OSError, Image.DecompressionBombError, ValueError, EOFError) as exc:
        raise FtervitError(f"cannot read {name}: {exc}") from None
    transform = create_transform(input_size=tuple(input_shape), interpolation="bicubic",
                                 mean=tuple(mean), std=tuple(std), crop_pct=crop_pct)
    return transform(img).numpy().astype(np.float32)
