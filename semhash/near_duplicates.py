"""Near-duplicate robustness: does a lightly changed copy of an indexed image come back?

For a sample of images, each image is written as the PNG that ``semhash export-dataset``
writes (8-bit, the indexed original), and a copy is made with Pillow by each of
:data:`TRANSFORMS`; original and copies are read back through
:func:`semhash.data.decode_image` (exactly what ``semhash index`` and ``semhash query`` do:
Lanczos resize to the model's input size) and hashed.  The rate for a transformation is the
share of images whose copy's code is within Hamming distance ``radius`` of the original's
code, i.e. the copy finds the original with ``semhash query --radius 2``.

The transformations, exactly:

* ``jpeg``: re-saved as JPEG, quality 75 (Pillow's default), 4:2:0 subsampling default;
* ``resize_up``: resized to 2x (56x56 for 28x28) with bicubic interpolation, saved as PNG;
* ``resize_down``: resized to 3/4 (21x21 for 28x28) with bicubic interpolation, saved as PNG;
* ``shift``: moved 1 pixel right and 1 pixel down (the vacated row and column black, the
  far row and column cut off), saved as PNG;
* ``brightness``: brightness times a factor drawn per image in [0.92, 1.1] (seeded), PNG;
* ``resize_bright_jpeg``: resized to 2x (bicubic), the same brightness change, saved as JPEG
  quality 75: what a copy of a small image found on the web goes through (issue 22's probe).

``min_rate`` is the lowest of the first four (the figure the tables have always reported);
the last two are reported beside it.

No TensorFlow: a :class:`semhash.inference.Hasher` does the hashing.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from semhash.data import decode_image
from semhash.metrics import within_radius_rate

#: name -> (how it is described in reports, Pillow image -> (copy, file suffix, save kwargs))
TRANSFORMS: dict[str, tuple[str, Callable]] = {}


def _transform(name: str, description: str):
    def register(fn):
        TRANSFORMS[name] = (description, fn)
        return fn

    return register


@_transform("jpeg", "re-saved as JPEG quality 75")
def _jpeg(img):
    return img, ".jpg", {"quality": 75}


@_transform("resize_up", "resized to 2x (bicubic)")
def _resize_up(img):
    from PIL import Image

    return img.resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC), ".png", {}


@_transform("resize_down", "resized to 3/4 (bicubic)")
def _resize_down(img):
    from PIL import Image

    size = (max(1, round(img.width * 3 / 4)), max(1, round(img.height * 3 / 4)))
    return img.resize(size, Image.Resampling.BICUBIC), ".png", {}


@_transform("shift", "shifted 1 pixel right and 1 down")
def _shift(img):
    from PIL import Image

    moved = Image.new(img.mode, img.size)  # black
    moved.paste(img.crop((0, 0, img.width - 1, img.height - 1)), (1, 1))
    return moved, ".png", {}


def _brightness_factor(img) -> float:
    """A factor in [0.92, 1.1], the same for the same pixels (seeded by them: reproducible
    whatever order the images come in)."""
    seed = int.from_bytes(hashlib.sha256(img.tobytes()).digest()[:8], "little")
    return float(np.random.default_rng(seed).uniform(0.92, 1.1))


def _brighter(img):
    factor = _brightness_factor(img)
    return img.point(lambda v: min(255, int(round(v * factor))))


@_transform("brightness", "brightness x0.92-1.1")
def _brightness(img):
    return _brighter(img), ".png", {}


@_transform("resize_bright_jpeg", "resized 2x, brightness x0.92-1.1, JPEG q75")
def _resize_bright_jpeg(img):
    from PIL import Image

    return _brighter(img).resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC), ".jpg", {"quality": 75}


#: the transforms ``min_rate`` is taken over (the first four: the tables' "near-dup r2")
MIN_RATE_OVER = ("jpeg", "resize_up", "resize_down", "shift")


def _to_pil(image: np.ndarray):
    from PIL import Image

    array = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # as export-dataset writes it
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def near_duplicate_rates(
    hasher, images: np.ndarray, radius: int = 2, sample: int | None = 1000, seed: int = 0
) -> dict:
    """-> {"radius", "n_images", "transforms": {name: {"description", "rate", "mean_distance"}},
    "min_rate"} for a seeded sample of ``images`` (N, H, W, C) in [0, 1]."""
    from semhash.hashing import hamming

    images = np.asarray(images, dtype=np.float32)
    if sample is not None and len(images) > sample:
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), sample, replace=False))]
    shape = images.shape[1:]
    result = {"radius": int(radius), "n_images": int(len(images)), "transforms": {}}
    with tempfile.TemporaryDirectory(prefix="semhash-near-dup-") as tmp:
        tmp = Path(tmp)
        originals, copies = [], {name: [] for name in TRANSFORMS}
        for i, image in enumerate(images):
            pil = _to_pil(image)
            path = tmp / f"{i}.png"
            pil.save(path)
            originals.append(decode_image(path, shape))
            for name, (_, make) in TRANSFORMS.items():
                copy, suffix, options = make(pil)
                copy_path = tmp / f"{i}-{name}{suffix}"
                copy.save(copy_path, **options)
                copies[name].append(decode_image(copy_path, shape))
        original_codes = hasher.hash(np.stack(originals))
        for name, (description, _) in TRANSFORMS.items():
            copy_codes = hasher.hash(np.stack(copies[name]))
            result["transforms"][name] = {
                "description": description,
                "rate": within_radius_rate(original_codes, copy_codes, radius),
                "mean_distance": float(np.mean(hamming(original_codes, copy_codes))),
            }
    result["min_rate"] = min(result["transforms"][name]["rate"] for name in MIN_RATE_OVER)
    return result
