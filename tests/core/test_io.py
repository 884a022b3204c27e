"""Image decoding: formats, modes, EXIF, and bad inputs with clear errors."""
import io

import numpy as np
import pytest
from PIL import Image

from lightfer.io import ImageReadError, list_images, read_image


@pytest.fixture()
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "webp"])
def test_lossless_formats_roundtrip(tmp_path, rgb, ext):
    p = tmp_path / f"x.{ext}"
    Image.fromarray(rgb).save(p, lossless=True) if ext == "webp" else Image.fromarray(rgb).save(p)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_and_bytes_and_pil(tmp_path, rgb):
    p = tmp_path / "x.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    a = read_image(p)
    assert a.shape == (30, 40, 3)
    np.testing.assert_array_equal(read_image(p.read_bytes()), a)
    np.testing.assert_array_equal(read_image(Image.open(p)), a)


def test_grayscale_rgba_palette(tmp_path):
    g = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    out = read_image(Image.fromarray(g))
    assert out.shape == (6, 8, 3) and (out[..., 0] == g).all() and (out[..., 2] == g).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom transparent -> white
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    out = read_image(p)
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[3, 3]) == (255, 255, 255)
    pal = Image.fromarray(np.full((5, 5, 3), 77, np.uint8)).convert("P")
    assert read_image(pal).shape == (5, 5, 3)


def test_16bit_png_scaled(tmp_path):
    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(g16).save(p)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[7, 7, 0] == round(63000 / 65535 * 255) and out[0, 0, 0] == 0


def test_16bit_rgb_array():
    a = np.full((3, 3, 3), 65535, np.uint16)
    assert (read_image(a) == 255).all()


def test_exif_rotation(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "r.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=95)
    out = read_image(p)
    assert out.shape == (40, 20, 3)  # displayed upright: portrait
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # left half became the top half


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg.*empty"):
        read_image(p)


def test_truncated_file(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(np.tile(rgb, (10, 10, 1))).save(buf, format="JPEG")
    p = tmp_path / "trunc.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ImageReadError, match="trunc.jpg"):
        read_image(p)


def test_non_image_and_missing(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, not a picture")
    with pytest.raises(ImageReadError, match="notes.png.*not an image"):
        read_image(p)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("L", (12000, 10000)).save(p)  # 120 Mpx, compresses to a few hundred KB
    assert p.stat().st_size < 2_000_000
    with pytest.raises(ImageReadError, match=r"bomb.png.*(exceeds|decompression bomb)"):
        read_image(p)
    with pytest.raises(ImageReadError, match="exceeds"):
        read_image(tmp_path / "bomb.png", max_pixels=1000)


def test_bad_arrays():
    with pytest.raises(ImageReadError):
        read_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageReadError):
        read_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(np.full((2, 2), np.nan))


def test_list_images_dedupes_and_filters(tmp_path, rgb):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "sub/b.PNG", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    files = list_images([tmp_path, tmp_path / "a.jpg"])
    assert [f.name for f in files] == ["a.jpg", "b.PNG"]
