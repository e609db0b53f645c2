"""decode_image on what is not an image file, on decompression bombs, and on large images
(issue 9, item 8).  The memory saved by decoding large images reduced is measured, not
tested: docs/BENCHMARKS.md, `python -m benchmarks decode`."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from semhash.data import decode_image
from semhash.errors import ImageError, SemhashWarning


def _one_line_error(path, shape=(8, 8, 1)) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(path, shape)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_a_folder_is_called_a_folder(tmp_path):
    folder = tmp_path / "looks_like.png"
    folder.mkdir()
    message = _one_line_error(folder)
    assert "is a folder" in message and "corrupt" not in message


def test_a_symlink_loop_is_called_a_symlink_loop(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    os.symlink(b, a)
    os.symlink(a, b)
    message = _one_line_error(a)
    assert "symlink loop" in message and "corrupt" not in message


def test_a_broken_symlink_names_its_target(tmp_path):
    link = tmp_path / "gone.png"
    os.symlink(tmp_path / "deleted.png", link)
    message = _one_line_error(link)
    assert "broken symlink" in message and "deleted.png" in message


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    message = _one_line_error(fifo)  # opening a FIFO for reading would wait for a writer forever
    assert "not a regular file" in message


def test_decompression_bomb_warning_becomes_one_semhash_warning_naming_the_file(tmp_path, png_writer, monkeypatch):
    from PIL import Image

    path = png_writer(tmp_path / "big.png", np.full((40, 40), 0.5, dtype=np.float32))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: over the limit, under twice it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = decode_image(path, (8, 8, 1))
    assert arr.shape == (8, 8, 1)
    assert [w.category for w in caught] == [SemhashWarning], [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert message.startswith(str(path)) and "\n" not in message
    assert "40x40" in message


def test_twice_the_bomb_limit_is_still_an_error(tmp_path, png_writer, monkeypatch):
    from PIL import Image

    path = png_writer(tmp_path / "bomb.png", np.zeros((40, 40), dtype=np.float32))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    message = _one_line_error(path)
    assert "too large" in message


def _reference(path, shape):
    """The straightforward full-size path: load, convert, one Lanczos resize."""
    from PIL import Image, ImageOps

    h, w, c = shape
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("L" if c == 1 else "RGB")
        img = img.resize((w, h), Image.Resampling.LANCZOS)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if c == 1 else arr


def _smooth_picture(height, width):
    y, x = np.mgrid[0:height, 0:width]
    r = np.sin(x / width * 7.0) * 0.5 + 0.5
    g = np.cos(y / height * 5.0) * 0.5 + 0.5
    b = ((x // 97 + y // 89) % 2).astype(np.float64) * 0.8
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


@pytest.mark.parametrize("suffix,mode", [(".png", "RGB"), (".png", "RGBA"), (".jpg", "RGB"), (".png", "L")])
def test_large_images_decode_reduced_like_the_full_size_path(tmp_path, suffix, mode):
    from PIL import Image

    pixels = _smooth_picture(1200, 1600)
    img = Image.fromarray(pixels, "RGB")
    if mode == "RGBA":
        img.putalpha(255)
    elif mode == "L":
        img = img.convert("L")
    path = tmp_path / f"large-{mode}{suffix}"
    img.save(path, quality=95) if suffix == ".jpg" else img.save(path)
    for shape in [(28, 28, 1), (32, 32, 3), (8, 20, 1)]:
        got = decode_image(path, shape)
        want = _reference(path, shape)
        assert got.shape == tuple(shape) and got.dtype == np.float32
        assert np.abs(got - want).mean() < 0.005, (shape, np.abs(got - want).mean())
        assert np.abs(got - want).max() < 0.03, (shape, np.abs(got - want).max())


def test_large_sixteen_bit_and_palette_images_keep_their_values(tmp_path):
    from PIL import Image

    ramp = np.tile(np.linspace(0, 65535, 1000), (600, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    arr = decode_image(tmp_path / "deep.png", (4, 10, 1))[..., 0]
    assert arr[:, 0].max() < 0.06 and arr[:, -1].min() > 0.94
    palette = Image.fromarray(_smooth_picture(900, 700)).convert("P")
    palette.save(tmp_path / "palette.png")
    got = decode_image(tmp_path / "palette.png", (16, 16, 3))
    want = _reference(tmp_path / "palette.png", (16, 16, 3))
    assert np.abs(got - want).mean() < 0.02
