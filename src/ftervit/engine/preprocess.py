"""Image files -> the normalized float32 tensors an engine file expects.

:func:`load_image` is the one place images are decoded for the engine (``ftervit run``, the
demo): any image Pillow opens, from a path or from the bytes of a file, to the model's input.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ftervit.errors import FtervitError

# Modes whose samples do not fit 8 bits, and the largest sample of each: Pillow's own
# conversion to "L"/"RGB" clips them to 255 (a 16-bit grey image becomes nearly white).
_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": None, "F": 1.0}


def load_image(source: str | Path | bytes, input_shape: Sequence[int], mean: Sequence[float],
               std: Sequence[float], crop_pct: float = 1.0, name: str | None = None) -> np.ndarray:
    """Decode an image and apply timm's eval transform: a (C, H, W) float32 array.

    The image becomes the model's channels (1: grey, 3: RGB; alpha is dropped, as timm's
    loaders do), its samples are scaled to [0, 1] from their own range (8 bits; 16 bits for
    ``I;16``; ``I`` as 16-bit unless a value lies outside 0..65535, then the int32 range;
    ``F`` taken as intensities in [0, 1], clipped), its shorter side is resized (bicubic) to
    size / ``crop_pct``, it is center-cropped to the model's size and normalized with
    ``mean``/``std`` (the values the .ftv file stores).

    Args:
        source: a path, or the bytes of an image file.
        input_shape: the model's (C, H, W).
        name: what messages call the image (default: "image PATH", or "image bytes").

    Raises:
        FtervitError: one line naming the image: not an image, damaged, a decompression bomb
            (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels), a resize to more pixels than
            that, non-finite samples, or arguments out of range.
    """
    from PIL import Image

    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    name = name or ("image bytes" if is_bytes else f"image {source}")
    chans, height, width = (int(v) for v in input_shape)
    if chans not in (1, 3):
        raise FtervitError(f"the model takes {chans}-channel input; images are decoded as grey (1) or RGB (3)")
    if not 0.0 < crop_pct <= 1.0:
        raise FtervitError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if len(mean) != chans or len(std) != chans or not all(math.isfinite(m) for m in mean) or not all(
            math.isfinite(s) and s > 0 for s in std):
        raise FtervitError(f"mean {tuple(mean)} / std {tuple(std)}: expected {chans} finite values, std positive")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse it, as the error is
            file = io.BytesIO(bytes(source)) if is_bytes else source
            with Image.open(file) as img:
                img.load()
                pixels = _unit_range(img, chans, name)
    except FtervitError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FtervitError(f"{name}: refused as a decompression bomb ({exc})") from None
    except FileNotFoundError:
        raise FtervitError(f"cannot read {name}: no such file") from None
    except Image.UnidentifiedImageError:
        raise FtervitError(f"cannot read {name}: not an image file Pillow can decode") from None
    except Exception as exc:  # noqa: BLE001  Pillow's decoders raise many kinds on damaged data
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise FtervitError(f"cannot read {name}: {reason}") from None
    # timm resizes so that the image covers floor(size / crop_pct) on both sides, keeping its
    # aspect ratio: refuse what would be a decompression bomb of our own making
    img_w, img_h = pixels[0].size
    ratio = max(math.floor(height / crop_pct) / img_h, math.floor(width / crop_pct) / img_w)
    if img_h * ratio * img_w * ratio > Image.MAX_IMAGE_PIXELS:
        raise FtervitError(f"{name}: resizing its {img_w}x{img_h} pixels to cover {math.floor(width / crop_pct)}x"
                           f"{math.floor(height / crop_pct)} (model size {width}x{height}, crop_pct {crop_pct:g}) "
                           f"would exceed {Image.MAX_IMAGE_PIXELS:,} pixels; use a crop_pct near 1 (0.875-1)")
    from timm.data import create_transform

    transform = create_transform(input_size=(1, height, width), interpolation="bicubic", mean=(0.0,), std=(1.0,),
                                 crop_pct=crop_pct)
    planes = [transform(p).numpy().astype(np.float32)[0] for p in pixels]
    x = np.stack(planes if len(planes) == chans else planes * chans)
    m, s = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return (x - m) / s


def _unit_range(img, chans: int, name: str) -> list:
    """The image as `chans` Pillow planes whose values the transform maps to [0, 1]: 8-bit
    planes ("L"; ToTensor divides by 255) or float planes ("F", already in [0, 1])."""
    from PIL import Image

    if img.mode not in _WIDE_MODES:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # Pillow asks for it before dropping the alpha
        rgb = img.convert("L" if chans == 1 else "RGB")
        return [rgb] if chans == 1 else list(rgb.split())
    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        raise FtervitError(f"{name}: the image holds NaN or infinite values")
    top = _WIDE_MODES[img.mode]
    if img.mode == "I":
        low = values.min(initial=0.0)
        top = 65535 if low >= 0 and values.max(initial=0.0) <= 65535 else None
        if top is None:
            values = values + 2.0 ** 31
            top = 2.0 ** 32 - 1
    unit = np.clip(values / top, 0.0, 1.0).astype(np.float32)
    return [Image.fromarray(unit, mode="F")]
