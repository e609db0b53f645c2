"""The file formats a photo library holds beyond Pillow's own: HEIC/HEIF (``pillow-heif``),
AVIF (Pillow itself since 11.3), RAW camera files (``rawpy``: the embedded preview JPEG when
there is one, else a half-size demosaic).  HEIF and RAW come with the optional ``[photos]``
extra; a file that needs a missing one is an :class:`~semhash.errors.ImageError` naming the
file and the ``pip install`` that fixes it.  Video files are not images: they are counted
and skipped by the folder walk (:data:`VIDEO_EXTENSIONS`).

One import site per optional package (``import semhash`` imports neither).
"""

from __future__ import annotations

import io
from pathlib import Path

from semhash.errors import ImageError

PILLOW_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
AVIF_EXTENSIONS = frozenset({".avif"})
#: camera RAW files LibRaw reads (Adobe DNG, Canon, Nikon, Sony, Fujifilm, Olympus, Panasonic,
#: Pentax, Samsung, Leica, Hasselblad, Phase One, Sigma, Minolta, Kodak)
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
                            ".pef", ".srw", ".rwl", ".3fr", ".fff", ".iiq", ".x3f", ".mrw", ".kdc", ".dcr", ".erf", ".mef",
                            ".mos"})  # fmt: skip
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".3gp", ".mts", ".m2ts", ".webm", ".wmv", ".mpg", ".mpeg"})
IMAGE_EXTENSIONS = PILLOW_EXTENSIONS | HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS
#: what a decision prefers as "the original" (higher first): RAW, then HEIF/AVIF, then the rest
FORMAT_RANK = {**{e: 3 for e in RAW_EXTENSIONS}, **{e: 2 for e in HEIF_EXTENSIONS | AVIF_EXTENSIONS}}
EXTRA = "pip install 'semhash[photos]'"
#: LibRaw's ``flip`` -> the EXIF orientation that undoes it
_RAW_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}

#: formats libvips decodes faster than Pillow: WebP reduced while decoding (libwebp's scaled
#: decode), PNG through libspng.  Large ones go through pyvips when it is installed (the
#: ``[photos]`` extra); everything else, and any file libvips refuses, through Pillow.
VIPS_FORMATS = frozenset({"PNG", "WEBP"})
VIPS_MIN_PIXELS = 1 << 20  # below a megapixel Pillow is as fast, and one decoder is simpler
_VIPS_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

_heif_registered: bool | None = None
_vips = None  # the pyvips module once imported; False when it is not there


def heif_available() -> bool:
    """Whether HEIC/HEIF files can be decoded (pillow-heif installed and registered with
    Pillow; registered once)."""
    global _heif_registered
    if _heif_registered is None:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            _heif_registered = False
        else:
            register_heif_opener()
            _heif_registered = True
    return _heif_registered


def avif_available() -> bool:
    """Whether this Pillow decodes AVIF (built in since Pillow 11.3 when libavif is there)."""
    from PIL import features

    try:
        return bool(features.check("avif"))
    except ValueError:  # a Pillow that does not know the feature at all
        return False


def raw_available() -> bool:
    from importlib.util import find_spec

    return find_spec("rawpy") is not None


def vips():
    """pyvips, when it is installed and its library loads; else None (imported once)."""
    global _vips
    if _vips is None:
        try:
            import pyvips
        except (ImportError, OSError):  # not installed, or libvips missing
            _vips = False
        else:
            _vips = pyvips
    return _vips or None


