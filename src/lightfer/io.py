"""Image input: everything becomes RGB uint8 ``(H, W, 3)`` here, once, at the boundary.

Handles paths, bytes, PIL images and arrays; JPEG/PNG/WebP/BMP/TIFF; grayscale, palette,
RGBA/LA (composited over white), CMYK, 16-bit and float images; EXIF orientation. Failures
raise :class:`ImageReadError` naming the source and the problem, so a batch can report and
skip the file.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_PIXELS = int(os.environ.get("LIGHTFER_MAX_PIXELS", 100_000_000))  # decompression-bomb guard

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


class ImageReadError(ValueError):
    """An input could not be decoded as an image; the message names the source."""


def describe(src: ImageInput) -> str:
    """Short human-readable name of an input (a path, or its type)."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, bytes):
        return f"<{len(src)} bytes>"
    if isinstance(src, np.ndarray):
        return "<array>"
    return f"<{type(src).__name__}>"


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension we read."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def read_image(src: ImageInput, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``src`` to an RGB uint8 array ``(H, W, 3)`` (EXIF-rotated).

    Raises:
        ImageReadError: missing, empty, truncated or non-image file, or more than ``max_pixels`` pixels.
    """
    name = describe(src)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, name)
    if isinstance(src, Image.Image):
        return _pil_to_rgb(src, name, limit)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageReadError(f"{name}: no such file")
        if path.is_dir():
            raise ImageReadError(f"{name}: is a directory, not an image")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{name}: empty file (0 bytes)")
        data: bytes | Path = path
    elif isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageReadError(f"{name}: empty input (0 bytes)")
        data = bytes(src)
    else:
        raise ImageReadError(f"{name}: unsupported input type {type(src).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
            w, h = img.size
            if w * h > limit:
                raise ImageReadError(f"{name}: {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,}")
            img.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{name}: refused as a possible decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{name}: cannot decode image ({e})") from None
    return _pil_to_rgb(img, name, limit)


def _pil_to_rgb(img: Image.Image, name: str, limit: int) -> np.ndarray:
    if img.width * img.height > limit:
        raise ImageReadError(f"{name}: {img.width}x{img.height} pixels exceeds the limit of {limit:,}")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # broken EXIF must not lose the picture
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", name, e)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(img), name)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    """Any (H, W), (H, W, 1|3|4) array of uint8/uint16/int/float -> RGB uint8 (H, W, 3)."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) == 0:
        raise ImageReadError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        elif np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise ImageReadError(f"{name}: float image contains NaN or inf")
            hi = 1.0 if a.max(initial=0) <= 1.0 else 255.0
            a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif np.issubdtype(a.dtype, np.integer):
            top = np.iinfo(a.dtype).max if a.max(initial=0) > 255 else 255
            if a.dtype in (np.int32, np.uint32, np.int64, np.uint64) and a.max(initial=0) <= 65535:
                top = 65535 if a.max(initial=0) > 255 else 255
            a = np.clip(a.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            raise ImageReadError(f"{name}: unsupported pixel type {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = (a[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def list_images(paths: list[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Expand files and folders into image files (folders: sorted, image extensions only)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            out.extend(sorted(f for f in it if f.is_file() and is_image_path(f)))
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for f in out:  # the same file named twice (directly and through its folder) is analysed once
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 92) -> Path:
    """Write an RGB uint8 image ``(H, W, 3)``; the format follows the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=quality)
    else:
        img.save(path)
    return path
