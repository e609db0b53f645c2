"""Image folder -> rows in the index: incremental, batched, crash-safe, safe to run twice at once.

A run walks the folder, compares each file's size and mtime with its row, and only reads
what is new or changed (a changed file whose bytes hash the same just gets its mtime
refreshed).  Work is decoded, hashed and committed ``batch_size`` files at a time, each batch
one SQLite transaction, so memory stays flat on large folders and an interrupted run keeps
everything committed before it.  Rows are written as upserts keyed on the path, so two runs
over the same or overlapping folders both finish, with every file once.  At the end, rows
under *this* folder whose file is gone are removed (a row whose file still exists but was not
walked, e.g. in a folder that could not be read, stays); rows from other folders are never
touched.  Finally the lookup cache is refreshed.

Paths and labels are stored as keys (:mod:`semhash.index.pathkeys`), so any file name works.
A row's label is set when its file is first indexed: the name of the first-level subfolder of
the folder given to that run.  Indexing from another root (a subfolder, a parent) leaves
existing labels as they are and counts the rows whose label it would have set differently;
``relabel=True`` sets them from this root instead.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from sqlalchemy import delete, func, select, update
from tqdm import tqdm

from semhash.data import WalkReport, check_folder, decode_views, iter_image_files
from semhash.errors import DatasetError, ImageError, IndexError_, ModelError
from semhash.hashing import to_signed64
from semhash.lifetime import die_with_parent
from semhash.index.db import (
    ImageRow,
    IndexDB,
    IndexLocation,
    bind_model,
    bind_near_model,
    bump_generation,
    chunked,
    database_errors,
    delete_all_rows,
    is_damage,
    key_range,
    open_index,
    read_meta,
    upsert_images,
    utc_now,
)
from semhash.index.pathkeys import key_path, path_key, printable
from semhash.index.search import refresh_lookup
from semhash.near_codes import PDQ
from semhash.workspace import ModelInfo

# columns a run sets on a row another run inserted first (never its label: first indexed wins)
_CONTENT_COLUMNS = ("content_hash", "size", "mtime", "code", "indexed_at", "near_code", "near_variants", "near_quality", "width", "height",
                    "taken_at", "camera", "format")


@dataclass
class IndexSummary:
    """What one indexing run did (counts are files, ``total`` is rows in the whole index)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # image files that could not be read or decoded
    removed: int = 0
    total: int = 0
    hidden: int = 0  # hidden files and folders not walked
    other_files: int = 0  # files without an image extension
    videos: int = 0  # video files (not images): skipped
    symlinked_folders: int = 0  # links to folders, not followed
    unreadable_folders: int = 0  # folders that could not be listed (their rows are kept)
    labels_kept: int = 0  # rows whose label differs from what this root gives, left as they were
    relabelled: int = 0  # rows given this root's label (relabel=True)
    index_path: Path | None = None
    lookup_path: Path | None = None
    damaged_index_moved_to: Path | None = None  # rebuild set a damaged index file aside here
    skipped_files: list[str] = field(default_factory=list)
    near_model: str = "pdq"  # what made the near codes: "pdq" or a model's name


class _Row(NamedTuple):
    id: int
    size: int
    mtime: float
    content_hash: str
    label: str | None
    complete: bool = True  # has every tier's code and the photo's facts (rows indexed before schema 3 / 4 lack them)


class _Work(NamedTuple):
    path: Path
    key: str
    label: str | None  # the label to store (the row's own unless relabelling)
    relabels: bool  # storing it changes the row's label
    size: int
    mtime: float
    row: _Row | None  # None for a file with no row in this run's snapshot


