"""Image folder -> rows in the index: incremental, batched, crash-safe.

A run walks the folder, compares each file's size and mtime with its row, and only reads
what is new or changed (a changed file whose bytes hash the same just gets its mtime
refreshed).  Work is decoded, hashed and committed ``batch_size`` files at a time, each batch
one SQLite transaction, so memory stays flat on large folders and an interrupted run keeps
everything committed before it.  Rows of files that vanished from *this* folder are removed
at the end; rows from other folders are never touched.  Finally the faiss cache is refreshed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from sqlalchemy import delete, insert, select, update
from tqdm import tqdm

from semhash.data import check_folder, decode_image, iter_image_files
from semhash.errors import DatasetError, ImageError, IndexError_
from semhash.hashing import to_signed64
from semhash.index import faiss_store
from semhash.index.db import (
    ImageRow,
    IndexDB,
    bind_model,
    bump_generation,
    chunked,
    delete_all_rows,
    open_index,
    read_meta,
    utc_now,
)
from semhash.workspace import ModelInfo


@dataclass
class IndexSummary:
    """What one indexing run did (counts are files, ``total`` is rows in the whole index)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    removed: int = 0
    total: int = 0
    index_path: Path | None = None
    faiss_path: Path | None = None
    skipped_files: list[str] = field(default_factory=list)


class _Row(NamedTuple):
    id: int
    size: int
    mtime: float
    content_hash: str
    label: str | None


class _Work(NamedTuple):
    path: Path
    key: str
    label: str | None
    size: int
    mtime: float
    row: _Row | None  # None for a new file


