"""The edits a copy of a photo goes through, as one list: the copies benchmark
(``python -m benchmarks copies``) and ``semhash duplicates --calibrate`` make their copies
with exactly these.

Each edit takes an RGB Pillow image and returns ``(edited image, file format, save options)``:
the copy is what a file saved that way decodes to.
"""

from __future__ import annotations

import io
from typing import Callable

#: name -> (description, edit)
EDITS: dict[str, tuple[str, Callable]] = {}


def _edit(name: str, description: str):
    def register(fn):
        EDITS[name] = (description, fn)
        return fn

    return register


@_edit("jpeg_q50", "re-saved as JPEG quality 50")
def _jpeg(img):
    return img, "JPEG", {"quality": 50}


@_edit("resize_half", "resized to half (bicubic)")
def _resize_half(img):
    from PIL import Image

    return img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.BICUBIC), "PNG", {}


@_edit("gamma", "gamma 0.7 (brighter)")
def _gamma(img):
    from PIL import Image

    return Image.eval(img, lambda v: int(255 * (v / 255) ** 0.7)), "PNG", {}


@_edit("crop_5pct", "5% cut off the top and left")
def _crop(img):
    d = max(1, round(img.width * 0.05))
    return img.crop((d, d, img.width, img.height)), "PNG", {}


@_edit("rotate_4deg", "rotated 4 degrees (corners black)")
def _rotate(img):
    from PIL import Image

    return img.rotate(4, resample=Image.Resampling.BICUBIC), "PNG", {}


@_edit("flip", "mirrored left-right")
def _flip(img):
    from PIL import ImageOps

    return ImageOps.mirror(img), "PNG", {}


@_edit("pad_10pct", "a black border, 5% of the width on every side")
def _pad(img):
    from PIL import ImageOps

    return ImageOps.expand(img, border=max(1, round(img.width * 0.05)), fill=(0, 0, 0)), "PNG", {}


@_edit("overlay", "a white box and a line of red text drawn over it")
def _overlay(img):
    from PIL import ImageDraw

    img = img.copy()
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle((w * 0.6, h * 0.75, w * 0.95, h * 0.92), fill=(255, 255, 255))
    draw.text((w * 0.05, h * 0.05), "(c) semhash", fill=(255, 0, 0))
    return img, "PNG", {}


@_edit("blur", "Gaussian blur, radius 1.5")
def _blur(img):
    from PIL import ImageFilter

    return img.filter(ImageFilter.GaussianBlur(1.5)), "PNG", {}


def edited_bytes(img, name: str) -> bytes:
    """The file an edit makes of ``img`` (an RGB Pillow image), as bytes."""
    _, edit = EDITS[name]
    copy, fmt, options = edit(img.convert("RGB"))
    buffer = io.BytesIO()
    copy.save(buffer, fmt, **options)
    return buffer.getvalue()