def _os_cause(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return f"cannot read ({exc.strerror or exc})"


def _image_message(path: Path, exc: ImageError) -> str:
    """ImageError says "<path>: <cause>"; print the path as its key (escaped bytes)."""
    text, prefix = str(exc), f"{path}: "
    cause = text[len(prefix) :] if text.startswith(prefix) else printable(text)
    return f"{path_key(path)}: {cause}"


def file_error(path: Path, exc: OSError) -> str:
    """The line a file that cannot be stat'ed or read gets, "<path key>: <cause>", as a local
    run words it (the Ray engine's workers use it too; :func:`hash_batch` words the rest)."""
    return f"{path_key(path)}: {_os_cause(exc)}"


def file_is_gone(key: str) -> bool:
    """Whether the file a row names no longer exists (as a regular file).  A file that cannot
    be checked (permission denied on a folder above it) is not gone."""
    try:
        st = os.stat(key_path(key))
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(st.st_mode)


# --------------------------------------------------------------------------- hashing a batch
class ImageFacts(NamedTuple):
    """What one decode tells besides the semantic code: the near tier's PDQ code (32 bytes),
    the codes of its 7 rotations and mirrors (224 bytes), PDQ's quality, and the image's
    pixel size, format, capture time and camera (:mod:`semhash.exif`).  A near model's code
    has no variants and no quality (None)."""

    near_code: bytes
    near_variants: bytes | None
    near_quality: int | None
    width: int
    height: int
    format: str | None = None
    taken_at: float | None = None
    camera: str | None = None

    def columns(self) -> dict:
        return self._asdict()


# What hashing one file gave: ("code", digest, code, facts), ("same", digest, None, None)
# when its bytes hash as its row already records (the codes are kept), or ("skip", message,
# None, None).
_Outcome = tuple[str, str, "int | None", "ImageFacts | None"]


def hash_batch(hasher, items: list[tuple[Path, str | None]], near_coder=None) -> list[_Outcome]:
    """Read, sha256, decode and hash one batch of ``(path, content hash its row records)``,
    in order; the messages are the ones a run prints for an unreadable file.  Each file is
    read once and decoded once: its content hash (the exact tier), its near codes (PDQ, or
    ``near_coder``'s: :mod:`semhash.near_codes`) and its semantic code all come from the same
    bytes, even if it is rewritten while the batch runs."""
    from semhash.near_codes import NearCoder

    near_coder = near_coder or NearCoder()
    outcomes: list[list] = []
    images: list[np.ndarray] = []
    near_images: list[np.ndarray] = []
    photos: list[tuple] = []  # (width, height, format, taken_at, camera) per decoded file
    for path, known in items:
        try:
            data = path.read_bytes()
        except OSError as exc:
            outcomes.append(["skip", file_error(path, exc), None])
            continue
        digest = hashlib.sha256(data).hexdigest()
        if known is not None and digest == known:
            outcomes.append(["same", digest, None])
            continue
        try:
            decoded = decode_views(path, hasher.input_shape, data=data)
        except ImageError as exc:
            outcomes.append(["skip", _image_message(path, exc), None])
            continue
        images.append(decoded.array)
        near_images.append(decoded.near)
        photos.append((decoded.width, decoded.height, decoded.format, decoded.taken_at, decoded.camera))
        outcomes.append(["code", digest, len(images) - 1])
    codes = hasher.hash(np.stack(images)).tolist() if images else []
    facts = [
        ImageFacts(near[0].tobytes(), near[1:].tobytes() if len(near) > 1 else None, quality, *photo)
        for (near, quality), photo in zip(near_coder.codes(near_images), photos)
    ]
    return [
        (kind, text, codes[ref], facts[ref]) if kind == "code" else (kind, text, None, None)
        for kind, text, ref in outcomes
    ]


_worker_hasher = None
_worker_near_coder = None


def _init_worker(hasher, parent_pid: int, near_coder=None) -> None:
    """Once per pool process: end with the indexing process however it ends (SIGKILL and
    the out-of-memory killer included), the model (sent once, when the process starts) and
    one BLAS thread, since the pool already runs one process per core."""
    global _worker_hasher, _worker_near_coder
    die_with_parent(parent_pid)
    _worker_hasher, _worker_near_coder = hasher, near_coder
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def _hash_in_worker(items: list[tuple[Path, str | None]]) -> list[_Outcome]:
    return hash_batch(_worker_hasher, items, _worker_near_coder)


def _start_pool(hasher, workers: int, near_coder=None):
    """A pool of ``workers`` processes, each holding the model once.  Forked where the
    platform can (a worker starts in milliseconds and inherits the model), unless TensorFlow
    is loaded in this process (``semhash demo`` indexes right after training): a fork copies
    only the calling thread, and TensorFlow's other threads may hold locks the child would
    wait on forever; then the workers are spawned (a second or so to start, the model sent
    once).  Measured: forked 2.08x one process on 100,000 PNGs, spawned 1.2x (docs/BENCHMARKS.md)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    fork = "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules
    if fork:  # what every worker needs, imported once here rather than in each of them (~0.1 s each)
        from PIL import Image

        from semhash.perceptual import _pdq

        _pdq()
        Image.init()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork" if fork else "spawn"),
                               initializer=_init_worker, initargs=(hasher, os.getpid(), near_coder))  # fmt: skip
    if fork:
        pool.submit(int).result()  # every worker forked now, before a progress bar starts its thread
    return pool


class _Run:
    """State of one indexing run (kept off the public function to keep it readable).

    Batches are hashed in this process (``pool`` None) or in a process pool, at most
    ``max_pending`` batches in flight (memory stays flat); their rows are committed here, one
    transaction per batch, in the order the batches were made (the SQLite writer stays one)."""

    def __init__(self, db: IndexDB, hasher, summary: IndexSummary, warn, bar, pool=None, max_pending: int = 1,
                 near_coder=None):  # fmt: skip
        self.db = db
        self.hasher = hasher
        self.near_coder = near_coder
        self.bytes_read = 0
        self.summary = summary
        self.warn = warn
        self.bar = bar
        self.pool = pool
        self.max_pending = max(1, max_pending)
        self.pending: deque = deque()
        self.work: list[_Work] = []
        self.relabel: list[dict] = []

    def skip(self, message: str) -> None:
        self.summary.skipped += 1
        self.summary.skipped_files.append(message)
        self.warn(message)

    def flush(self) -> None:
        """Send the pending files to be hashed; commit every batch whose hashing is done once
        more than ``max_pending`` are in flight."""
        work, self.work = self.work, []
        relabel, self.relabel = self.relabel, []
        # a row without every tier's code is hashed again even when its bytes are the same
        items = [(w.path, None if w.row is None or not w.row.complete else w.row.content_hash) for w in work]
        if self.pool is None:
            self._commit(work, relabel, hash_batch(self.hasher, items, self.near_coder) if items else [])
            return
        from concurrent.futures.process import BrokenProcessPool

        try:
            self.pending.append((work, relabel, self.pool.submit(_hash_in_worker, items) if items else None))
        except BrokenProcessPool:
            raise self._died() from None
        while len(self.pending) > self.max_pending:
            self._finish_oldest()

    def drain(self) -> None:
        """Commit every batch still in flight."""
        while self.pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        from concurrent.futures.process import BrokenProcessPool

        work, relabel, future = self.pending.popleft()
        try:
            outcomes = future.result() if future is not None else []
        except BrokenProcessPool:
            raise self._died() from None
        self._commit(work, relabel, outcomes)

    def _died(self) -> IndexError_:
        return IndexError_(
            f"{self.db.path}: a hashing process died (out of memory?); every batch committed before is kept: "
            "run again, or with --workers 1"
        )

    def _commit(self, work: list[_Work], relabel: list[dict], outcomes: list[_Outcome]) -> None:
        """Write one hashed batch in one transaction."""
        refresh: list[dict] = []  # same bytes, new stat: keep the code
        drop: list[int] = []  # indexed before, unreadable now: the old code is stale
        skipped_msgs: list[str] = []
        relabelled = len(relabel)
        now = utc_now()
        new_rows, changed_rows = [], []
        for w, (kind, text, code, facts) in zip(work, outcomes):
            if kind == "skip":
                skipped_msgs.append(text)
                if w.row is not None:
                    drop.append(w.row.id)
                continue
            relabelled += w.relabels
            if kind == "same":
                refresh.append({"id": w.row.id, "size": w.size, "mtime": w.mtime, "label": w.label})  # type: ignore[union-attr]
                continue
            values = {
                "path": w.key,
                "content_hash": text,
                "size": w.size,
                "mtime": w.mtime,
                "label": w.label,
                "code": to_signed64(int(code)),  # type: ignore[arg-type]
                "indexed_at": now,
                **facts.columns(),  # type: ignore[union-attr]
            }
            (new_rows if w.row is None else changed_rows).append(values)

        if new_rows or changed_rows or refresh or relabel or drop:
            with self.db.write_session() as s, s.begin():
                # upserts on the path: a row another run added meanwhile is updated, not doubled
                upsert_images(s, new_rows, _CONTENT_COLUMNS)
                upsert_images(s, changed_rows, (*_CONTENT_COLUMNS, "label"))
                if refresh:
                    s.execute(update(ImageRow), refresh)
                if relabel:
                    s.execute(update(ImageRow), relabel)
                for ids in chunked(drop):
                    s.execute(delete(ImageRow).where(ImageRow.id.in_(ids)))
                bump_generation(s)
        # counted only once committed, so an interrupted batch is not reported as done
        self.summary.added += len(new_rows)
        self.summary.updated += len(changed_rows)
        self.summary.unchanged += len(refresh)
        self.summary.relabelled += relabelled
        for message in skipped_msgs:
            self.skip(message)
        self.bytes_read += sum(w.size for w, (kind, *_) in zip(work, outcomes) if kind != "skip")
        if not self.bar.disable:
            self.bar.set_postfix_str(f"{self.bytes_read / 1e6:,.1f} MB read")
        self.bar.update(len(work))


def _bind(db: IndexDB, model: ModelInfo, hasher, rebuild: bool, near_scheme=None) -> int:
    """Tie the index to ``model`` (or check it already is).  Returns rows dropped by rebuild.

    An index never mixes encoders: codes from two models are not comparable, so a different
    fingerprint or bit width is refused unless the caller asks to rebuild, which deletes
    every row and re-binds in the same transaction.  Nothing is written (so no write lock is
    needed, and a read-only index can still be brought up to date when nothing changed) when
    the index is already bound to this encoder.
    """
    fingerprint = hasher.fingerprint
    if not rebuild:
        meta = db.meta()
        if meta.bound and meta.model_name == model.name and (meta.model_fingerprint, meta.n_bits) == (
            fingerprint,
            hasher.n_bits,
        ):
            return 0
    with db.write_session() as s, s.begin():
        meta = read_meta(s, db.path)
        removed = 0
        if rebuild:
            removed = delete_all_rows(s)
        elif meta.bound and (meta.model_fingerprint != fingerprint or meta.n_bits != hasher.n_bits):
            raise IndexError_(
                f"{db.path}: index was built with model {meta.model_name!r} ({meta.n_bits} bits, "
                f"fingerprint {meta.model_fingerprint}), not model {model.name!r} ({hasher.n_bits} bits, "
                f"fingerprint {fingerprint}): add to it with its own model (--model {meta.model_name}), "
                f"or re-index everything with {model.name!r} (--rebuild)"
            )
        elif meta.bound and meta.model_name == model.name:
            return 0  # bound by another run while we waited for the lock
        # new index, rebuild, or the same encoder saved under another name (codes identical)
        bind_model(s, name=model.name, fingerprint=fingerprint, n_bits=hasher.n_bits, input_shape=hasher.input_shape)
        if rebuild or not meta.bound:
            bind_near_model(s, near_scheme or PDQ)
        bump_generation(s)
        return removed


def _near_coder(db: IndexDB, model: ModelInfo, near_model, rebuild: bool):
    """The coder of the near codes this run writes: ``near_model`` (a :class:`ModelInfo`, or
    "pdq"), else the one the index is bound to (its model loaded from the folder ``model``
    is in), else PDQ.  A different one than the index's is refused unless ``rebuild``: an
    index never mixes two kinds of near code."""
    from semhash.near_codes import PDQ_NAME, ModelNearCoder, NearCoder, NearScheme, coder_for

    meta = db.meta()
    current = meta.near_scheme if meta.bound else None
    if near_model is None:
        scheme = current if current is not None and not rebuild else PDQ
        try:
            return coder_for(scheme, lambda name: _sibling_model(model, name).load_hasher())
        except ModelError as exc:
            raise IndexError_(
                f"{db.path}: the index's near tier uses model {scheme.model!r}, which cannot be loaded ({exc}): "
                f"pass --near-model NAME with --rebuild to change it"
            ) from None
    if near_model == PDQ_NAME:
        coder = NearCoder()
    else:
        hasher = near_model.load_hasher()
        coder = ModelNearCoder(NearScheme.for_model(near_model.name, hasher), hasher)
        if current is not None and current.fingerprint == coder.scheme.fingerprint:  # same encoder: its threshold kept
            coder.scheme = current
    scheme = coder.scheme
    if current is not None and not rebuild and (current.model, current.fingerprint) != (scheme.model, scheme.fingerprint):
        raise IndexError_(
            f"{db.path}: the index's near codes come from {current.describe()}, not {scheme.describe()}: "
            f"add to it with --near-model {current.name}, or re-index everything with --rebuild"
        )
    return coder


def _sibling_model(model: ModelInfo, name: str) -> ModelInfo:
    """The model ``name`` from the models folder ``model`` is in."""
    from semhash.workspace import Workspace

    if name == model.name:
        return model
    return Workspace(model.directory.parent.parent).model(name)


def _rows_where(s, where) -> dict[str, _Row]:
    """The rows matching ``where`` as the run compares them with the files, by path key."""
    stmt = select(
        ImageRow.path, ImageRow.id, ImageRow.size, ImageRow.mtime, ImageRow.content_hash, ImageRow.label,
        ImageRow.near_code.is_not(None) & ImageRow.format.is_not(None),
    ).where(where)  # fmt: skip
    return {p: _Row(i, size, mtime, h, label, bool(done)) for p, i, size, mtime, h, label, done in s.execute(stmt).tuples()}


def _existing(db: IndexDB, root_key: str) -> dict[str, _Row]:
    low, high = key_range(root_key)
    with db.session() as s, s.begin():
        return _rows_where(s, (ImageRow.path >= low) & (ImageRow.path < high))


def _remove(db: IndexDB, ids: list[int]) -> None:
    if not ids:
        return
    with db.write_session() as s, s.begin():
        for chunk in chunked(ids):
            s.execute(delete(ImageRow).where(ImageRow.id.in_(chunk)))
        bump_generation(s)


def rows_under(index_path: str | Path, folder: str | Path) -> int:
    """How many rows the index holds under ``folder`` (0 when there is no readable index):
    for hints in error messages only."""
    low, high = key_range(path_key(Path(folder).expanduser().resolve()))
    try:
        location = IndexLocation.parse(index_path)
        if location.file is not None and not location.file.is_file():
            return 0
        with open_index(location) as db, database_errors(db.path), db.session() as s, s.begin():
            stmt = select(func.count()).select_from(ImageRow).where(ImageRow.path >= low, ImageRow.path < high)
            return int(s.scalar(stmt) or 0)
    except IndexError_:
        return 0


def _kept_rows_hint(index_path: str | Path, folder: str | Path) -> str:
    n = rows_under(index_path, folder)
    if not n:
        return ""
    shown = printable(str(folder))
    return f" ({n} indexed images under it stay in the index: `semhash remove {shown}` drops them)"


def _set_aside(path: Path) -> Path:
    """Move a damaged index (and its WAL) out of the way, never overwriting anything."""
    target = path.with_name(path.name + ".damaged")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.damaged-{n}")
        n += 1
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{path}{suffix}")
        if extra.exists():
            if suffix == "-wal":
                os.replace(extra, Path(f"{target}{suffix}"))
            else:
                extra.unlink()
    return target


def _open_for_indexing(index_path: str | Path, rebuild: bool, summary: IndexSummary, warn) -> IndexDB:
    """Open (or create) the index.  With ``rebuild``, a damaged file is set aside (kept,
    renamed ``*.damaged``) and a new one started: rebuild drops every row anyway."""
    try:
        db = open_index(index_path, create=True)
        if not rebuild or db.engine.dialect.name != "sqlite":
            return db
        try:
            with database_errors(db.path), db.session() as s, s.begin():
                result = [r[0] for r in s.connection().exec_driver_sql("PRAGMA quick_check(1)")]
        finally:
            db.close()
        if result == ["ok"]:
            return open_index(index_path)
        cause = f"quick_check: {result[0]}"
    except IndexError_ as exc:
        if not (rebuild and is_damage(exc)):
            raise
        cause = str(exc)
    path = Path(index_path).expanduser().absolute()
    moved = _set_aside(path)
    summary.damaged_index_moved_to = moved
    warn(f"{path}: the index was damaged ({cause}); kept it as {moved} and started a new one")
    return open_index(path, create=True)


def index_folder(
    folder: str | Path,
    model: ModelInfo,
    index_path: str | Path,
    *,
    rebuild: bool = False,
    relabel: bool = False,
    batch_size: int = 256,
    progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    near_model: "ModelInfo | str | None" = None,
) -> IndexSummary:
    """Bring the index up to date with every image file under ``folder``.

    Files are read, decoded and hashed by ``workers`` processes (default: one per CPU; 1
    hashes in this process), ``batch_size`` files a task, a few batches in flight; this
    process alone writes the index, one transaction per batch.

    Unreadable files are skipped with ``on_warning("<path key>: <cause>")`` and the run goes
    on; so are folders that cannot be listed (their rows stay).  Raises DatasetError for a
    missing folder or one without image files (saying how many rows the index still holds
    under it), and IndexError_ (one line naming the index file) when the index belongs to
    another model (unless ``rebuild``) or cannot be read or written.

    ``engine="ray"`` hashes the new and changed files on Ray instead
    (:mod:`semhash.index.ray_engine`; the cluster at ``address``, else a local Ray on this
    machine's cores; ``workers`` hashing actors, default every CPU the cluster has) and loads
    them with the bulk import; everything else (which files, labels, removals, the lines of
    bad files) is as above.

    ``near_model``: where the near tier's codes come from (:mod:`semhash.near_codes`): a
    trained model (:class:`ModelInfo`, e.g. of the ``copy`` kind) or "pdq"; None keeps what
    the index has (PDQ for a new one).  Changing it needs ``rebuild``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}: use 'local' or 'ray'")
    if engine != "ray" and address is not None:
        raise ValueError("address is for engine='ray'")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if engine == "ray":
        from semhash.index import ray_engine

        ray_engine.require_ray(address)  # before anything is read or written
    if isinstance(near_model, str) and near_model != "pdq":
        raise ValueError(f"near_model is a ModelInfo or 'pdq', not {near_model!r}")

    def warn(message: str) -> None:
        if on_warning is not None:
            on_warning(message)

    if not Path(folder).exists():
        raise DatasetError(f"{printable(str(folder))}: no such folder{_kept_rows_hint(index_path, folder)}")
    root = check_folder(folder).resolve()
    walk = WalkReport()
    files = list(iter_image_files(root, walk))
    for unreadable, exc in walk.unreadable_folders:
        if unreadable == root:
            raise DatasetError(f"{printable(str(folder))}: cannot read the folder ({_os_cause(exc)})")
    if not files:
        raise DatasetError(f"{printable(str(folder))}: no image files found{_kept_rows_hint(index_path, root)}")
    hasher = model.load_hasher()
    summary = IndexSummary(
        hidden=walk.hidden,
        other_files=walk.other_files,
        videos=walk.videos,
        symlinked_folders=walk.symlinked_folders,
        unreadable_folders=len(walk.unreadable_folders),
    )
    for unreadable, exc in walk.unreadable_folders:
        warn(f"{path_key(unreadable)}: cannot read the folder ({_os_cause(exc)}): its indexed images are kept")

    local_workers = default_workers() if workers is None else int(workers)
    # a pool only where there is more than one batch to share out (and not for Ray's runs)
    pool_workers = local_workers if engine == "local" and local_workers > 1 and len(files) > 1 else 0
    ray_options = {"address": address, "workers": workers} if engine == "ray" else None
    _index_files(index_path, root, files, model, hasher, summary, warn, rebuild, relabel, batch_size, progress,
                 pool_workers, 2 * local_workers, ray_options, near_model)  # fmt: skip
    if summary.labels_kept:
        warn(
            f"{summary.labels_kept} indexed images kept the label they were first indexed with, which differs "
            f"from the first-level folder under {path_key(root)}: pass --relabel to relabel them from this folder"
        )
    return summary


def default_workers() -> int:
    """Hashing processes by default: one per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _index_files(index_path, root: Path, files, model, hasher, summary: IndexSummary, warn, rebuild: bool,
                 relabel: bool, batch_size: int, progress: bool, pool_workers: int, max_pending: int,
                 ray_options: dict | None = None, near_model=None) -> None:  # fmt: skip
    with _open_for_indexing(index_path, rebuild, summary, warn) as db, database_errors(db.path):
        summary.index_path, summary.lookup_path = db.path, db.lookup_path
        near_coder = _near_coder(db, model, near_model, rebuild)
        if ray_options is not None and not near_coder.scheme.is_pdq:
            raise IndexError_(f"{db.path}: --engine ray hashes near codes with PDQ only: index with a near model on this machine")
        summary.removed += _bind(db, model, hasher, rebuild, near_coder.scheme)
        summary.near_model = near_coder.scheme.name
        existing = _existing(db, path_key(root))
        _hash_files(db, root, files, model, hasher, summary, relabel, batch_size, progress, pool_workers, max_pending,
                    ray_options, near_coder, existing, warn)  # fmt: skip
        refresh_lookup(db)


#: a batch also ends at this many bytes of files: 256 photos of a few MB are minutes of work,
#: and a pool shares out whole batches (2 workers were 1.54x one on 200 photos in one batch)
BATCH_BYTES = 16 << 20


@contextmanager
def _one_blas_thread(hashing_here: bool):
    """One BLAS thread while this process hashes (as each pool worker does): a batch's
    forward pass is too small to share out, and idle BLAS threads spinning between batches
    cost as much CPU as the decoding (12-megapixel JPEGs, one process: 35 ms of CPU a photo
    with the default threads, docs/BENCHMARKS.md)."""
    if not hashing_here:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(1):
        yield


#: a pool gets at least this many batches per worker: whole batches are shared out, so a few
#: large ones leave a worker idle at the end (40 WebP photos, 22 MB: 2 batches of 30 and 10
#: files, 2 workers 1.09x one; docs/BENCHMARKS.md, "A photo library")
BATCHES_PER_WORKER = 8


def _batches(todo: list[_Work], batch_size: int, workers: int = 0) -> list[list[_Work]]:
    """The files to hash, in order, cut every ``batch_size`` files or :data:`BATCH_BYTES`,
    and for a pool of ``workers`` into at least :data:`BATCHES_PER_WORKER` batches each."""
    if workers > 1:
        batch_size = min(batch_size, max(1, -(-len(todo) // (workers * BATCHES_PER_WORKER))))
    batches: list[list[_Work]] = [[]]
    size = 0
    for work in todo:
        if batches[-1] and (len(batches[-1]) >= batch_size or size + work.size > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(work)
        size += work.size
    return [b for b in batches if b]


def _hash_files(db, root: Path, files, model, hasher, summary: IndexSummary, relabel: bool, batch_size: int,
                progress: bool, pool_workers: int, max_pending: int, ray_options, near_coder, existing, warn) -> None:  # fmt: skip
    # first every file's stat: the unchanged ones are counted before any hashing starts, so
    # the bar's rate and ETA are those of the files that are hashed
    seen: set[str] = set()
    unreadable: list[str] = []
    todo: list[_Work] = []
    relabel_unchanged: list[dict] = []
    for path, folder_label in files:
        key = path_key(path)
        label = None if folder_label is None else path_key(folder_label)
        seen.add(key)
        try:
            st = path.stat()
        except OSError as exc:
            unreadable.append(f"{key}: {_os_cause(exc)}")
            continue
        row = existing.get(key)
        relabels = False
        if row is not None and row.label != label:
            if relabel:
                relabels = True
            else:  # first indexed from another root: its label stays, and is counted
                summary.labels_kept += 1
                label = row.label
        if row is not None and row.size == st.st_size and row.mtime == st.st_mtime and row.complete:
            summary.unchanged += 1
            if relabels:
                relabel_unchanged.append({"id": row.id, "label": label})
            continue
        todo.append(_Work(path, key, label, relabels, st.st_size, st.st_mtime, row))
    if progress and summary.unchanged and todo:
        tqdm.write(f"{summary.unchanged:,} of {len(files):,} files unchanged since they were indexed: hashing the other "
                   f"{len(todo) + len(unreadable):,}", file=sys.stderr)  # fmt: skip
    batches = _batches(todo, batch_size, pool_workers if ray_options is None else 0)
    # a pool only where there is more than one batch to share out (and not for Ray's runs);
    # started before the bar, whose thread a fork must not copy
    pool = _start_pool(hasher, pool_workers, near_coder) if pool_workers and ray_options is None and len(batches) > 1 else None
    try:
        with _one_blas_thread(pool is None and ray_options is None):
            _hash_batches(db, model, hasher, summary, batch_size, progress, pool, max_pending, ray_options, near_coder,
                          todo, batches, unreadable, relabel_unchanged, warn)  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # only rows whose file is really gone: one not walked (unreadable or hidden folder,
    # another extension) but still there keeps its row
    gone = [row.id for key, row in existing.items() if key not in seen and file_is_gone(key)]
    _remove(db, gone)
    summary.removed += len(gone)
    summary.total = db.count()


def _hash_batches(db, model, hasher, summary: IndexSummary, batch_size: int, progress: bool, pool, max_pending: int,
                  ray_options, near_coder, todo, batches, unreadable, relabel_unchanged, warn) -> None:  # fmt: skip
    with tqdm(
        total=len(todo), desc="indexing", unit="img", file=sys.stderr, disable=not progress, leave=False
    ) as bar:
        if ray_options is not None:
            from semhash.index import ray_engine

            run = ray_engine.ray_index_run(db, model, hasher, summary, warn, bar, batch_size=batch_size, **ray_options)
        else:
            run = _Run(db, hasher, summary, warn, bar, pool, max_pending, near_coder)
        for message in unreadable:
            run.skip(message)
        relabel_limit = max(batch_size, 1000)
        for change in relabel_unchanged:
            run.relabel.append(change)
            if len(run.relabel) >= relabel_limit:
                run.flush()
        for batch in batches:
            run.work.extend(batch)
            run.flush()
        run.flush()
        run.drain()



def watched_label(root: Path, path: Path) -> tuple[bool, str | None]:
    """Whether ``path`` is a file :func:`semhash.data.iter_image_files` would walk under
    ``root`` (an image extension, nothing hidden on the way), and its label (the first-level
    folder's name, None in the root itself)."""
    from semhash.formats import IMAGE_EXTENSIONS

    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False, None
    if not parts or any(part.startswith(".") for part in parts) or path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False, None
    return True, parts[0] if len(parts) > 1 else None


def index_changed(db: IndexDB, root: Path, paths, model: ModelInfo, hasher, near_coder, summary: IndexSummary, warn) -> None:
    """Bring the rows of ``paths`` (files under ``root`` that an event named: new, changed,
    or gone) up to date, as a run over the whole folder would: a new or changed image file is
    hashed in this process, an unchanged one left alone, a row whose file is gone removed.
    The watcher's step (:mod:`semhash.index.watch`); ``db`` is bound already."""
    files: list[tuple[Path, str | None]] = []
    keys = []
    for path in sorted(set(paths)):
        keys.append(path_key(path))
        walked, label = watched_label(root, path)
        if walked and path.is_file() and not any(p.is_symlink() for p in path.parents if p != root and root in p.parents):
            files.append((path, label))
    existing: dict[str, _Row] = {}
    with db.session() as s, s.begin():
        for chunk in chunked(keys):
            existing.update(_rows_where(s, ImageRow.path.in_(chunk)))
    _hash_files(db, root, files, model, hasher, summary, False, 256, False, 0, 1, None, near_coder, existing, warn)