def vips_reduced(source: "bytes | Path", size: tuple[int, int], side: int):
    """A large PNG or WebP of ``size`` (width, height) decoded by libvips, reduced while
    decoding as far as it can with both sides staying >= ``side``, not rotated: -> a Pillow
    image (L, LA, RGB or RGBA, 8 bits), or None where pyvips is not installed, the image is
    small, or libvips cannot read it cleanly (the caller decodes it with Pillow, which words
    the error)."""
    pyvips = vips()
    width, height = size
    if pyvips is None or width * height < VIPS_MIN_PIXELS:
        return None
    import math

    import numpy as np
    from PIL import Image

    scale = min(1.0, max(side / width, side / height))
    box = (max(side, math.ceil(width * scale)), max(side, math.ceil(height * scale)))
    options = {"height": box[1], "size": "down", "no_rotate": True, "option_string": "fail_on=warning"}
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            out = pyvips.Image.thumbnail_buffer(bytes(source), box[0], **options)
        else:
            out = pyvips.Image.thumbnail(str(source), box[0], **options)
        if out.format != "uchar":
            out = out.cast("uchar", shift=out.format in ("ushort", "short"))
        if out.bands not in _VIPS_MODES:
            return None
        pixels = np.ndarray(buffer=out.write_to_memory(), dtype=np.uint8, shape=(out.height, out.width, out.bands))
    except pyvips.Error:
        return None
    return Image.fromarray(pixels[..., 0] if out.bands == 1 else pixels, _VIPS_MODES[out.bands])


def supported() -> dict[str, bool]:
    """Format family -> whether this installation decodes it (``semhash --version`` style reports)."""
    return {"HEIC/HEIF": heif_available(), "AVIF": avif_available(), "RAW": raw_available()}


def prepare(path: Path) -> None:
    """Before Pillow opens ``path``: make sure its format's decoder is there (ImageError
    naming the file and the fix otherwise)."""
    suffix = path.suffix.lower()
    if suffix in HEIF_EXTENSIONS and not heif_available():
        raise ImageError(f"{path}: HEIC/HEIF needs the pillow-heif package: {EXTRA}")
    if suffix in AVIF_EXTENSIONS and not avif_available():
        raise ImageError(f"{path}: this Pillow was built without AVIF (libavif): upgrade Pillow (11.3 or later), or {EXTRA}")


def is_raw(path: Path) -> bool:
    return path.suffix.lower() in RAW_EXTENSIONS


def open_raw(path: Path, data: bytes | None):
    """A RAW camera file -> (a Pillow image, the EXIF orientation to apply to it, the
    photo's own (width, height) upright): its embedded preview JPEG (opened lazily, so the
    JPEG decoder can reduce it) when it has one, else LibRaw's half-size demosaic (camera
    white balance, 8 bits; already upright)."""
    import os
    import warnings

    # LibRaw's OpenMP on one thread: the indexer's pool already runs a process per core, and
    # an OpenMP thread pool started in a process (the watcher hashes in its own) would hang
    # the workers it forks later.  Read once, when rawpy's libgomp loads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import rawpy
    except ImportError:
        raise ImageError(f"{path}: RAW files need the rawpy package: {EXTRA}") from None
    from PIL import Image

    try:
        with warnings.catch_warnings():
            if os.environ.get("OMP_NUM_THREADS") == "1":  # rawpy's fork warning is about OpenMP threads: there are none
                warnings.filterwarnings("ignore", message="rawpy is being used in a process created by multiprocessing")
            raw = rawpy.imread(io.BytesIO(data) if data is not None else str(path))
        with raw:
            orientation = _RAW_FLIP_TO_ORIENTATION.get(int(raw.sizes.flip), 1)
            size = (int(raw.sizes.width), int(raw.sizes.height))
            own = size[::-1] if orientation in (6, 8) else size
            try:
                thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
                return Image.open(io.BytesIO(bytes(thumb.data))), orientation, own
            if thumb is not None and thumb.format == rawpy.ThumbFormat.BITMAP:
                return Image.fromarray(thumb.data), orientation, own
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            return Image.fromarray(rgb), 1, own  # postprocess turns the image upright itself
    except rawpy.LibRawError as exc:
        raise ImageError(f"{path}: not a readable RAW file ({type(exc).__name__}: {exc})") from None
