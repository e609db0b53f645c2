"""Parquet files of precomputed codes -> rows in the index (``semhash import``).

This is how codes hashed elsewhere (a Ray cluster: :mod:`semhash.index.ray_engine` writes
exactly these files) enter the index, and how the benchmarks fill one.  Columns, one row per
image file (others are ignored, with a warning):

    path          string    the file's path (absolute); or
    path_bytes    binary    the path's exact bytes (preferred when both are there: any name)
    code          integer   the code, bit i = coding unit i; below 2**n_bits of the model
    label         string    optional: first-level folder name (label_bytes: its exact bytes)
    content_hash  string    optional: sha256 of the file's bytes, hex ("" when absent)
    size          integer   optional: bytes (0 when absent)
    mtime         number    optional: seconds since the epoch (0 when absent)

Every file is read and checked before anything is written, and all rows are then written
in one transaction, so a bad file, a bad row or a failed write (a full disk) leaves the
index exactly as it was; the error is one line naming the file and, for a row, its number
(counting from 1 in that file).  Rows are upserts keyed on the path, as the indexer writes
them: a path already indexed gets the new code, hash, size and mtime, and keeps its label
(the first indexed wins; ``semhash index --relabel`` changes labels).  Paths and labels are
stored as keys (:mod:`semhash.index.pathkeys`): a string column's text is the path, a
binary column's bytes are.

Speed: Arrow batches, checked and converted by Arrow's compute kernels, are staged in a
temporary table through the raw DBAPI connection (one JSON document per batch, unpacked by
SQLite's json_each), then upserted in one statement and one transaction (WAL); the Python
work per row is one tuple for the JSON encoder.
"""

from __future__ import annotations

import os
import json
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from semhash.errors import IndexError_, SemhashError
from semhash.index.db import ImageRow, IndexDB, IndexLocation, bind_model, bump_generation, database_errors, open_index, read_meta, utc_now
from semhash.index.pathkeys import path_key, printable
from semhash.index.search import refresh_lookup

BATCH_ROWS = 1 << 16
OPTIONAL_COLUMNS = ("label", "label_bytes", "content_hash", "size", "mtime")
PATH_COLUMNS = ("path_bytes", "path")  # in order of preference
_IMPORT_CACHE_KIB = 256 * 1024  # SQLite page cache for the import's connection: index inserts stay in memory


class ImportFileError(SemhashError):
    """A Parquet file (or one of its rows) that cannot be imported: one line naming it."""


@dataclass
class ImportSummary:
    """What one import did (``total`` is rows in the whole index afterwards)."""

    files: list[Path] = field(default_factory=list)
    rows: int = 0  # rows read from the files
    added: int = 0  # paths new to the index
    updated: int = 0  # rows whose path was already indexed (or repeated in the files)
    total: int = 0
    seconds: float = 0.0  # wall time of the whole import, lookup refresh included
    index_path: Path | None = None
    lookup_path: Path | None = None