def _os_cause(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return f"cannot read ({exc.strerror or exc})"


def _folder_prefix(root: Path) -> tuple[str, str]:
    """[low, high) string bounds of every path under ``root``.  A range on the UNIQUE
    path index rather than LIKE, which would treat '_' and '%' in folder names as wildcards
    (SQLite compares TEXT bytewise, which orders UTF-8 like Python orders code points)."""
    text = str(root)
    low = text if text.endswith(os.sep) else text + os.sep
    return low, low[:-1] + chr(ord(os.sep) + 1)


class _Run:
    """State of one indexing run (kept off the public function to keep it readable)."""

    def __init__(self, db: IndexDB, hasher, summary: IndexSummary, on_warning, bar):
        self.db = db
        self.hasher = hasher
        self.summary = summary
        self.on_warning = on_warning
        self.bar = bar
        self.work: list[_Work] = []
        self.relabel: list[dict] = []

    def skip(self, message: str) -> None:
        self.summary.skipped += 1
        self.summary.skipped_files.append(message)
        if self.on_warning is not None:
            self.on_warning(message)

    def flush(self) -> None:
        """Read, decode and hash the pending files, then commit them in one transaction."""
        work, self.work = self.work, []
        relabel, self.relabel = self.relabel, []
        images: list[np.ndarray] = []
        to_hash: list[tuple[_Work, str]] = []
        refresh: list[dict] = []  # same bytes, new stat: keep the code
        drop: list[int] = []  # indexed before, unreadable now: the old code is stale
        skipped_msgs: list[str] = []
        for w in work:
            try:
                data = w.path.read_bytes()
            except OSError as exc:
                skipped_msgs.append(f"{w.path}: {_os_cause(exc)}")
                if w.row is not None:
                    drop.append(w.row.id)
                continue
            digest = hashlib.sha256(data).hexdigest()
            del data
            if w.row is not None and digest == w.row.content_hash:
                refresh.append({"id": w.row.id, "size": w.size, "mtime": w.mtime, "label": w.label})
                continue
            try:
                images.append(decode_image(w.path, self.hasher.input_shape))
            except ImageError as exc:
                skipped_msgs.append(str(exc))
                if w.row is not None:
                    drop.append(w.row.id)
                continue
            to_hash.append((w, digest))

        codes = self.hasher.hash(np.stack(images)) if images else np.zeros(0, dtype=np.uint64)
        now = utc_now()
        new_rows, changed_rows = [], []
        for (w, digest), code in zip(to_hash, codes):
            values = {
                "path": w.key,
                "content_hash": digest,
                "size": w.size,
                "mtime": w.mtime,
                "label": w.label,
                "code": to_signed64(int(code)),
                "indexed_at": now,
            }
            if w.row is None:
                new_rows.append(values)
            else:
                changed_rows.append({"id": w.row.id, **values})

        if new_rows or changed_rows or refresh or relabel or drop:
            with self.db.write_session() as s, s.begin():
                if new_rows:
                    s.execute(insert(ImageRow), new_rows)
                if changed_rows:
                    s.execute(update(ImageRow), changed_rows)
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
        for message in skipped_msgs:
            self.skip(message)
        self.bar.update(len(work))


def _bind(db: IndexDB, model: ModelInfo, hasher, rebuild: bool) -> int:
    """Tie the index to ``model`` (or check it already is).  Returns rows dropped by rebuild.

    An index never mixes encoders: codes from two models are not comparable, so a different
    fingerprint or bit width is refused unless the caller asks to rebuild, which deletes
    every row and re-binds in the same transaction.
    """
    fingerprint = hasher.fingerprint
    with db.write_session() as s, s.begin():
        meta = read_meta(s, db.path)
        removed = 0
        if rebuild:
            removed = delete_all_rows(s)
        elif meta.bound and (meta.model_fingerprint != fingerprint or meta.n_bits != hasher.n_bits):
            raise IndexError_(
                f"{db.path}: index was built with model {meta.model_name!r} ({meta.n_bits} bits, "
                f"fingerprint {meta.model_fingerprint}), not model {model.name!r} ({hasher.n_bits} bits, "
                f"fingerprint {fingerprint}): use --rebuild to re-index everything with {model.name!r}"
            )
        elif meta.bound and meta.model_name == model.name:
            return 0  # already bound to this exact encoder: nothing to write
        # new index, rebuild, or the same encoder saved under another name (codes identical)
        bind_model(s, name=model.name, fingerprint=fingerprint, n_bits=hasher.n_bits, input_shape=hasher.input_shape)
        bump_generation(s)
        return removed


def _existing(db: IndexDB, root: Path) -> dict[str, _Row]:
    low, high = _folder_prefix(root)
    stmt = select(
        ImageRow.path, ImageRow.id, ImageRow.size, ImageRow.mtime, ImageRow.content_hash, ImageRow.label
    ).where(ImageRow.path >= low, ImageRow.path < high)
    with db.session() as s, s.begin():
        return {p: _Row(i, size, mtime, h, label) for p, i, size, mtime, h, label in s.execute(stmt).tuples()}


def _remove(db: IndexDB, ids: list[int]) -> None:
    if not ids:
        return
    with db.write_session() as s, s.begin():
        for chunk in chunked(ids):
            s.execute(delete(ImageRow).where(ImageRow.id.in_(chunk)))
        bump_generation(s)


def index_folder(
    folder: str | Path,
    model: ModelInfo,
    index_path: str | Path,
    *,
    rebuild: bool = False,
    batch_size: int = 256,
    progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> IndexSummary:
    """Bring the index up to date with every image file under ``folder``.

    Unreadable files are skipped with ``on_warning("<path>: <cause>")`` and the run goes on.
    Raises DatasetError for a missing folder or one without image files, and IndexError_
    when the index belongs to another model (unless ``rebuild``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    root = check_folder(folder).resolve()
    files = list(iter_image_files(root))
    if not files:
        raise DatasetError(f"{folder}: no image files found")
    hasher = model.load_hasher()

    with open_index(index_path, create=True) as db:
        summary = IndexSummary(index_path=db.path, faiss_path=db.faiss_path)
        summary.removed += _bind(db, model, hasher, rebuild)
        existing = _existing(db, root)
        seen: set[str] = set()
        with tqdm(
            total=len(files), desc="indexing", unit="img", file=sys.stderr, disable=not progress, leave=False
        ) as bar:
            run = _Run(db, hasher, summary, on_warning, bar)
            relabel_limit = max(batch_size, 1000)
            for path, label in files:
                key = str(path)
                seen.add(key)
                try:
                    st = path.stat()
                except OSError as exc:
                    run.skip(f"{path}: {_os_cause(exc)}")
                    bar.update(1)
                    continue
                row = existing.get(key)
                if row is not None and row.size == st.st_size and row.mtime == st.st_mtime:
                    summary.unchanged += 1
                    bar.update(1)
                    if row.label != label:  # same file reached from another root: its label follows
                        run.relabel.append({"id": row.id, "label": label})
                        if len(run.relabel) >= relabel_limit:
                            run.flush()
                    continue
                run.work.append(_Work(path, key, label, st.st_size, st.st_mtime, row))
                if len(run.work) >= batch_size:
                    run.flush()
            run.flush()

        gone = [row.id for key, row in existing.items() if key not in seen]
        _remove(db, gone)
        summary.removed += len(gone)
        summary.total = db.count()
        faiss_store.load_or_build(db)
    return summary
