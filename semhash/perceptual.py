"""The near-duplicate tier's code: PDQ, Meta's perceptual hash made for finding copies.

A learned *semantic* code puts look-alikes together on purpose, so it cannot tell a copy of a
photo from another photo of the same kind of scene.  The near tier uses a hash designed for
copies instead: PDQ (the ``pdqhash`` package, Meta's reference C++ implementation), 256
bits from the signs of a 16x16 DCT of the image's luminance, with a quality score (0-100)
that says how much gradient the image has.  Chosen over pHash by measurement (``python -m
benchmarks copies``, docs/BENCHMARKS.md "Copies"): equal or better recall on every edit at
>= 99% precision, and the 8 rotations/mirrors (dihedral hashes) come from one DCT.

Images are given as (H, W, 3) or (H, W, 1) uint8 arrays, already reduced
(:data:`NEAR_SIDE` square: the size :func:`semhash.data.decode_views` gives them); a code
is 32 bytes (``np.packbits`` of PDQ's 256 bits).  The indexer keeps all 8 dihedral codes of
each image (its own first); only the first is looked up.

Flat images: a blank or nearly uniform image has quality below :data:`semhash.tiers.MIN_QUALITY` and a
code that is mostly noise, so such images are reported as too flat and never matched in
the near tier (PDQ's own guidance: quality < 50 is not a reliable hash).
"""

from __future__ import annotations

import numpy as np

from semhash.errors import SemhashError

NEAR_BITS = 256
NEAR_BYTES = NEAR_BITS // 8
N_DIHEDRAL = 8
#: side of the square image the near code is computed from (PDQ reduces to 64x64 itself)
NEAR_SIDE = 256
#: the dihedral transforms in the order pdqhash returns them
DIHEDRAL_NAMES = ("original", "rotate 90", "rotate 180", "rotate 270", "flip left-right", "flip top-bottom", "transpose", "transverse")  # fmt: skip


class NearCodeError(SemhashError):
    """The near-duplicate hash cannot be computed (the pdqhash package is missing)."""


def _pdq():
    try:
        import pdqhash
    except ImportError:  # pragma: no cover - a declared dependency
        raise NearCodeError("the near-duplicate tier needs the pdqhash package: pip install pdqhash") from None
    return pdqhash


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"near codes are computed from uint8 images, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"near codes need an (H, W, 1|3) image, got shape {image.shape}")
    if image.shape[-1] == 1:  # PDQ hashes luminance: a grey image is its own luminance
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image)


def near_codes(image: np.ndarray) -> tuple[np.ndarray, int]:
    """-> ((8, 32) uint8: the PDQ codes of the image and its 7 rotations/mirrors, the image's
    own first; quality 0-100)."""
    hashes, quality = _pdq().compute_dihedral(_as_rgb(image))
    return np.packbits(np.asarray(hashes, dtype=np.uint8), axis=-1), int(quality)


def near_code(image: np.ndarray) -> tuple[np.ndarray, int]:
    """-> ((32,) uint8 PDQ code, quality 0-100)."""
    bits, quality = _pdq().compute(_as_rgb(image))
    return np.packbits(np.asarray(bits, dtype=np.uint8)), int(quality)


def near_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between 32-byte codes along the last axis (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8))
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)


def code_hex(code: np.ndarray | bytes) -> str:
    """A near code as 64 hex digits (PDQ's own text form)."""
    return bytes(np.asarray(code, np.uint8)).hex() if not isinstance(code, bytes) else code.hex()


def parse_hex(text: str) -> np.ndarray:
    """64 hex digits -> (32,) uint8; ValueError naming what is wrong otherwise."""
    value = str(text).strip().lower()
    if len(value) != 2 * NEAR_BYTES:
        raise ValueError(f"a near code is {2 * NEAR_BYTES} hex digits, got {len(value)} characters")
    try:
        return np.frombuffer(bytes.fromhex(value), dtype=np.uint8).copy()
    except ValueError:
        raise ValueError("a near code is hex digits 0-9a-f only") from None


def check_threshold(threshold: int) -> int:
    threshold = int(threshold)
    if not 0 <= threshold <= NEAR_BITS // 2:
        raise ValueError(f"the near threshold is 0..{NEAR_BITS // 2} of {NEAR_BITS} bits, got {threshold}")
    return threshold