def parquet_files(sources: Sequence[str | Path]) -> list[Path]:
    """Each source as given: a file, or a folder's ``*.parquet`` files (recursively, hidden
    ones left out), sorted."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        shown = printable(str(source))
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*.parquet")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )  # fmt: skip
            if not found:
                raise ImportFileError(f"{shown}: no .parquet files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ImportFileError(f"{shown}: not a file or folder")
        else:
            raise ImportFileError(f"{shown}: no such file or folder")
    if not files:
        raise ImportFileError("nothing to import: give Parquet files or folders")
    return files


# --------------------------------------------------------------------------- one file
class _File:
    """One Parquet file opened for import: its columns checked against what the import needs."""

    def __init__(self, path: Path, warn: Callable[[str], None] | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        self.name = printable(str(path))
        try:
            self.parquet = pq.ParquetFile(path)
            schema = self.parquet.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise ImportFileError(f"{self.name}: not a readable Parquet file ({_one_line(exc)})") from None
        types = {name: schema.field(name).type for name in schema.names}
        self.path_column = next((c for c in PATH_COLUMNS if c in types), None)
        if self.path_column is None:
            raise ImportFileError(f"{self.name}: no 'path' column (nor 'path_bytes')")
        if "code" not in types:
            raise ImportFileError(f"{self.name}: no 'code' column")
        expected = {
            "path": pa.types.is_string, "path_bytes": _is_binary, "code": pa.types.is_integer,
            "label": pa.types.is_string, "label_bytes": _is_binary, "content_hash": pa.types.is_string,
            "size": pa.types.is_integer, "mtime": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
        }  # fmt: skip
        kinds = {"path": "string", "path_bytes": "binary", "code": "integer", "label": "string", "label_bytes": "binary",
                 "content_hash": "string", "size": "integer", "mtime": "number"}  # fmt: skip
        for name, is_ok in expected.items():
            if name in types and not (is_ok(types[name]) or pa.types.is_null(types[name])):
                raise ImportFileError(f"{self.name}: column '{name}' is {types[name]}, not {kinds[name]}")
        if pa.types.is_null(types["code"]) and self.parquet.metadata.num_rows:
            raise ImportFileError(f"{self.name}: row 1: no code (the 'code' column is empty)")
        self.label_column = "label_bytes" if "label_bytes" in types else ("label" if "label" in types else None)
        wanted = {self.path_column, "code", *[c for c in OPTIONAL_COLUMNS if c in types]}
        if self.label_column == "label_bytes":
            wanted.discard("label")
        ignored = [n for n in schema.names if n not in wanted and n not in PATH_COLUMNS and n != "label"]
        if ignored and warn is not None:
            warn(f"{self.name}: columns not imported: {', '.join(ignored)}")
        self.columns = sorted(wanted)
        self.rows = self.parquet.metadata.num_rows

    def batches(self) -> Iterator[tuple[int, Any]]:
        """(number of the batch's first row counting from 1, record batch)."""
        import pyarrow as pa

        first = 1
        try:
            for batch in self.parquet.iter_batches(batch_size=BATCH_ROWS, columns=self.columns):
                yield first, batch
                first += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise ImportFileError(f"{self.name}: cannot read the Parquet file ({_one_line(exc)})") from None


def _is_binary(t) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _first_true(mask) -> int:
    """Index of the first true value of a boolean Arrow array (nulls count as false)."""
    import pyarrow.compute as pc

    return int(pc.index(pc.fill_null(mask, False), True).as_py())


def _keys(column, what: str, file: _File, first_row: int, required: bool):
    """A path or label column -> an Arrow string array of keys (pathkeys scheme): a string's
    text is the name (its backslashes doubled), a binary value's bytes are (undecodable
    bytes written \\xNN).  Vectorised; only binary values that are not UTF-8 go through
    :func:`path_key` one by one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_null(column.type):
        if required and len(column):
            raise ImportFileError(f"{file.name}: row {first_row}: no {what}")
        return pa.nulls(len(column), pa.string())
    if required and column.null_count:
        raise ImportFileError(f"{file.name}: row {first_row + _first_true(pc.is_null(column))}: no {what}")
    if _is_binary(column.type):
        try:  # Arrow checks the bytes are UTF-8
            column = pc.cast(pc.cast(column, pa.binary()), pa.string())
        except pa.ArrowInvalid:  # names that are not UTF-8: the exact scheme, value by value
            return pa.array([None if b is None else path_key(b) for b in column.to_pylist()], pa.string())
    return pc.replace_substring(column, "\\", "\\\\")


@dataclass
class _Rows:
    """One checked batch, as the driver's columns: ``columns`` names the ones the file has
    (path and code always); the others take their defaults."""

    columns: tuple[str, ...]
    values: list[list]
    n: int

    def tuples(self):
        return zip(*self.values)

    def dicts(self, **constant: Any) -> list[dict]:
        defaults = {"label": None, "content_hash": "", "size": 0, "mtime": 0.0, **constant}
        return [{**defaults, **dict(zip(self.columns, row))} for row in self.tuples()]


def _prepare(batch, file: _File, first_row: int, n_bits: int) -> _Rows:
    """Check one batch (one line naming file and row for the first bad value) and convert it
    to the columns the INSERT takes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    names = batch.schema.names
    column = dict(zip(names, batch.columns))
    paths = _keys(column[file.path_column], "path", file, first_row, required=True)
    empty = pc.equal(pc.utf8_length(paths), 0)
    if pc.any(empty).as_py():
        raise ImportFileError(f"{file.name}: row {first_row + _first_true(empty)}: empty path")
    relative = pc.invert(pc.starts_with(paths, "/"))
    if pc.any(relative).as_py():
        row = first_row + _first_true(relative)
        shown = paths[row - first_row].as_py()
        raise ImportFileError(f"{file.name}: row {row}: path {shown[:200]!r} is not absolute")

    codes = column["code"]
    if codes.null_count:
        raise ImportFileError(f"{file.name}: row {first_row + _first_true(pc.is_null(codes))}: no code")
    if pa.types.is_signed_integer(codes.type):
        negative = pc.less(codes, 0)
        if pc.any(negative).as_py():
            row = first_row + _first_true(negative)
            value = codes[row - first_row].as_py()
            raise ImportFileError(f"{file.name}: row {row}: code {value} is negative (codes are unsigned; write uint64)")
    values = np.asarray(codes.to_numpy(zero_copy_only=False)).astype(np.uint64)
    if n_bits < 64:
        wide = values >> np.uint64(n_bits)
        if wide.any():
            row = first_row + int(np.flatnonzero(wide)[0])
            raise ImportFileError(
                f"{file.name}: row {row}: code {int(values[row - first_row])} is wider than the model's "
                f"{n_bits} bits"
            )
    signed = values.view(np.int64).tolist()  # SQLite integers are signed: two's complement

    columns, values = ["path", "code"], [paths.to_pylist(), signed]
    if file.label_column is not None and not pa.types.is_null(column[file.label_column].type):
        columns.append("label")
        values.append(_keys(column[file.label_column], "label", file, first_row, required=False).to_pylist())
    if "content_hash" in column and not pa.types.is_null(column["content_hash"].type):
        columns.append("content_hash")
        values.append(pc.fill_null(column["content_hash"].cast(pa.string()), "").to_pylist())
    if "size" in column and not pa.types.is_null(column["size"].type):
        columns.append("size")
        values.append(pc.fill_null(column["size"], 0).to_pylist())
    if "mtime" in column and not pa.types.is_null(column["mtime"].type):
        columns.append("mtime")
        values.append(pc.fill_null(column["mtime"].cast(pa.float64()), 0.0).to_pylist())
    return _Rows(tuple(columns), values, n)


# --------------------------------------------------------------------------- writing
_COLUMNS = ("path", "content_hash", "size", "mtime", "label", "code", "indexed_at")
_UPDATED = ("content_hash", "size", "mtime", "code", "indexed_at")  # never the label: first indexed wins
_STAGING = "temp.semhash_import"
_STAGING_TABLE = (  # what a file leaves out takes the default; indexed_at is one value for the import
    f"CREATE TEMP TABLE {_STAGING.split('.')[1]} "
    "(path TEXT, code INTEGER, label TEXT DEFAULT NULL, content_hash TEXT DEFAULT '', size INTEGER DEFAULT 0, "
    "mtime REAL DEFAULT 0.0)"
)
_UPSERT_FROM_STAGING = (
    f"INSERT INTO {ImageRow.__tablename__} ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(c if c != 'indexed_at' else '?' for c in _COLUMNS)} FROM {_STAGING} "
    "WHERE true ORDER BY path, rowid "  # the last of a repeated path wins
    f"ON CONFLICT (path) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _UPDATED)}"
)
#: rebuild the code index after the rows rather than update it row by row when the import
#: brings at least this share of the table's rows (random codes: an update per row misses the cache)
REINDEX_SHARE = 0.25


def _bind_in(session, db: IndexDB, model, hasher) -> None:
    """Inside the import's transaction: bind a new index to ``model``, or check it is bound
    to the same encoder (codes of two encoders are not comparable)."""
    meta = read_meta(session, db.path)
    if meta.bound and (meta.model_fingerprint, meta.n_bits) != (hasher.fingerprint, hasher.n_bits):
        raise IndexError_(
            f"{db.path}: index was built with model {meta.model_name!r} ({meta.n_bits} bits, fingerprint "
            f"{meta.model_fingerprint}), not model {model.name!r} ({hasher.n_bits} bits, fingerprint "
            f"{hasher.fingerprint}): import into another --index, or rebuild this one with {model.name!r}"
        )
    if not meta.bound:
        bind_model(session, name=model.name, fingerprint=hasher.fingerprint, n_bits=hasher.n_bits,
                   input_shape=hasher.input_shape)  # fmt: skip


@lru_cache(maxsize=None)
def _stage_sql(columns: tuple[str, ...]) -> str:
    """One statement per batch: the batch travels as one JSON array of rows, which SQLite's
    json_each unpacks in C (a third faster than executemany's binding of every value; JSON
    keeps integers exact and SQLite reads back every double Python's json writes, tested)."""
    values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
    return f"INSERT INTO {_STAGING} ({', '.join(columns)}) SELECT {values} FROM json_each(?)"


def _code_indexes() -> list:
    return [ix for ix in ImageRow.__table__.indexes if [c.name for c in ix.columns] == ["code"]]


def _import_sqlite(db: IndexDB, files: list[_File], model, hasher, indexed_at: str, bar) -> tuple[int, int]:
    """SQLite: every batch checked and staged in a temporary table (private to this
    connection, nothing written to the index yet), then one transaction upserts them all in
    path order (sequential inserts into the path index) and, for a large import, rebuilds
    the code index instead of updating it row by row.  Returns (rows added, rows in the
    index after)."""
    from sqlalchemy.orm import Session

    n_bits = int(hasher.n_bits)
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection  # autocommit (isolation_level=None) until BEGIN below
        raw.execute(f"PRAGMA main.cache_size = -{_IMPORT_CACHE_KIB}")
        raw.execute(_STAGING_TABLE)
        staged = 0
        for f in files:
            for first, batch in f.batches():
                rows = _prepare(batch, f, first, n_bits)
                raw.execute(_stage_sql(rows.columns), (json.dumps(list(rows.tuples())),))
                staged += rows.n
                bar.update(rows.n)
        conn.execution_options(sqlite_begin="IMMEDIATE")  # the write lock, up front
        with conn.begin(), Session(bind=conn) as s:
            _bind_in(s, db, model, hasher)
            s.flush()
            before = raw.execute(f"SELECT max(id) FROM {ImageRow.__tablename__}").fetchone()[0] or 0
            present = raw.execute(f"SELECT count(*) FROM {ImageRow.__tablename__}").fetchone()[0]
            rebuild = staged >= REINDEX_SHARE * (present + staged)
            code_indexes = _code_indexes() if rebuild else []
            for ix in code_indexes:
                ix.drop(bind=conn)
            raw.execute(_UPSERT_FROM_STAGING, (indexed_at,))
            for ix in code_indexes:
                ix.create(bind=conn)
            added = raw.execute(f"SELECT count(*) FROM {ImageRow.__tablename__} WHERE id > ?", (before,)).fetchone()[0]
            bump_generation(s)
            s.flush()
        raw.execute(f"DROP TABLE {_STAGING}")
    return int(added), int(present) + int(added)


def _import_generic(db: IndexDB, files: list[_File], model, hasher, indexed_at, bar) -> int:
    """Any other database (PostgreSQL): every file checked first, then one transaction of
    upserts (:func:`semhash.index.db.upsert_images`).  Returns the rows added."""
    from sqlalchemy import func, select

    from semhash.index.db import upsert_images

    n_bits = int(hasher.n_bits)
    for f in files:
        for first, batch in f.batches():
            _prepare(batch, f, first, n_bits)
            bar.update(batch.num_rows)
    with db.write_session() as s, s.begin():
        _bind_in(s, db, model, hasher)
        before = int(s.scalar(select(func.max(ImageRow.id))) or 0)
        for f in files:
            for first, batch in f.batches():
                rows = _prepare(batch, f, first, n_bits)
                # one statement may not touch a row twice (PostgreSQL): a path repeated in
                # the batch keeps its last row, as the SQLite import does
                last = {row["path"]: row for row in rows.dicts(indexed_at=indexed_at)}
                upsert_images(s, list(last.values()), _UPDATED)
        added = int(s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.id > before)) or 0)
        bump_generation(s)
    return added


