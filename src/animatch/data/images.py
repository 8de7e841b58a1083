"""The one safe image loader of animatch: every module that opens a dataset image goes through here.

`load_image` returns an RGB image whatever the file holds: alpha (RGBA, LA, palette or RGB/L with a
transparent colour) is composited on white, the EXIF orientation is applied, CMYK / 16-bit / 32-bit /
float / grayscale / 1-bit are converted (high bit depths rescaled to 8 bits), and an animation gives its
first frame. A file that cannot be a usable image raises `ImageLoadError` with a short reason ("missing
file", "zero-byte file", "not an image", "truncated", "decompression bomb: ...", "corrupt image: ...");
callers count and skip those. The pixel cap is checked from the header, before any pixel is decoded;
`load_image_bytes` can also decode large JPEGs downscaled and charge a per-request pixel budget (serve).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from animatch.errors import UserError

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default cap (a 0.25 GiB RGBA image)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_TEXT_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"{", b"[")


class ImageLoadError(Exception):
    """An image that cannot be used; `.reason` is short and stable enough to count by (text before ':')."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_size: tuple[int, int] | None = None) -> Image.Image:
    """The image at `path` as RGB (see the module doc); ImageLoadError when it is unusable. With `draft_size`
    (width, height), a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that still covers it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageLoadError(path, "missing file") from None
    except OSError as e:
        raise ImageLoadError(path, f"unreadable file: {e.strerror or e}") from None
    except ValueError:  # the OS cannot take the name at all (a NUL byte)
        raise ImageLoadError(path, "unsafe file_name: holds a control character") from None
    if not path.is_file():
        raise ImageLoadError(path, "not a file")
    if size == 0:
        raise ImageLoadError(path, "zero-byte file")
    with open(path, "rb") as f:
        return _decode(f, path, max_pixels, draft_size=draft_size)


def load_image_bytes(data: bytes, name: str | os.PathLike = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS,
                     *, decode_pixels: int | None = None,
                     charge: Callable[[int], None] | None = None) -> Image.Image:
    """Like `load_image`, from the file's bytes (e.g. already read to hash them); `name` is for errors.

    For untrusted uploads: with `decode_pixels`, an image above that many pixels is decoded downscaled
    where the format allows (JPEG: by 2, 4 or 8 in the decoder itself) and refused ("too many pixels")
    where it does not; `charge` is called with the pixel count about to be decoded and may raise to
    refuse it (a per-request budget)."""
    if not data:
        raise ImageLoadError(name, "zero-byte file")
    return _decode(io.BytesIO(data), name, max_pixels, decode_pixels, charge)


def _shrink_on_decode(im: Image.Image, name: str | os.PathLike, decode_pixels: int) -> None:
    """Make `im` decode to at most `decode_pixels` pixels (JPEG draft mode), or refuse it."""
    pixels = im.width * im.height
    if pixels <= decode_pixels:
        return
    if im.format == "JPEG":
        scale = 2 ** min(3, math.ceil(math.log2(math.sqrt(pixels / decode_pixels))))
        im.draft(im.mode, (math.ceil(im.width / scale), math.ceil(im.height / scale)))
    if im.width * im.height > decode_pixels:
        raise ImageLoadError(name, f"too many pixels: {im.width}x{im.height} > cap {decode_pixels} (only JPEG "
                                   "is downscaled while decoding)")


def _decode(fp: BinaryIO, name: str | os.PathLike, max_pixels: int, decode_pixels: int | None = None,
            charge: Callable[[int], None] | None = None,
            draft_size: tuple[int, int] | None = None) -> Image.Image:
    head = fp.read(64)
    fp.seek(0)
    try:
        # PIL's own bomb check uses its global cap; make it an error here and apply our cap ourselves.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                pixels = im.width * im.height
                if pixels > max_pixels:
                    raise ImageLoadError(name, f"decompression bomb: {pixels} pixels > cap {max_pixels}")
                im.seek(0)
                if draft_size and im.format == "JPEG":
                    im.draft(im.mode, draft_size)
                if decode_pixels is not None:
                    _shrink_on_decode(im, name, decode_pixels)
                if charge is not None:
                    charge(im.width * im.height)
                im.load()
                return _to_rgb(_exif_transposed(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(name, f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        kind = ": text/HTML" if head.lstrip().lower().startswith(_TEXT_STARTS) else ""
        raise ImageLoadError(name, f"not an image{kind}") from None
    except OSError as e:
        if "truncated" in str(e).lower():
            raise ImageLoadError(name, "truncated") from None
        raise ImageLoadError(name, f"corrupt image: {e}") from None
    except EOFError:
        raise ImageLoadError(name, "truncated") from None
    except (SyntaxError, ValueError, MemoryError, TypeError) as e:
        raise ImageLoadError(name, f"corrupt image: {e or type(e).__name__}") from None


def _exif_transposed(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _HIGH_DEPTH_MODES:
        im = _to_8bit(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer and float grayscale to 8-bit L, rescaled (PIL's convert would clip at 255)."""
    arr = np.asarray(im)
    if im.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        # floats in [0, 1] are normalised intensities; anything else is stretched to its own range
        scale = 255.0 if lo >= 0.0 and hi <= 1.0 else 255.0 / max(hi - lo, 1e-12)
        arr = (arr - (0.0 if scale == 255.0 else lo)) * scale
    else:
        arr = arr.astype(np.float64) / 257.0  # 0..65535 -> 0..255; PNG/TIFF 16-bit samples
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (recursive, by extension, hidden entries skipped), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))
