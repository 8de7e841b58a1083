"""The safe image loader: every odd-but-valid image comes out RGB with the right pixels, every bad one is
rejected with its reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from animatch.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    list_image_files,
    load_image,
    load_image_bytes,
)
from animatch.errors import UserError

WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def _near(pixel, expected, tol=12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and which holds no pixel data (a bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_alpha_and_palette_transparency_are_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    rgba.save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png")
    assert out.mode == "RGB" and out.size == (4, 2)
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == BLUE
    assert _near(out.getpixel((2, 0)), (127, 127, 127), 2)

    la = Image.new("LA", (2, 1), (40, 0))
    la.putpixel((1, 0), (40, 255))
    la.save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == (40, 40, 40)

    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    for name in ("pal.png", "pal.gif"):
        pal.save(tmp_path / name, transparency=0)
        out = load_image(tmp_path / name)
        assert out.mode == "RGB" and out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == RED, name

    rgb_key = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb_key.putpixel((1, 0), RED)
    rgb_key.save(tmp_path / "key.png", transparency=(10, 20, 30))
    out = load_image(tmp_path / "key.png")
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == RED


def test_other_modes_become_rgb(tmp_path):
    cmyk = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 255, 255, 0))
    cmyk.save(tmp_path / "cmyk.tif")
    out = load_image(tmp_path / "cmyk.tif")
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == RED

    deep = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert deep.mode == "I;16"
    deep.save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), WHITE]

    Image.new("L", (1, 1), 100).save(tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png").getpixel((0, 0)) == (100, 100, 100)
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    bits.save(tmp_path / "bits.png")
    out = load_image(tmp_path / "bits.png")
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == WHITE

    frames = [Image.new("RGB", (3, 3), RED), Image.new("RGB", (3, 3), BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert load_image(tmp_path / "anim.gif").getpixel((1, 1)) == RED


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), RED)
    im.paste(BLUE, (20, 0, 40, 20))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    assert _near(out.getpixel((10, 5)), RED) and _near(out.getpixel((10, 35)), BLUE)


@pytest.fixture()
def bad_images(tmp_path):
    rng = np.random.RandomState(0)
    noise = Image.fromarray(rng.randint(0, 255, (64, 64, 3), dtype=np.uint8))
    png, jpg = io.BytesIO(), io.BytesIO()
    noise.save(png, "PNG")
    noise.save(jpg, "JPEG")
    files = {
        "zero.png": b"",
        "trunc.png": png.getvalue()[: len(png.getvalue()) // 2],
        "trunc.jpg": jpg.getvalue()[: len(jpg.getvalue()) // 2],
        "page.jpg": b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>",
        "bomb_header.png": _png_header_only(100_000, 100_000),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    return tmp_path


@pytest.mark.parametrize("name, reason", [
    ("zero.png", "zero-byte file"),
    ("trunc.png", "truncated"),
    ("trunc.jpg", "truncated"),
    ("page.jpg", "not an image: text/HTML"),
    ("missing.png", "missing file"),
])
def test_bad_images_are_rejected_with_their_reason(bad_images, name, reason):
    with pytest.raises(ImageLoadError) as info:
        load_image(bad_images / name)
    assert info.value.reason == reason
    assert info.value.path == str(bad_images / name)


def test_decompression_bombs_are_rejected_before_decoding(bad_images):
    with pytest.raises(ImageLoadError, match="decompression bomb: 10000 pixels > cap 5000"):
        load_image(bad_images / "big.png", max_pixels=5000)
    assert load_image(bad_images / "big.png", max_pixels=10_000).size == (100, 100)
    # 1e10 pixels claimed by a 60-byte file: PIL's own check fires first; still our reason
    with pytest.raises(ImageLoadError) as info:
        load_image(bad_images / "bomb_header.png")
    assert info.value.reason.startswith("decompression bomb")
    assert DEFAULT_MAX_PIXELS < 100_000 * 100_000


def test_load_image_bytes_and_listing(tmp_path):
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(buf, "PNG")
    assert load_image_bytes(buf.getvalue()).getpixel((0, 0)) == WHITE
    with pytest.raises(ImageLoadError, match="zero-byte"):
        load_image_bytes(b"")
    for rel in ("b/x.PNG", "a.jpg", "a.txt", ".hidden/y.png", "c/d/e.webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)] == [
        "a.jpg", "b/x.PNG", "c/d/e.webp"]
    assert ".png" in IMAGE_EXTENSIONS
    with pytest.raises(UserError):
        list_image_files(tmp_path / "nope")


def test_large_jpegs_decode_downscaled_and_others_are_refused_above_the_decode_cap():
    def encoded(fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (800, 600), "red").save(buf, format=fmt)
        return buf.getvalue()

    charged = []
    image = load_image_bytes(encoded("JPEG"), "a.jpg", decode_pixels=40_000, charge=charged.append)
    assert image.size == (200, 150) and charged == [30_000]  # 1/4 in the decoder: the smallest scale that fits
    assert load_image_bytes(encoded("JPEG"), "a.jpg", decode_pixels=480_000).size == (800, 600)
    with pytest.raises(ImageLoadError, match="too many pixels: 800x600"):
        load_image_bytes(encoded("PNG"), "a.png", decode_pixels=40_000)