def import_parquet(
    index_path: str | Path,
    sources: Sequence[str | Path],
    model,
    *,
    on_warning: Callable[[str], None] | None = None,
    progress: bool = False,
) -> ImportSummary:
    """Load the rows of Parquet ``sources`` (files, or folders of them) into the index at
    ``index_path``, bound to ``model`` (a :class:`semhash.workspace.ModelInfo`; only its
    exported hasher's fingerprint, bits and input shape are used, nothing is decoded).

    Everything is checked before the index is written, and written in one transaction: on
    any error (one line: :class:`ImportFileError` naming the file and row, or
    :class:`IndexError_` naming the index) the index is as it was.  Afterwards the lookup
    cache is refreshed, as after ``semhash index``.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    hasher = model.load_hasher()
    files = [_File(path, on_warning) for path in parquet_files(sources)]
    total_rows = sum(f.rows for f in files)
    summary = ImportSummary(files=[f.path for f in files], rows=total_rows)
    bar = tqdm(total=total_rows, desc="importing", unit="row", unit_scale=True, file=sys.stderr,
               disable=not progress, leave=False)  # fmt: skip
    location = IndexLocation.parse(index_path)  # a file, or a database URL
    created = location.file is not None and not location.file.exists()
    try:
        _import(location, files, model, hasher, summary, bar)
    except BaseException:
        if created:
            _remove_if_still_empty(location.file)
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def _import(index_path, files: list[_File], model, hasher, summary: ImportSummary, bar) -> None:
    with bar, open_index(index_path, create=True) as db, database_errors(db.path):
        summary.index_path, summary.lookup_path = db.path, db.lookup_path
        if db.engine.dialect.name == "sqlite":
            # the text SQLAlchemy's DateTime stores in SQLite (the staged rows bypass it)
            indexed_at: Any = utc_now().strftime("%Y-%m-%d %H:%M:%S.%f")
            summary.added, summary.total = _import_sqlite(db, files, model, hasher, indexed_at, bar)
        else:
            indexed_at = utc_now()
            summary.added = _import_generic(db, files, model, hasher, indexed_at, bar)
            summary.total = db.count()
        summary.updated = summary.rows - summary.added
        refresh_lookup(db)


def _remove_if_still_empty(index_path: str | Path) -> None:
    """A failed import into an index that did not exist leaves none behind (unless another
    process has bound or filled the new file meanwhile)."""
    path = Path(index_path).expanduser().absolute()
    try:
        with open_index(path) as db:
            if db.meta().bound or db.count():
                return
    except SemhashError:
        return
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except OSError:
            pass
