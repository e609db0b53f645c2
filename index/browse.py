"""A long-lived, read-only view of one index, for the web face (``semhash serve``).

:class:`IndexReader` is opened once and answers many requests: searches by code, by image
arrays or uploaded image files and by indexed row id; a row by id and its file or thumbnail;
a bucket's members; the largest buckets with their purity; the index status; the latest
evaluation report of the index's model.  It holds

* a **read-only** SQLAlchemy engine on the record (SQLite ``mode=ro``: no request can change
  the index, and a WAL database is read without checkpointing it);
* the model's NumPy :class:`~semhash.inference.Hasher` (never TensorFlow), checked against the
  fingerprint the index was built with;
* the **search cache**: the Hamming lookup (:func:`semhash.index.search.open_lookup`),
  memory-mapped from ``index.lookup`` when that file is current, else built in memory from
  one snapshot of the record (never written: the service is read-only), loaded once per
  index state behind one class, :class:`_SearchCache`.

A re-index is noticed without a restart: every request reads the ``meta`` table's few rows
(and stats the file, to notice a deleted and re-created index) and compares them with the
state its cache was loaded from; only when the ``generation`` (or the model, or the file)
changed is the cache reloaded, by one thread while the others go on answering from the
previous state.  Nothing per request is O(index size).

Files are only ever reached through a row id, and only when the row's stored path (a key of
:mod:`semhash.index.pathkeys`, opened through ``key_path``: any file name works) is
absolute and normalised, its real path (symlinks resolved) lies inside the folder the row
was indexed from, it is a regular file with an image extension, and Pillow recognises it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sqlite3
import stat
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from functools import lru_cache
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote

import numpy as np
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from semhash.data import IMAGE_EXTENSIONS, decode_image
from semhash.errors import ImageError, IndexBusyError, IndexError_, ModelError, SemhashError
from semhash.hashing import code_to_str, from_signed64, to_signed64
from semhash.index import search as index_search
from semhash.index.db import ImageRow, IndexDB, IndexLocation, IndexMeta, MetaRow, chunked, open_index
from semhash.index.pathkeys import key_path, printable
from semhash.index.search import CodeError, index_info
from semhash.index.tiers import query_facts
from semhash.tiers import tiers_for
from semhash.workspace import Workspace

__all__ = [
    "BadQuery",
    "BucketMembers",
    "ClientGone",
    "DecodeBudget",
    "EvaluationReport",
    "FileBytes",
    "Hit",
    "ImageRecord",
    "IndexReader",
    "NotFound",
    "SearchResult",
    "ServerBusy",
    "UploadLimits",
    "UploadTooLarge",
    "decode_upload",
    "parse_code",
]

#: Pillow formats an upload or a served file may be in (what the indexer reads; no EPS, PDF
#: or other plugin that hands the bytes to an external program)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")


def image_formats() -> tuple[str, ...]:
    """:data:`IMAGE_FORMATS`, and HEIF and AVIF where this installation decodes them
    (:mod:`semhash.formats`)."""
    from semhash.formats import avif_available, heif_available

    return IMAGE_FORMATS + (("HEIF",) if heif_available() else ()) + (("AVIF",) if avif_available() else ())


def _open_for_display(data: bytes, path: Path):
    """An indexed file's bytes opened for a thumbnail: a RAW file's preview (or demosaic),
    else Pillow within :func:`image_formats`."""
    from PIL import Image, ImageOps

    from semhash.formats import is_raw, open_raw

    if is_raw(path):
        img, orientation, _ = open_raw(path, data)
        img.load()
        if orientation != 1:
            img = img.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}[orientation])
        return img
    with Image.open(io.BytesIO(data), formats=image_formats()) as img:
        img.load()
        return ImageOps.exif_transpose(img)
THUMBNAIL_SIZES = (16, 512)
#: formats a browser shows as they are; any other indexed file is served as a JPEG of at most
#: MAX_VIEW_SIDE pixels a side (its original bytes stay on disk, untouched)
BROWSER_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP"})
MAX_VIEW_SIDE = 4096
MAX_SERVED_FILE_BYTES = 64 << 20
KEY_REUSE_S = 0.005
_BUSY_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- errors
class NotFound(SemhashError):
    """No such row, file, bucket, report or figure (the web answers 404)."""


class Conflict(SemhashError):
    """A request about something that changed since it was listed (a group of duplicates)."""


class Forbidden(SemhashError):
    """A request this server was not started to allow (a decision without ``--review``)."""


class BadQuery(SemhashError):
    """A request parameter the index cannot answer: a malformed code, a radius out of range."""


class UploadTooLarge(ImageError):
    """An upload over the byte, file-count or pixel limit (the web answers 413)."""


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class UploadLimits:
    """What one request may upload: whole body bytes, files per request, pixels per image
    (checked from the image header, before anything is decoded)."""

    max_request_bytes: int = 16 << 20
    max_files: int = 16
    max_pixels: int = 40_000_000
    #: the whole server: pixels being decoded at once (decoded, an RGBA image takes 4-8 bytes a
    #: pixel), requests waiting for their turn, and how long one waits before a 503
    decode_pixels: int = 80_000_000
    decode_waiting: int = 16
    decode_wait_s: float = 30.0


class ServerBusy(SemhashError):
    """Too much is being decoded already and the queue is full (or the wait ran out): the web
    answers 503 with Retry-After."""


class ClientGone(SemhashError):
    """The client that asked has disconnected: its work is dropped."""


class DecodeBudget:
    """How many pixels the server decodes at once, all requests together.  An upload's decode
    waits (in a queue of at most ``waiting``, at most ``wait_s``) until its pixels fit; a full
    queue or a wait that runs out is :class:`ServerBusy`.  One image never asks for more than
    the whole budget.  After a large decode the memory it used is handed back to the system."""

    def __init__(self, pixels: int, waiting: int, wait_s: float):
        self.capacity, self.max_waiting, self.wait_s = int(pixels), int(waiting), float(wait_s)
        self.in_use = 0
        self.waiting = 0
        self.closed = False
        self._changed = threading.Condition()

    def close(self) -> None:
        """The server is stopping: every upload waiting for its turn is answered at once
        (ServerBusy), and no new decode starts."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    @contextmanager
    def hold(self, pixels: int, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        pixels = min(int(pixels), self.capacity)
        with self._changed:
            if self.closed:
                raise ServerBusy("the server is shutting down: try again shortly")
            if self.in_use + pixels > self.capacity:
                if self.waiting >= self.max_waiting:
                    raise ServerBusy(self._busy(f"{self.waiting} uploads are waiting already"))
                self.waiting += 1
                try:
                    deadline = time.monotonic() + self.wait_s
                    while self.in_use + pixels > self.capacity:
                        if self.closed:
                            raise ServerBusy("the server is shutting down: try again shortly")
                        if cancelled():
                            raise ClientGone("the client left before its upload was decoded")
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise ServerBusy(self._busy(f"an upload waited {self.wait_s:.0f} s for its turn"))
                        self._changed.wait(min(left, 0.1))
                finally:
                    self.waiting -= 1
            self.in_use += pixels
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()
            if pixels >= 4_000_000:
                release_memory()

    def _busy(self, why: str) -> str:
        return f"the server is decoding {self.in_use / 1e6:.0f} megapixels of uploads and {why}: try again shortly"


def release_memory() -> None:
    """Give the memory freed by large decodes back to the system (glibc keeps freed blocks in
    its per-thread arenas otherwise: a server that decoded big uploads stayed at gigabytes)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


@dataclass(frozen=True)
class Hit:
    """One indexed image near a query (``semhash query --json``'s match, plus its row id)."""

    id: int
    path: str
    distance: int  # in the code of the tier it matched in
    label: str | None
    code: int
    tier: str = "similar"  # exact (same bytes), near (a copy: PDQ), similar (the model's code)


@dataclass
class SearchResult:
    """One query: its code, how many indexed images lie within the radius (``total``) and the
    first ``limit`` of them, nearest first, ties by path."""

    query: str
    code: int
    bits: str
    total: int
    matches: list[Hit]
    note: str | None = None  # a code given as text that could be read two ways: which reading
    tier: str = "similar"  # the tiers searched: all, exact, near or similar
    hint: str | None = None  # an upload unlike the model's training images: why its matches may mean little


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str
    label: str | None
    code: int
    bits: str


@dataclass
class BucketMembers:
    code: int
    bits: str
    size: int
    members: list[ImageRecord]


@dataclass(frozen=True)
class FileBytes:
    """An image file's (or thumbnail's) bytes, its media type and a validator for caching."""

    data: bytes
    media_type: str
    etag: str
    name: str


@dataclass
class EvaluationReport:
    """The newest ``report.json`` under HOME/reports/ whose model is the index's model."""

    model: str
    name: str  # the report's folder name
    directory: Path
    headline: str
    result: dict[str, Any]
    figures: list[str]
    written_at: float


# --------------------------------------------------------------------------- codes
def parse_code(text: str, n_bits: int) -> int:
    """A code given as text: exactly ``n_bits`` characters of 0/1 are the bits, unit 0 first
    (as ``semhash query`` prints them); otherwise a decimal integer below ``2**n_bits``
    (:func:`semhash.index.search.parse_code`, as ``semhash query --code`` reads it)."""
    return read_code(text, n_bits)[0]


def read_code(text: str, n_bits: int) -> tuple[int, str | None]:
    """:func:`parse_code` and, for text that could be read two ways, which reading was used
    (:func:`semhash.index.search.read_code`)."""
    try:
        return index_search.read_code(str(text), n_bits)
    except CodeError as exc:
        raise BadQuery(str(exc)) from None


def _connection_lost(exc: BaseException, conn: Any) -> bool:
    """Whether a database error means the connection is gone (the server restarted, shut
    down, or cannot be reached), not that a statement was wrong."""
    orig = getattr(exc, "orig", None) or exc
    if conn is not None and getattr(conn, "closed", False):
        return True
    if type(orig).__module__.split(".")[0] != "psycopg":
        return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
    state = getattr(orig, "sqlstate", None) or ""
    # 08: connection exceptions; 57P01-03: the server shut down or is starting; no state: libpq lost it
    return state.startswith("08") or state in ("57P01", "57P02", "57P03") or type(orig).__name__ in (
        "OperationalError", "InterfaceError") and not state  # fmt: skip


# --------------------------------------------------------------------------- uploads
def decode_upload(
    name: str, data: bytes, shape: Sequence[int], max_pixels: int, budget: DecodeBudget | None = None,
    cancelled: Callable[[], bool] = lambda: False, views: bool = False, near_coder: Any = None,
) -> Any:
    """An uploaded image's bytes -> (H, W, C) float32 in [0, 1], exactly as the indexer decodes
    a file (so an upload of an indexed file gets that file's code); with ``views``, (that
    array, its :class:`~semhash.index.tiers.QueryFacts` for the exact and near tiers, the
    near codes by ``near_coder``: PDQ when None).

    The header is read first: a format outside :data:`IMAGE_FORMATS` or not an image is an
    :class:`ImageError`, more than ``max_pixels`` pixels an :class:`UploadTooLarge`, both
    before a single pixel is decoded (a decompression bomb never reaches the decoder).  With
    a ``budget``, the decode waits until its pixels fit in it.
    """
    pixels = upload_pixels(name, data, max_pixels)
    if cancelled():
        raise ClientGone("the client left before its upload was decoded")
    # the indexer's decoder on the uploaded bytes: EXIF, modes, 16-bit, alpha, resizing identical
    decode = (lambda: query_facts(name, data, shape, near_coder)) if views else (lambda: decode_image(name, shape, data=data))
    if budget is None:
        return decode()
    with budget.hold(pixels, cancelled):
        return decode()


def upload_hint(data: bytes, input_shape: Sequence[int]) -> str | None:
    """Why an upload's matches may mean little: a colour (RGB, palette, CMYK...) image searched
    with a model of grey images, or an image far larger than the model's input (a photo on a
    digits model).  From the header alone: nothing is decoded here (the decode, within the
    server's budget, is the search's).  None when nothing stands out or it cannot be read."""
    from PIL import Image

    height, width, channels = (int(s) for s in input_shape)
    try:
        with Image.open(io.BytesIO(data)) as img:
            size, mode = img.size, img.mode
    except Exception:  # noqa: BLE001 -- a hint is only a hint: the decode reports real problems
        return None
    model = f"{width}x{height} {'grey' if channels == 1 else 'colour'} images"
    if channels == 1 and mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return f"the model was trained on {model}; this is a {mode} image of {size[0]}x{size[1]}: its matches may mean little"
    if min(size) > 8 * max(width, height):
        return f"the model was trained on {model}; this image is {size[0]}x{size[1]}: its matches may mean little"
    return None


def upload_pixels(name: str, data: bytes, max_pixels: int) -> int:
    """The pixels of an upload, from its header (nothing decoded); ImageError or UploadTooLarge
    for what may not be decoded at all."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=image_formats()) as img:
            width, height = img.size
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not a recognised image format (accepted: {', '.join(image_formats())})"
        ) from None
    except Image.DecompressionBombError:
        raise UploadTooLarge(f"{name}: image too large (over the decompression-bomb limit)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    if width * height > max_pixels:
        raise UploadTooLarge(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )
    return width * height


# --------------------------------------------------------------------------- the search cache
class _SearchCache:
    """The structure radius searches run on, loaded once per index state: the Hamming
    lookup of :func:`semhash.index.search.open_lookup` with ``write=False`` (the file when it
    is current, else built in memory from one snapshot of the record; the server never
    writes it)."""

    kind = "lookup"

    def __init__(self, searcher: index_search.Searcher):
        self.searcher = searcher
        self.n_bits = searcher.n_bits
        self.source = searcher.source  # "cache file" or "built in memory"

    @classmethod
    def load(cls, db: IndexDB) -> tuple[IndexMeta, "_SearchCache | None"]:
        """The record's meta and its cache (None while the index is empty), one snapshot."""
        meta, searcher = index_search.open_lookup(db, write=False)
        return meta, None if searcher is None else cls(searcher)

    def search(self, codes: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each code, (row ids, distances) of every entry within ``radius`` (inclusive),
        nearest first."""
        found = self.searcher.search(codes, radius)
        return [found[i] for i in range(len(found))]


# --------------------------------------------------------------------------- index state
@dataclass
class _State:
    """What one index state (file identity + meta) has loaded; replaced on a re-index."""

    key: tuple
    meta: IndexMeta
    cache: _SearchCache | None  # None while the index is empty (not bound to a model)
    derived: dict[str, Any] = field(default_factory=dict)  # status, buckets: computed once
    locks: dict[str, threading.Lock] = field(default_factory=dict)

    def lock_for(self, name: str) -> threading.Lock:
        """One lock per derived item: a long bucket count does not hold up the status."""
        return self.locks.setdefault(name, threading.Lock())


#: what identifies an index state besides the file: a rebuild, any row change, a new model
_STATE_KEYS = ("created_at", "generation", "model_fingerprint", "n_bits")
_STATE_KEY_SQL = (
    f"SELECT key, value FROM {MetaRow.__tablename__} WHERE key IN ({', '.join(repr(k) for k in _STATE_KEYS)})"
)


@lru_cache(maxsize=None)
def _rows_by_id_sql(n: int, paramstyle: str = "qmark") -> str:
    marker = "?" if paramstyle == "qmark" else "%s"  # sqlite3, or psycopg
    return f"SELECT id, path, label, code FROM {ImageRow.__tablename__} WHERE id IN ({', '.join([marker] * n)})"


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return " ".join(str(cause).split()) or type(cause).__name__


class IndexReader:
    """One index opened read-only for many requests (thread-safe).  Use as a context
    manager, or call :meth:`close`.

    Raises :class:`IndexError_` at once when ``index_path`` is not a readable semhash index.
    """

    def __init__(
        self,
        index_path: str | Path,
        workspace: Workspace,
        *,
        limits: UploadLimits = UploadLimits(),
        busy_timeout_s: float = _BUSY_TIMEOUT_S,
    ):
        self.location = IndexLocation.parse(index_path)
        # what messages name: the file, or the database URL without its password
        self.path = self.location if self.location.is_url else self.location.file
        self.workspace = workspace
        self.limits = limits
        self.decode_budget = DecodeBudget(limits.decode_pixels, limits.decode_waiting, limits.decode_wait_s)
        self.busy_timeout_s = busy_timeout_s
        self._open_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._hashers: dict[tuple[str, str], Any] = {}
        self._near_coders: dict[tuple[str, str, str], Any] = {}
        self._hasher_lock = threading.Lock()
        self._thumbnails: OrderedDict[tuple, FileBytes] = OrderedDict()
        self._thumbnail_lock = threading.Lock()
        self._state: _State | None = None
        self._refresh_after = 0.0  # monotonic time before which a stale state is kept
        self._engine: Engine | None = None
        self._db: IndexDB | None = None
        self._file_id: tuple[int, int] | None = None
        self._opened = 0  # bumped by every (re)open: per-thread connections follow it
        self._paramstyle = "pyformat" if self.location.is_url else "qmark"  # of the raw connections
        self._last_key: tuple[float, tuple] = (-1.0, ())
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._immutable = False
        # the duplicates listings asked for lately: computed again in the background as soon
        # as a new index state loads, so that the review page's first request finds them ready
        self._warm_shapes: list[tuple] = []
        self._open()
        self._current()

    # -- opening ------------------------------------------------------------------------
    def _open(self) -> None:
        """(Re)open the record read-only.  open_index's checks come first, so a file that is
        not a semhash index (or of a newer schema) is refused with its one-line reason."""
        if self.location.is_url:  # a database: no file identity to follow, its own pool
            db = open_index(self.location)
            old = self._engine
            self._engine, self._db, self._file_id = db.engine, db, None
            self._opened += 1
            if old is not None:
                old.dispose()
            return
        open_index(self.path).close()
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise IndexError_(f"{self.path}: cannot read index ({exc.strerror or exc})") from None
        # a WAL index in a folder we cannot write: SQLite cannot make the shared-memory file a
        # WAL reader needs, so it is read as immutable (as open_index does; nothing can write
        # to it there either)
        self._immutable = not os.access(self.path.parent, os.W_OK) and not os.path.exists(f"{self.path}-wal")
        engine = create_engine("sqlite://", creator=self._connect, poolclass=QueuePool, pool_size=2, max_overflow=8)

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # one consistent snapshot per transaction
            conn.exec_driver_sql("BEGIN")

        old = self._engine
        self._engine, self._db, self._file_id = engine, IndexDB(self.path, engine), (st.st_dev, st.st_ino)
        self._opened += 1
        if old is not None:
            old.dispose()

    def _connect(self) -> sqlite3.Connection:
        """A read-only connection (``mode=ro``: no statement on it can write; a WAL index is
        read through its shared-memory file without being checkpointed).  For a database, a
        read-only autocommit connection of the same driver (psycopg)."""
        if self.location.is_url:
            assert self._engine is not None
            dialect = self._engine.dialect
            cargs, cparams = dialect.create_connect_args(self._engine.url)
            conn = dialect.loaded_dbapi.connect(*cargs, **cparams, connect_timeout=10, autocommit=True)
            conn.read_only = True
            return conn
        uri = f"file:{quote(str(self.path))}?mode=ro{'&immutable=1' if self._immutable else ''}"
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self.busy_timeout_s, check_same_thread=False)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        with self._open_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def __enter__(self) -> "IndexReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the current state ----------------------------------------------------------------
    @contextmanager
    def _raw(self) -> Iterator[sqlite3.Connection]:
        """This thread's own read-only sqlite3 connection, for the per-request statements.
        They are plain SQL on it: SQLAlchemy's statement layer and pool checkout cost ~1 ms a
        request here, 20x the queries themselves.  A database connection that broke (the
        server restarted) is dropped, so that the next request connects anew."""
        local = self._local
        with self._db_errors():
            if getattr(local, "opened", None) != self._opened or getattr(local, "conn", None) is None:
                old = getattr(local, "conn", None)
                local.conn, local.opened = self._connect(), self._opened
                with self._open_lock:
                    if old is not None:  # a connection to the file this reader had open before
                        self._forget(old)
                    self._connections.append(local.conn)
            try:
                yield local.conn
            except Exception as exc:
                if self.location.is_url and _connection_lost(exc, local.conn):
                    with self._open_lock:
                        self._forget(local.conn)
                    local.conn = None
                raise

    def _forget(self, conn) -> None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 -- a broken connection may fail to close; it is gone either way
            pass
        if conn in self._connections:
            self._connections.remove(conn)

    def _read_key(self) -> tuple:
        """The current index state, cheaply: one stat and four rows of the meta table (read
        again only after ``KEY_REUSE_S``, so the freshness check and the search of one
        request share one read)."""
        checked_at, key = self._last_key
        if time.monotonic() - checked_at < KEY_REUSE_S:
            return key
        st = None
        if not self.location.is_url:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                raise IndexError_(f"{self.path}: index unavailable ({exc.strerror or exc})") from None
        if st is not None and (st.st_dev, st.st_ino) != self._file_id:
            with self._open_lock:
                if (st.st_dev, st.st_ino) != self._file_id:
                    self._open()  # deleted and re-created: the old connections see the old file
        try:
            with self._raw() as conn:
                values = dict(conn.execute(_STATE_KEY_SQL).fetchall())
        except IndexBusyError:  # the database connection had broken (a restart): once more, anew
            with self._raw() as conn:
                values = dict(conn.execute(_STATE_KEY_SQL).fetchall())
        key = (self._file_id, *(values.get(k) for k in _STATE_KEYS))
        self._last_key = (time.monotonic(), key)
        return key

    def _current(self) -> _State:
        key = self._read_key()
        state = self._state
        if state is not None and state.key == key:
            return state
        if state is not None and (time.monotonic() < self._refresh_after or not self._refresh_lock.acquire(blocking=False)):
            return state  # another thread is reloading, or a re-index is still running: keep answering
        if state is None:
            self._refresh_lock.acquire()
        try:
            if self._state is not None and self._state.key == key:
                return self._state
            started = time.monotonic()
            assert self._db is not None
            with self._db_errors():
                # labelled with the key read before loading: if the index moved on meanwhile,
                # the next request sees a newer key and loads again
                meta, cache = _SearchCache.load(self._db)
            self._state = _State(key, meta, cache)
            self._warm(self._state)
            # while an indexing run bumps the generation batch after batch, reload at most
            # every 2x the last reload's time: at most half the CPU goes to reloading
            self._refresh_after = time.monotonic() + 2 * (time.monotonic() - started)
            return self._state
        finally:
            self._refresh_lock.release()

    def stale(self) -> bool:
        """Whether the next request would reload the search cache first (cheap: one stat and
        one small query).  Lets an async caller run :meth:`refresh` in a worker thread."""
        state = self._state
        return state is None or (self._read_key() != state.key and time.monotonic() >= self._refresh_after)

    def refresh(self) -> None:
        """Bring the loaded state up to date with the index now (blocking)."""
        self._current()

    def _bound(self) -> _State:
        state = self._current()
        if state.cache is None:
            raise IndexError_(f"{self.path}: the index is empty: run 'semhash index DIR' first")
        return state

    @contextmanager
    def _db_errors(self) -> Iterator[None]:
        """Database errors become one-line IndexError_ naming the file; a database that cannot
        be reached (down, restarting) an IndexBusyError (the web answers 503: try again)."""
        try:
            yield
        except IndexError_:
            raise
        except Exception as exc:
            driver = type(getattr(exc, "orig", None) or exc).__module__.split(".")[0] == "psycopg"
            if not (driver or isinstance(exc, (DBAPIError, SQLAlchemyError, sqlite3.Error))):
                raise
            cause = self.location.scrub(_one_line(exc))
            if self.location.is_url and _connection_lost(exc, None):
                raise IndexBusyError(f"{self.path}: the database is unavailable ({cause}): try again") from None
            raise IndexError_(f"{self.path}: cannot read index ({cause})") from None

    # -- the model ------------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """The model the index is bound to (None while it is empty)."""
        return self._current().meta.model_name

    def hasher(self) -> Any:
        """The NumPy Hasher of the model the index was built with (loaded once per model)."""
        return self._hasher(self._bound())

    def _hasher(self, state: _State) -> Any:
        meta = state.meta
        name, fingerprint = str(meta.model_name), str(meta.model_fingerprint)
        with self._hasher_lock:
            hasher = self._hashers.get((name, fingerprint))
            if hasher is None:
                try:
                    hasher = self.workspace.model(name).load_hasher()
                except (ModelError, OSError, ValueError, KeyError) as exc:
                    raise ModelError(
                        f"{self.path}: the index was built with model {name!r}, which cannot be loaded "
                        f"from {self.workspace.models_dir} ({exc}): serve with the --home that holds it"
                    ) from None
                if hasher.fingerprint != fingerprint or hasher.n_bits != meta.n_bits:
                    raise ModelError(
                        f"{self.path}: model {name!r} changed since indexing (fingerprint {fingerprint} -> "
                        f"{hasher.fingerprint}): re-run `semhash index --rebuild`"
                    )
                self._hashers = {(name, fingerprint): hasher}
        return hasher

    def _near_coder(self, state: _State) -> Any:
        """The coder of the index's near codes (PDQ, or its near model: loaded once)."""
        from semhash.near_codes import coder_for

        scheme = state.meta.near_scheme
        key = ("near", str(scheme.model), str(scheme.fingerprint))
        with self._hasher_lock:
            coder = self._near_coders.get(key)
            if coder is None:
                def load(name: str):
                    try:
                        return self.workspace.model(name).load_hasher()
                    except (ModelError, OSError, ValueError, KeyError) as exc:
                        raise ModelError(
                            f"{self.path}: the index's near codes come from model {name!r}, which cannot be loaded "
                            f"from {self.workspace.models_dir} ({exc}): serve with the --home that holds it"
                        ) from None

                coder = coder_for(scheme, load)
                self._near_coders = {key: coder}
        return coder

    @staticmethod
    def _near_threshold(state: _State, near_threshold: int | None) -> int:
        from semhash.index.tiers import check_tier_threshold

        try:
            return check_tier_threshold(near_threshold, state.meta.near_scheme)
        except ValueError as exc:
            raise BadQuery(str(exc)) from None

    # -- searching ------------------------------------------------------------------------
    def _check_search(self, state: _State, radius: int, limit: int | None) -> tuple[int, int | None]:
        n_bits = int(state.meta.n_bits)  # type: ignore[arg-type]
        radius = int(radius)
        if not 0 <= radius <= n_bits:
            raise BadQuery(f"radius {radius} is outside 0..{n_bits} for this {n_bits}-bit index")
        if limit is not None and int(limit) < 1:
            raise BadQuery(f"limit must be at least 1, got {limit}")
        return radius, None if limit is None else int(limit)

    def search_codes(
        self,
        codes: Sequence[int | str] | np.ndarray,
        radius: int = 2,
        limit: int | None = None,
        queries: Sequence[str] | None = None,
    ) -> list[SearchResult]:
        """For each code (an integer, or text as :func:`parse_code` reads it), the indexed
        images within Hamming ``radius`` (inclusive), nearest first then by path, at most
        ``limit``; ``total`` counts them all.  ``queries`` names them (default: the bits)."""
        return self._search(self._bound(), codes, radius, limit, queries)

    def _search(self, state: _State, codes: Any, radius: int, limit: int | None, queries: Sequence[str] | None) -> list[SearchResult]:
        radius, limit = self._check_search(state, radius, limit)
        n_bits = int(state.meta.n_bits)  # type: ignore[arg-type]
        notes: list[str | None] = []
        if isinstance(codes, np.ndarray):
            values = [int(c) for c in codes.astype(np.uint64).reshape(-1).tolist()]
        else:
            values = []
            for c in codes:
                code, note = read_code(c, n_bits) if isinstance(c, str) else (int(c), None)
                values.append(code)
                notes.append(note)
        for code in values:
            if not 0 <= code < 1 << n_bits:
                raise BadQuery(f"code {code} is outside 0..2**{n_bits}-1 for this {n_bits}-bit index")
        if not values:
            return []
        bits = [code_to_str(c, n_bits) for c in values]
        names = list(queries) if queries is not None else bits
        assert state.cache is not None
        notes = notes or [None] * len(values)
        results = []
        for name, code, code_bits, note in zip(names, values, bits, notes):
            # one code at a time: a request's memory is one code's hits (the total counts them
            # all), never codes x index size
            ((ids, distances),) = state.cache.search(np.asarray([code], dtype=np.uint64), radius)
            results.append(SearchResult(name, code, code_bits, len(ids), self._first_matches(ids, distances, limit), note))
            del ids, distances
        return results

    def search_images(
        self, images: np.ndarray, radius: int = 2, limit: int | None = None, queries: Sequence[str] | None = None
    ) -> list[SearchResult]:
        """Hash (N, H, W, C) images in [0, 1] with the index's model, then search."""
        state = self._bound()
        codes = self._hasher(state).hash(images)
        names = list(queries) if queries is not None else [f"image {i}" for i in range(len(codes))]
        return self._search(state, codes, radius, limit, names)

    def search_uploads(
        self, uploads: Sequence[tuple[str, bytes]], radius: int = 2, limit: int | None = None,
        cancelled: Callable[[], bool] = lambda: False, tier: str = "all", near_threshold: int | None = None,
    ) -> list[SearchResult]:
        """Uploaded image files ``(name, bytes)``: limits checked, decoded one at a time within
        the server's decode budget (dropped as soon as ``cancelled()``: the client left),
        hashed, searched in ``tier`` (all, exact, near, similar: :mod:`semhash.index.tiers`),
        as ``semhash query`` does."""
        if not uploads:
            raise BadQuery("no image uploaded")
        if len(uploads) > self.limits.max_files:
            raise UploadTooLarge(f"{len(uploads)} images in one request: at most {self.limits.max_files}")
        state = self._bound()
        self._check_search(state, radius, limit)  # before any decoding
        tiers = tiers_for(tier)
        threshold = self._near_threshold(state, near_threshold)
        hasher = self._hasher(state)
        coder = self._near_coder(state) if "near" in tiers else None
        decoded = [
            decode_upload(name, data, hasher.input_shape, self.limits.max_pixels, self.decode_budget, cancelled, views=True,
                          near_coder=coder)
            for name, data in uploads
        ]  # fmt: skip
        codes = hasher.hash(np.stack([array for array, _ in decoded]))
        names = [name for name, _ in uploads]
        hints = [upload_hint(data, hasher.input_shape) for _, data in uploads]
        if tiers == ("similar",):
            return [replace(r, hint=h) for r, h in zip(self._search(state, codes, radius, limit, names), hints)]
        results = self._search(state, codes, radius, None, names) if "similar" in tiers else [
            SearchResult(name, int(c), code_to_str(int(c), int(state.meta.n_bits)), 0, []) for name, c in zip(names, codes.tolist())
        ]  # fmt: skip
        return [replace(self._with_tiers(state, r, facts, tiers, threshold, limit, tier), hint=h)
                for r, (_, facts), h in zip(results, decoded, hints)]  # fmt: skip

    def _near_index(self, state: _State):
        """The near tier's index of this state, loaded once (per index state)."""
        from semhash.index.tiers import open_near_index

        with state.lock_for("near"):
            if "near" not in state.derived:
                with self._raw() as conn:  # the cache file when current, else built here (never written)
                    state.derived["near"] = open_near_index(self._db, state.meta, conn, write=False)
            return state.derived["near"]

    def _with_tiers(self, state: _State, similar: SearchResult, facts, tiers, threshold: int, limit: int | None,
                    tier: str) -> SearchResult:  # fmt: skip
        """``similar`` (every similar hit of one query) with the exact and near tiers' hits put
        first, each image once in the strictest tier that reached it; cut to ``limit``."""
        from semhash.index.tiers import exact_ids_sql

        exact: list[int] = []
        if "exact" in tiers and facts is not None and facts.content_hash:
            with self._raw() as conn:
                exact = [int(r[0]) for r in conn.execute(exact_ids_sql(self._paramstyle), (facts.content_hash,)).fetchall()]
        near = None
        if "near" in tiers and facts is not None and not facts.flat and self._db is not None and self._db.has_near_tier:
            near = self._near_index(state).search(facts.near, threshold)
        near_ids = [] if near is None else near[0].tolist()
        rows = {i: (i, path, label, code) for i, path, label, code in self._rows([*exact, *near_ids])}
        hits = sorted((Hit(i, rows[i][1], 0, rows[i][2], rows[i][3], "exact") for i in exact if i in rows), key=lambda h: h.path)
        if near is not None:
            in_exact = set(exact)
            found = [Hit(i, rows[i][1], int(d), rows[i][2], rows[i][3], "near")
                     for i, d in zip(near_ids, near[1].tolist()) if i in rows and i not in in_exact]  # fmt: skip
            hits += sorted(found, key=lambda h: (h.distance, h.path))
        seen = {h.id for h in hits}
        hits += [h for h in similar.matches if h.id not in seen]
        total = len(hits)
        return SearchResult(similar.query, similar.code, similar.bits, total, hits if limit is None else hits[:limit],
                            similar.note, tier)  # fmt: skip

    def search_id(self, image_id: int, radius: int = 2, limit: int | None = None, tier: str = "all",
                  near_threshold: int | None = None) -> SearchResult:  # fmt: skip
        """Search from an indexed image, in ``tier`` as :meth:`search_uploads` does, from its
        stored codes (nothing is decoded)."""
        state = self._bound()
        record = self._image(state, image_id)
        tiers = tiers_for(tier)
        threshold = self._near_threshold(state, near_threshold)
        if tiers == ("similar",):
            return self._search(state, [record.code], radius, limit, [record.path])[0]
        self._check_search(state, radius, limit)
        similar = self._search(state, [record.code], radius, None, [record.path])[0] if "similar" in tiers else SearchResult(
            record.path, record.code, record.bits, 0, [])  # fmt: skip
        return self._with_tiers(state, similar, self._stored_facts(image_id), tiers, threshold, limit, tier)

    def _stored_facts(self, image_id: int):
        """An indexed row's :class:`~semhash.index.tiers.QueryFacts`, from its stored hash and
        near codes (None for a row without them)."""
        from semhash.index.tiers import QueryFacts

        if self._db is None or not self._db.has_near_tier:
            return None
        marker = "?" if self._paramstyle == "qmark" else "%s"
        with self._raw() as conn:
            row = conn.execute(f"SELECT content_hash, near_code, near_variants, near_quality FROM images WHERE id = {marker}",
                               (int(image_id),)).fetchone()  # fmt: skip
        if row is None or row[1] is None:
            return None
        codes = np.frombuffer(bytes(row[1]) + (bytes(row[2]) if row[2] is not None else b""), np.uint8).reshape(-1, 32)
        return QueryFacts(row[0], codes, 100 if row[3] is None else int(row[3]))

    def parse_code(self, text: str) -> int:
        """A code given as text, for this index's bit width (see :func:`parse_code`)."""
        return parse_code(text, int(self._bound().meta.n_bits))  # type: ignore[arg-type]

    def _first_matches(self, ids: np.ndarray, distances: np.ndarray, limit: int | None) -> list[Hit]:
        """Rows for the hits that can be among the first ``limit`` (every hit up to the
        boundary distance, whose ties are broken by path), sorted and cut."""
        if len(ids) == 0:
            return []
        ids, distances = index_search.first_tiers(ids, distances, limit)
        distance_of = dict(zip(ids.tolist(), distances.tolist()))
        hits = [
            Hit(i, path, distance_of[i], label, code)
            for i, path, label, code in self._rows(distance_of)  # a row deleted since the cache loaded is skipped
        ]
        hits.sort(key=lambda h: (h.distance, h.path))
        return hits if limit is None else hits[:limit]

    def _rows(self, ids: Any) -> list[tuple[int, str, str | None, int]]:
        wanted = sorted(int(i) for i in ids)
        found = []
        with self._raw() as conn:
            for chunk in chunked(wanted):
                for i, path, label, code in conn.execute(_rows_by_id_sql(len(chunk), self._paramstyle), chunk):
                    found.append((int(i), display_path(path), label, from_signed64(code)))
        return found

    # -- rows, buckets --------------------------------------------------------------------
    def image(self, image_id: int) -> ImageRecord:
        """The indexed row ``image_id``; NotFound when there is none."""
        return self._image(self._current(), image_id)

    def image_at(self, path: str) -> ImageRecord:
        """The indexed row of ``path`` (as results show it: the stored key); NotFound when
        none.  Exact, on the unique path index: no scan, however large the index."""
        state = self._current()
        assert self._engine is not None
        row = None
        if "\x00" not in path:  # no key holds NUL (and PostgreSQL refuses it in a query)
            with self._db_errors(), self._engine.connect() as conn:
                row = conn.execute(select(ImageRow.id).where(ImageRow.path == path)).first()
        if row is None:
            raise NotFound(f"no indexed image at {printable(path)} (give the full path, as results show it)")
        return self._image(state, int(row[0]))

    def _image(self, state: _State, image_id: int) -> ImageRecord:
        rows = self._rows([image_id]) if 0 <= int(image_id) < 1 << 63 else []
        if not rows:
            raise NotFound(f"no indexed image with id {image_id}")
        i, path, label, code = rows[0]
        return ImageRecord(i, path, label, code, code_to_str(code, int(state.meta.n_bits or 64)))

    def bucket(self, code: int | str, limit: int | None = 100) -> BucketMembers:
        """The images whose code is exactly ``code`` (an integer, or text as
        :func:`parse_code` reads it), by path, at most ``limit``."""
        state = self._bound()
        n_bits = int(state.meta.n_bits)  # type: ignore[arg-type]
        code = parse_code(code, n_bits) if isinstance(code, str) else int(code)
        if not 0 <= code < 1 << n_bits:
            raise BadQuery(f"code {code} is outside 0..2**{n_bits}-1 for this {n_bits}-bit index")
        assert self._engine is not None
        where = ImageRow.code == to_signed64(int(code))
        with self._db_errors(), self._engine.connect() as conn:
            size = int(conn.execute(select(func.count()).select_from(ImageRow).where(where)).scalar_one())
            stmt = select(ImageRow.id, ImageRow.path, ImageRow.label).where(where).order_by(ImageRow.path)
            if limit is not None:
                stmt = stmt.limit(int(limit))
            rows = conn.execute(stmt).all()
        bits = code_to_str(int(code), n_bits)
        members = [ImageRecord(int(i), display_path(p), label, int(code), bits) for i, p, label in rows]
        return BucketMembers(int(code), bits, size, members)

    def largest_buckets(self, n: int = 20) -> dict[str, Any]:
        """:func:`semhash.metrics.bucket_stats` over the whole index (computed once per index
        state, on first request): the ``n`` largest buckets with purity, and the overall
        purity and coverage.  Purity is None where no indexed image carries a label."""
        from semhash.metrics import bucket_stats

        state = self._bound()
        n = max(0, int(n))
        with state.lock_for("buckets"):
            stats = state.derived.get("buckets")
            if stats is None or len(stats["largest"]) < min(n, stats["n_buckets"]):
                assert self._engine is not None
                with self._db_errors(), self._engine.connect() as conn:
                    rows = conn.exec_driver_sql(f"SELECT code, label FROM {ImageRow.__tablename__}").fetchall()
                codes = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)).view(np.uint64)
                names = sorted({r[1] for r in rows if r[1] is not None})
                number = {name: k for k, name in enumerate(names)}
                labels = np.fromiter((number.get(r[1], -1) for r in rows), dtype=np.int64, count=len(rows))
                stats = bucket_stats(codes, labels, n_largest=max(n, 20))
                stats["labelled"] = bool(names)
                stats["label_names"] = names
                state.derived["buckets"] = stats
        n_bits = int(state.meta.n_bits)  # type: ignore[arg-type]
        names = stats["label_names"]

        def finite(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) or not stats["labelled"] else float(x)

        largest = [
            {
                "code": b["code"],
                "bits": code_to_str(b["code"], n_bits),
                "size": b["size"],
                "purity": finite(b["purity"]),
                "majority_label": names[b["majority_label"]] if stats["labelled"] and b["majority_label"] >= 0 else None,
                "majority_share": finite(b["majority_share"]),
            }
            for b in stats["largest"][:n]
        ]
        return {
            "images": stats["n_images"],
            "buckets": stats["n_buckets"],
            "purity": finite(stats["purity"]),
            "coverage": None if not stats["n_images"] else float(stats["coverage"]),
            "largest": largest,
        }

    # -- status ---------------------------------------------------------------------------
    def duplicates(self, tier: str = "near", near_threshold: int | None = None, radius: int | None = None,
                   keep: str = "largest", min_quality: int | None = None, folder: str | None = None,
                   label: str | None = None) -> tuple[Any, Any]:  # fmt: skip
        """:func:`semhash.duplicates.find_duplicates` of the current index state, with the groups
        inside ``folder`` / with ``label`` only -> (report, facets of all the groups).  The groups
        are computed once per state and request shape (the last few kept, and computed again in
        the background when the index changes); the decisions are read afresh and applied for
        every request (a decision changes no image row)."""
        from semhash.duplicates import apply_decisions, filter_groups

        shape = (tier, near_threshold, radius, keep, min_quality)
        report, facets = self._groups(self._current(), *shape)
        self.warm_duplicates(shape)
        return filter_groups(apply_decisions(report, self._decisions()), folder, label), facets

    def _decisions(self) -> list[tuple]:
        from semhash.duplicates import read_decisions

        with self._raw() as conn:
            return read_decisions(conn, self._db is not None and self._db.has_near_tier)

    def warm_duplicates(self, shape: tuple = ("near", None, None, "largest", None)) -> None:
        """Keep the duplicates listing of ``shape`` (tier, near threshold, radius, keep rule,
        min quality) ready: computed now in the background if it is not, and again whenever
        the index changes.  The two shapes asked for last are kept warm."""
        if shape in self._warm_shapes[-2:]:
            return
        self._warm_shapes = [s for s in self._warm_shapes if s != shape][-1:] + [shape]
        state = self._state
        if state is not None:
            self._warm(state, [shape])

    def _warm(self, state: _State, shapes: list[tuple] | None = None) -> None:
        todo = list(self._warm_shapes if shapes is None else shapes)
        if not todo or state.cache is None or self._db is None or not self._db.has_near_tier:
            return

        def compute() -> None:
            for shape in todo:
                if self._state is not state:
                    return  # the index moved on meanwhile: the next state warms itself
                try:
                    self._groups(state, *shape)
                except Exception:  # noqa: BLE001 -- a request for it meets the same error, as one line
                    return

        threading.Thread(target=compute, name="semhash-warm-duplicates", daemon=True).start()

    def _groups(self, state: _State, tier: str = "near", near_threshold: int | None = None, radius: int | None = None,
                keep: str = "largest", min_quality: int | None = None) -> tuple[Any, Any]:  # fmt: skip
        from semhash.duplicates import DuplicatesError, facets_of, find_duplicates
        from semhash.tiers import MIN_QUALITY

        key = ("duplicates", tier, near_threshold, radius, keep, min_quality)
        with state.lock_for("duplicates"):
            found = state.derived.get(key)
            if found is None:
                try:
                    with self._db_errors():
                        report = find_duplicates(self.location, tier=tier, near_threshold=near_threshold, radius=radius,
                                                 keep=keep, min_quality=MIN_QUALITY if min_quality is None else min_quality,
                                                 decided=False)  # fmt: skip
                except DuplicatesError as exc:
                    raise BadQuery(str(exc)) from None
                found = (report, facets_of(report))
                cached = [k for k in state.derived if isinstance(k, tuple) and k[:1] == ("duplicates",)]
                for old in cached[: max(0, len(cached) - 7)]:
                    del state.derived[old]
                state.derived[key] = found
        return found

    def record_decision(self, key: str, decision: str, keeper: str | None) -> str:
        """Record a decision about the group ``key`` of a listing of this index state
        (``serve --review``); -> the key.  Listings read the decisions afresh, so the next
        one shows it.  A key no current listing has: the group changed (409)."""
        from semhash.duplicates import DuplicatesError, record_decision

        state = self._current()
        reports = [found[0] for k, found in list(state.derived.items()) if isinstance(k, tuple) and k[:1] == ("duplicates",)]
        group = next((g for r in reports or [self._groups(state)[0]] for g in r.groups if g.key == key), None)
        if group is None:
            raise Conflict(f"no group {key[:12]}... in the index now: it changed since it was listed; reload the groups")
        try:
            with self._db_errors():
                key = record_decision(self.location, group.paths, decision, keeper)
        except DuplicatesError as exc:
            raise BadQuery(str(exc)) from None
        return key

    def accept_suggestions(self, tier: str = "near", near_threshold: int | None = None, radius: int | None = None,
                           keep: str = "largest", min_quality: int | None = None, folder: str | None = None,
                           label: str | None = None) -> int:  # fmt: skip
        """Decide "keep the suggested keeper" for every undecided group of the listing (inside
        ``folder`` / with ``label`` if given), in one transaction -> how many were decided."""
        from semhash.duplicates import DuplicatesError, record_decisions

        report, _ = self.duplicates(tier, near_threshold, radius, keep, min_quality, folder, label)
        todo = [(g.paths, "keep", g.keeper.path) for g in report.groups if g.decision is None]
        try:
            with self._db_errors():
                record_decisions(self.location, todo)
        except DuplicatesError as exc:
            raise BadQuery(str(exc)) from None
        return len(todo)

    def plan(self, tier: str = "near", near_threshold: int | None = None, radius: int | None = None,
             keep: str = "largest", min_quality: int | None = None) -> dict[str, Any]:  # fmt: skip
        """The review's plan (:func:`semhash.duplicates.plan_of`) for this listing."""
        from semhash.duplicates import plan_of

        report, _ = self.duplicates(tier, near_threshold, radius, keep, min_quality)
        return plan_of(report, str(self.path))

    def status(self) -> dict[str, Any]:
        """:func:`semhash.index.index_info` (computed once per index state), plus whether the
        model loads and which search cache answers."""
        state = self._current()
        with state.lock_for("status"):
            info = state.derived.get("status")
            if info is None:
                with self._db_errors():
                    info = index_info(self.path)
                state.derived["status"] = info
        model_error = None
        if state.cache is not None:
            try:
                self._hasher(state)
            except SemhashError as exc:
                model_error = str(exc)
        # the keys the web promises, whatever else index_info grows or drops
        return {
            "index_path": str(self.path),
            "count": int(info.get("count", 0)),
            "labels": int(info.get("labels", 0)),
            "model": state.meta.model_name,
            "model_fingerprint": state.meta.model_fingerprint,
            "bits": state.meta.n_bits,
            "input_shape": list(state.meta.input_shape) if state.meta.input_shape else None,
            "near_code": state.meta.near_scheme.describe(),
            "near_threshold": state.meta.near_scheme.threshold,
            "created_at": state.meta.created_at,
            "last_indexed_at": info.get("last_indexed_at"),
            "generation": state.meta.generation,
            "schema_version": state.meta.schema_version,
            "empty": state.cache is None or int(info.get("count", 0)) == 0,
            "model_available": state.cache is not None and model_error is None,
            "model_error": model_error,
            "search_cache": None if state.cache is None else f"{state.cache.kind} ({state.cache.source})",
        }

    # -- files ----------------------------------------------------------------------------
    def image_file(self, image_id: int) -> FileBytes:
        """The bytes of row ``image_id``'s file, after every safety check (see the module doc);
        NotFound otherwise.  Never reached through a client-given path.  A file a browser
        cannot show (HEIC, RAW, TIFF) comes as a JPEG of its picture, at most
        :data:`MAX_VIEW_SIDE` pixels a side."""
        from PIL import Image

        from semhash.formats import is_raw

        record = self.image(image_id)
        data, st = self._read_row_file(record)
        path = Path(record.path)
        try:
            if not is_raw(path):
                with Image.open(io.BytesIO(data), formats=image_formats()) as img:
                    fmt = str(img.format)
                if fmt in BROWSER_FORMATS:
                    return FileBytes(data, Image.MIME.get(fmt, "application/octet-stream"), _etag(record.id, st, "file"), path.name)
            # HEIC, RAW, TIFF...: a browser shows none of them; a JPEG of the picture instead
            view = _open_for_display(data, path)
            view.thumbnail((MAX_VIEW_SIDE, MAX_VIEW_SIDE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            view.convert("RGB").save(out, "JPEG", quality=90)
        except Exception:  # noqa: BLE001 -- anything Pillow cannot identify is not served
            raise NotFound(f"image {image_id}: its file is no longer a readable image") from None
        return FileBytes(out.getvalue(), "image/jpeg", _etag(record.id, st, "view"), path.stem + ".jpg")

    def thumbnail(self, image_id: int, size: int = 128) -> FileBytes:
        """Row ``image_id``'s image scaled down to fit ``size`` x ``size`` pixels, as PNG
        (small images are left at their size: the page scales them up without smoothing)."""
        from PIL import Image

        from semhash.formats import is_raw

        lo, hi = THUMBNAIL_SIZES
        if not lo <= int(size) <= hi:
            raise BadQuery(f"thumbnail size {size} is outside {lo}..{hi}")
        record = self.image(image_id)
        data, st = self._read_row_file(record)
        key = (record.id, record.path, st.st_mtime_ns, st.st_size, int(size))
        with self._thumbnail_lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        try:
            if not is_raw(Path(record.path)):
                with Image.open(io.BytesIO(data), formats=image_formats()) as img:
                    if img.size[0] * img.size[1] > self.limits.max_pixels:
                        raise NotFound(f"image {image_id}: too large for a thumbnail ({img.size[0]}x{img.size[1]})")
            shown = _displayable(_open_for_display(data, Path(record.path)))
            shown.thumbnail((int(size), int(size)))
            out = io.BytesIO()
            shown.save(out, format="PNG")
        except NotFound:
            raise
        except Exception:  # noqa: BLE001 -- a file that stopped being an image is not served
            raise NotFound(f"image {image_id}: its file is no longer a readable image") from None
        thumb = FileBytes(out.getvalue(), "image/png", _etag(record.id, st, f"thumb{size}"), Path(record.path).stem + ".png")
        with self._thumbnail_lock:
            self._thumbnails[key] = thumb
            while len(self._thumbnails) > 2048:
                self._thumbnails.popitem(last=False)
        return thumb

    def _read_row_file(self, record: ImageRecord) -> tuple[bytes, os.stat_result]:
        try:
            path = file_path(record.path)
        except ValueError:  # a row no indexer wrote (not a path key)
            raise NotFound(f"image {record.id}: its stored path is not a path key") from None
        text = str(path)
        if "\x00" in text:  # no file name holds one (an older import let such rows in)
            raise NotFound(f"image {record.id}: its stored path contains a NUL byte")
        if not path.is_absolute() or ".." in path.parts or os.path.normpath(text) != text:
            raise NotFound(f"image {record.id}: its stored path is not an absolute, normalised path")
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise NotFound(f"image {record.id}: its file is not an image file")
        root = os.path.realpath(_indexed_root(path, record.label))
        real = os.path.realpath(text)
        if os.path.commonpath([real, root]) != root:
            raise NotFound(f"image {record.id}: its file lies outside the folder it was indexed from")
        try:  # O_NOFOLLOW: a link swapped in after the check above is refused, not followed
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            raise NotFound(f"image {record.id}: its file is missing or unreadable") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"image {record.id}: its path is not a regular file")
            if st.st_size > MAX_SERVED_FILE_BYTES:
                raise NotFound(f"image {record.id}: its file is too large to serve ({st.st_size:,} bytes)")
            with os.fdopen(os.dup(fd), "rb") as fh:
                return fh.read(), st
        finally:
            os.close(fd)

    # -- evaluation report ----------------------------------------------------------------
    def latest_report(self) -> EvaluationReport | None:
        """The newest report.json under HOME/reports/ written for the index's model."""
        from semhash.report import FIGURES, format_headline

        model = self.model_name
        if model is None:
            return None
        best: tuple[float, Path, dict] | None = None
        for path in self.workspace.reports_dir.glob("*/report.json"):
            try:
                written = path.stat().st_mtime
                if best is not None and written <= best[0]:
                    continue
                result = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(result, dict) and result.get("model") == model:
                best = (written, path.parent, result)
        if best is None:
            return None
        written, directory, result = best
        try:
            headline = format_headline(result)
        except (KeyError, TypeError, ValueError, IndexError):
            headline = ""
        figures = [name for name in FIGURES if (directory / name).is_file()]
        return EvaluationReport(model, directory.name, directory, headline, result, figures, written)

    def report_figure(self, name: str) -> Path:
        """One figure file of :meth:`latest_report`, by its file name (only the known names)."""
        report = self.latest_report()
        if report is None or name not in report.figures:
            raise NotFound(f"no figure {name!r} in the latest evaluation report")
        path = report.directory / name
        real, root = os.path.realpath(path), os.path.realpath(report.directory)
        if os.path.commonpath([real, root]) != root or not os.path.isfile(real):
            raise NotFound(f"no figure {name!r} in the latest evaluation report")
        return Path(real)


# --------------------------------------------------------------------------- path helpers
def display_path(key: str) -> str:
    """A stored path key as text for people and JSON (:func:`semhash.index.pathkeys.printable`:
    a key already is printable text, undecodable bytes written ``\\xNN``)."""
    return printable(key)


def file_path(key: str) -> Path:
    """A stored path key as the file-system path it names (exact bytes, any file name)."""
    return Path(key_path(key))


def _indexed_root(path: Path, label: str | None) -> Path:
    """The folder a row was indexed from: its label (a key, like the path) is the name of the
    first-level subfolder under it (none for a file directly in the folder).  Where the
    label's name occurs twice among the ancestors, the deeper (narrower) folder is taken: a
    file is refused rather than served from a folder wider than the one indexed."""
    if label is not None:
        try:
            name = key_path(label)
        except ValueError:
            return path.parent
        for ancestor in path.parents:
            if ancestor.name == name and ancestor.parent != ancestor:
                return ancestor.parent
    return path.parent


def _etag(image_id: int, st: os.stat_result, variant: str) -> str:
    raw = f"{image_id}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}:{variant}".encode()
    return '"' + hashlib.sha256(raw).hexdigest()[:24] + '"'


def _displayable(img: Any) -> Any:
    """Any Pillow mode -> L, LA, RGB or RGBA (16-bit and float images scaled to 0..255)."""
    from PIL import Image

    if img.mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if img.mode in ("1", "P", "PA"):
        return img.convert("RGBA")
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size and arr.max() > 0 else 1.0
        return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")
