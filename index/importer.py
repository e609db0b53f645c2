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
    near_code     binary    optional: the near tier's PDQ code, 32 bytes (or 64 hex digits)
    near_variants binary    optional: the PDQ codes of its 7 rotations and mirrors, 224 bytes
                            (or 448 hex digits), as `semhash index` stores them
    near_quality  integer   optional: PDQ's quality, 0-100 (unknown when absent)
    width         integer   optional: the image's pixel width
    height        integer   optional: its pixel height
    taken_at      number    optional: capture time (EXIF), seconds since the epoch
    camera        string    optional: the camera's make and model
    format        string    optional: the file format ("JPEG", "HEIF", "DNG", ...)

Every file is read and checked before anything is written, and all rows are then written
in one transaction, so a bad file, a bad row or a failed write (a full disk) leaves the
index exactly as it was; the error is one line naming the file and, for a row, its number
(counting from 1 in that file).  Rows are upserts keyed on the path, as the indexer writes
them: a path already indexed gets the new code, hash, size and mtime, and keeps its label
(the first indexed wins; ``semhash index --relabel`` changes labels).  Paths and labels are
stored as keys (:mod:`semhash.index.pathkeys`): a string column's text is the path, a
binary column's bytes are.

Two ways in, the same rows out (ids in path order included; tested equal):

* Into a new index file (the bulk load: a cluster's shards, the benchmarks): every row is
  read, checked and sorted by path in Arrow, then written in one pass into a file built
  beside the target under a hidden name (no journal, the code index built after the rows,
  one fsync), which is hard-linked into place only when complete; the lookup is built from
  the rows in hand.  10^7 rows: 39 s, 256,000 rows/s (docs/BENCHMARKS.md).  An import too
  large for memory (:data:`NEW_FILE_MEMORY_SHARE`) takes the second way.
* Into an existing index (or PostgreSQL): checked Arrow batches are staged in a temporary
  table (one JSON document per batch, unpacked by SQLite's json_each), then upserted in one
  statement and one transaction (WAL); the lookup is the one before with the touched rows
  put in (the upsert returns them), or rebuilt from the record.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote

import numpy as np

from semhash.errors import IndexError_, SemhashError
from semhash.index.db import (
    ImageRow, IndexDB, IndexLocation, bind_model, bump_generation, database_errors, importing_pattern, open_index, read_meta,
    utc_now,
)  # fmt: skip
from semhash.lifetime import interruptible, remove_abandoned, signals_deferred
from semhash.index.pathkeys import path_key, printable
from semhash.index.search import refresh_lookup, refresh_lookup_after_upsert, save_lookup_of_rows

BATCH_ROWS = 1 << 16
OPTIONAL_COLUMNS = ("label", "label_bytes", "content_hash", "size", "mtime", "near_code", "near_variants", "near_quality", "width",
                    "height", "taken_at", "camera", "format")
#: the optional columns that stay NULL when a file leaves them out (no default value)
NULLABLE_COLUMNS = ("near_code", "near_variants", "near_quality", "width", "height", "taken_at", "camera", "format")
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
            "path": _is_text, "path_bytes": _is_binary, "code": pa.types.is_integer,
            "label": _is_text, "label_bytes": _is_binary, "content_hash": _is_text,
            "size": pa.types.is_integer, "mtime": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
            "near_code": lambda t: _is_binary(t) or _is_text(t), "near_variants": lambda t: _is_binary(t) or _is_text(t),
            "near_quality": pa.types.is_integer,
            "width": pa.types.is_integer, "height": pa.types.is_integer,
            "taken_at": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "camera": _is_text, "format": _is_text,
        }  # fmt: skip
        kinds = {"path": "string", "path_bytes": "binary", "code": "integer", "label": "string", "label_bytes": "binary",
                 "content_hash": "string", "size": "integer", "mtime": "number", "near_code": "binary or hex text",
                 "near_variants": "binary or hex text",
                 "near_quality": "integer", "width": "integer", "height": "integer", "taken_at": "number",
                 "camera": "string", "format": "string"}  # fmt: skip
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
    """Any of Arrow's byte-string types, dictionary-encoded or not."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t))  # fmt: skip


def _is_text(t) -> bool:
    """Any of Arrow's string types (string, large_string, string_view), dictionary-encoded or not."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _plain(column):
    """A string or byte-string column as plain ``string`` / ``binary`` (dictionaries decoded,
    large and view layouts cast), the types every check below is written for."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if _is_text(column.type) and not pa.types.is_string(column.type):
        column = column.cast(pa.string())
    elif _is_binary(column.type) and not pa.types.is_binary(column.type):
        column = column.cast(pa.binary())
    return column


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
    column = _plain(column)
    if required and column.null_count:
        raise ImportFileError(f"{file.name}: row {first_row + _first_true(pc.is_null(column))}: no {what}")
    # a NUL byte is in no file name: such a path would be cut short by every file call
    nul = pc.match_substring(column, b"\x00" if _is_binary(column.type) else "\x00")
    if pc.any(nul).as_py():
        raise ImportFileError(f"{file.name}: row {first_row + _first_true(nul)}: the {what} contains a NUL byte (\\x00)")
    if _is_binary(column.type):
        try:  # Arrow checks the bytes are UTF-8
            column = pc.cast(column, pa.string())
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
        defaults = {"label": None, "content_hash": "", "size": 0, "mtime": 0.0, **dict.fromkeys(NULLABLE_COLUMNS), **constant}
        return [{**defaults, **dict(zip(self.columns, row))} for row in self.tuples()]


def _checked(batch, file: _File, first_row: int, n_bits: int) -> dict[str, Any]:
    """Check one batch (one line naming file and row for the first bad value) and convert
    it to the stored columns: ``path`` (keys) and ``code`` (int64 NumPy, two's complement:
    SQLite integers are signed) always, and whichever of ``label`` (keys, nullable),
    ``content_hash``, ``size``, ``mtime`` the file has (Arrow arrays, nulls filled)."""
    import pyarrow as pa
    import pyarrow.compute as pc

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

    checked: dict[str, Any] = {"path": paths, "code": values.view(np.int64)}
    if file.label_column is not None and not pa.types.is_null(column[file.label_column].type):
        checked["label"] = _keys(column[file.label_column], "label", file, first_row, required=False)
    if "content_hash" in column and not pa.types.is_null(column["content_hash"].type):
        checked["content_hash"] = pc.fill_null(_plain(column["content_hash"]), "")
    if "size" in column and not pa.types.is_null(column["size"].type):
        try:
            checked["size"] = pc.fill_null(column["size"].cast(pa.int64()), 0)
        except pa.ArrowInvalid:
            raise ImportFileError(f"{file.name}: column 'size' has a value beyond 2**63-1 (rows from {first_row})") from None
    if "mtime" in column and not pa.types.is_null(column["mtime"].type):
        mtime = pc.fill_null(column["mtime"].cast(pa.float64()), 0.0)
        odd = pc.invert(pc.is_finite(mtime))
        if pc.any(odd).as_py():
            row = first_row + _first_true(odd)
            raise ImportFileError(f"{file.name}: row {row}: mtime {mtime[row - first_row].as_py()} is not a number of seconds")
        checked["mtime"] = mtime
    _check_near(column, checked, file, first_row)
    _check_photo_facts(column, checked, file, first_row)
    return checked


def _check_photo_facts(column: dict, checked: dict, file: "_File", first_row: int) -> None:
    """The optional photo facts: ``taken_at`` a finite number of seconds, ``camera`` and
    ``format`` text; nulls stay null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "taken_at" in column and not pa.types.is_null(column["taken_at"].type):
        taken = column["taken_at"].cast(pa.float64())
        odd = pc.fill_null(pc.invert(pc.is_finite(taken)), False)
        if pc.any(odd).as_py():
            row = _first_true(odd)
            raise ImportFileError(f"{file.name}: row {first_row + row}: taken_at {taken[row].as_py()} is not a number of seconds")
        checked["taken_at"] = taken
    for name in ("camera", "format"):
        if name in column and not pa.types.is_null(column[name].type):
            checked[name] = _plain(column[name]).cast(pa.large_string())


def _check_near(column: dict, checked: dict, file: _File, first_row: int) -> None:
    """The near tier's optional columns: ``near_code`` (32 bytes) and ``near_variants`` (224)
    as binary (hex text decoded), ``near_quality`` 0..100, ``width``/``height`` >= 1; nulls
    stay null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from semhash.perceptual import N_DIHEDRAL, NEAR_BYTES

    for name, size in (("near_code", NEAR_BYTES), ("near_variants", NEAR_BYTES * (N_DIHEDRAL - 1))):
        if name not in column or pa.types.is_null(column[name].type):
            continue
        codes = _plain(column[name])
        if _is_text(codes.type):
            texts = codes.to_pylist()
            bad = next((i for i, v in enumerate(texts) if v is not None and not _is_hex(v)), None)
            if bad is not None:
                raise ImportFileError(f"{file.name}: row {first_row + bad}: {name} is not hex text")
            codes = pa.array([None if v is None else bytes.fromhex(v) for v in texts], pa.binary())
        lengths = pc.binary_length(codes)
        wrong = pc.not_equal(lengths, size)
        if pc.any(wrong).as_py():
            row = _first_true(wrong)
            raise ImportFileError(f"{file.name}: row {first_row + row}: {name} has {lengths[row].as_py()} bytes, not {size}")
        checked[name] = codes
    for name, low, high in (("near_quality", 0, 100), ("width", 1, 2**31 - 1), ("height", 1, 2**31 - 1)):
        if name in column and not pa.types.is_null(column[name].type):
            values = column[name]
            odd = pc.or_kleene(pc.less(values, low), pc.greater(values, high))
            if pc.any(odd).as_py():
                row = _first_true(odd)
                raise ImportFileError(f"{file.name}: row {first_row + row}: {name} {values[row].as_py()} is outside {low}..{high}")
            checked[name] = values.cast(pa.int64())


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _prepare(batch, file: _File, first_row: int, n_bits: int, hex_codes: bool = False) -> _Rows:
    """:func:`_checked`, as Python lists for the driver (only the columns the file has);
    near codes as hex text with ``hex_codes`` (for a JSON batch)."""
    checked = _checked(batch, file, first_row, n_bits)
    columns = tuple(checked)
    values = []
    for c in columns:
        column = checked[c].tolist() if c == "code" else checked[c].to_pylist()
        if c in ("near_code", "near_variants") and hex_codes:
            column = [None if v is None else v.hex() for v in column]
        values.append(column)
    return _Rows(columns, values, batch.num_rows)


# --------------------------------------------------------------------------- writing
_COLUMNS = ("path", "content_hash", "size", "mtime", "label", "code", "indexed_at", *NULLABLE_COLUMNS)
# never the label: first indexed wins
_UPDATED = ("content_hash", "size", "mtime", "code", "indexed_at", *NULLABLE_COLUMNS)
_STAGING = "temp.semhash_import"
_STAGING_TABLE = (  # what a file leaves out takes the default; indexed_at is one value for the import
    f"CREATE TEMP TABLE {_STAGING.split('.')[1]} "
    "(path TEXT, code INTEGER, label TEXT DEFAULT NULL, content_hash TEXT DEFAULT '', size INTEGER DEFAULT 0, "
    "mtime REAL DEFAULT 0.0, near_code TEXT DEFAULT NULL, near_variants TEXT DEFAULT NULL, near_quality INTEGER DEFAULT NULL, "
    "width INTEGER DEFAULT NULL, height INTEGER DEFAULT NULL, taken_at REAL DEFAULT NULL, camera TEXT DEFAULT NULL, "
    "format TEXT DEFAULT NULL)"
)
# near codes travel as hex in the JSON batches; SQLite before 3.41 has no unhex(): this
# function is registered on the import's connection
_UNHEX = "semhash_unhex"
_STAGED_VALUE = {"indexed_at": "?", "near_code": f"{_UNHEX}(near_code)", "near_variants": f"{_UNHEX}(near_variants)"}
_UPSERT_FROM_STAGING = (
    f"INSERT INTO {ImageRow.__tablename__} ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_STAGED_VALUE.get(c, c) for c in _COLUMNS)} FROM {_STAGING} "
    "WHERE true ORDER BY path, rowid "  # the last of a repeated path wins
    f"ON CONFLICT (path) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _UPDATED)}"
)
#: rebuild the code index after the rows rather than update it row by row when the import
#: brings at least this share of the table's rows (random codes: an update per row misses the cache)
REINDEX_SHARE = 0.25


def _bind_in(session, db: IndexDB, model, hasher, files=()) -> None:
    """Inside the import's transaction: bind a new index to ``model``, or check it is bound
    to the same encoder (codes of two encoders are not comparable).  Near codes in ``files``
    are PDQ's: refused where the index's near codes come from a model."""
    meta = read_meta(session, db.path)
    scheme = meta.near_scheme
    with_near = [f.name for f in files if "near_code" in f.columns or "near_variants" in f.columns]
    if meta.bound and not scheme.is_pdq and with_near:
        raise IndexError_(
            f"{with_near[0]}: its near_code column holds PDQ codes, but the near codes of {db.path} come from "
            f"{scheme.describe()}: import without the near columns, or into an index of PDQ codes"
        )
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


@dataclass
class _Upserted:
    """What one staged upsert did: rows added, rows in the index after, and for a lookup
    refreshed from the one before (:func:`refresh_lookup_after_upsert`): that state's key,
    the generation committed, and every touched row's (id, code); ``ids`` is None when the
    lookup is rebuilt from the record instead."""

    added: int
    total: int
    before: dict[str, Any] | None = None
    generation: int = 0
    ids: Any = None
    codes: Any = None


def _import_sqlite(db: IndexDB, files: list[_File], model, hasher, indexed_at: str, bar) -> _Upserted:
    """SQLite: every batch checked and staged in a temporary table (private to this
    connection, nothing written to the index yet), then one transaction upserts them all in
    path order (sequential inserts into the path index) and, for a large import, rebuilds
    the code index instead of updating it row by row.  An import smaller than the index,
    whose lookup is current, takes back each touched row's (id, code) from the upsert
    (RETURNING), so that the lookup is refreshed without reading every row."""
    from sqlalchemy.orm import Session

    from semhash.index import lookup as hamming_lookup
    from semhash.index.search import id_code_chunks, lookup_key

    n_bits = int(hasher.n_bits)
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection  # autocommit (isolation_level=None) until BEGIN below
        raw.execute(f"PRAGMA main.cache_size = -{_IMPORT_CACHE_KIB}")
        raw.create_function(_UNHEX, 1, lambda text: None if text is None else bytes.fromhex(text), deterministic=True)
        raw.execute(_STAGING_TABLE)
        staged = 0
        for f in files:
            for first, batch in f.batches():
                rows = _prepare(batch, f, first, n_bits, hex_codes=True)
                raw.execute(_stage_sql(rows.columns), (json.dumps(list(rows.tuples())),))
                staged += rows.n
                bar.update(rows.n)
        conn.execution_options(sqlite_begin="IMMEDIATE")  # the write lock, up front
        with conn.begin(), Session(bind=conn) as s:
            _bind_in(s, db, model, hasher, files)
            s.flush()
            meta = read_meta(s, db.path)
            before = raw.execute(f"SELECT max(id) FROM {ImageRow.__tablename__}").fetchone()[0] or 0
            present = raw.execute(f"SELECT count(*) FROM {ImageRow.__tablename__}").fetchone()[0]
            rebuild = staged >= REINDEX_SHARE * (present + staged)
            code_indexes = _code_indexes() if rebuild else []
            for ix in code_indexes:
                ix.drop(bind=conn)
            merge = 0 < staged <= present and hamming_lookup.is_current(db.lookup_path, lookup_key(meta))
            upserted = _Upserted(0, 0)
            if merge:
                cursor = raw.execute(_UPSERT_FROM_STAGING + " RETURNING id, code", (indexed_at,))
                chunks = list(id_code_chunks(cursor))
                upserted.before = lookup_key(meta)
                upserted.ids = np.concatenate([ids for ids, _ in chunks])
                upserted.codes = np.concatenate([codes for _, codes in chunks])
            else:
                raw.execute(_UPSERT_FROM_STAGING, (indexed_at,))
            for ix in code_indexes:
                ix.create(bind=conn)
            added = raw.execute(f"SELECT count(*) FROM {ImageRow.__tablename__} WHERE id > ?", (before,)).fetchone()[0]
            bump_generation(s)
            s.flush()
            upserted.generation = read_meta(s, db.path).generation
        raw.execute(f"DROP TABLE {_STAGING}")
    upserted.added, upserted.total = int(added), int(present) + int(added)
    return upserted


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
        _bind_in(s, db, model, hasher, files)
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


# --------------------------------------------------------------------------- a new index file
#: the in-memory bulk load of a new file takes at most this share of the memory available
#: (its columns, a sorted copy and one batch of Python values); larger imports are staged in SQLite
NEW_FILE_MEMORY_SHARE = 0.4
#: peak memory per byte of Parquet data (uncompressed): 10^7 rows of 563 MB peaked at 2.7 GB
#: (the process's own ~0.3 GB and SQLite's 0.25 GB page cache included)
_NEW_FILE_BYTES_PER_PARQUET_BYTE = 4.0


def _memory_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 0


def _fits_in_memory(files: list[_File]) -> bool:
    """Whether the columns of ``files`` (Parquet's uncompressed size of the row groups, a
    close upper bound of what is imported) fit the in-memory bulk load."""
    data = sum(f.parquet.metadata.row_group(g).total_byte_size for f in files for g in range(f.parquet.metadata.num_row_groups))
    return data * _NEW_FILE_BYTES_PER_PARQUET_BYTE <= NEW_FILE_MEMORY_SHARE * _memory_available()


@dataclass
class _Columns:
    """Every row of an import, checked, in the order they will be stored (by path, one row
    per path): what the bulk load writes and what its lookup is built from."""

    path: Any  # Arrow large_string array of keys
    code: Any  # int64 NumPy array, as stored
    label: Any  # Arrow large_string array, nullable
    content_hash: Any  # Arrow large_string array
    size: Any  # int64 NumPy array
    mtime: Any  # float64 NumPy array
    near: dict[str, Any]  # the NULLABLE_COLUMNS: Arrow arrays, nullable
    given: frozenset[str]  # the optional columns some file had (the others are all defaults)

    def __len__(self) -> int:
        return len(self.code)

    def values(self, name: str, start: int, stop: int) -> list:
        """Rows ``start:stop`` of column ``name`` as Python values, for the driver."""
        column = self.near[name] if name in NULLABLE_COLUMNS else getattr(self, name)
        return column[start:stop].tolist() if isinstance(column, np.ndarray) else column.slice(start, stop - start).to_pylist()


def _read_all(files: list[_File], n_bits: int, bar) -> _Columns:
    """Every batch of every file checked (one line naming the first bad file and row), then
    the rows sorted by path (stable: Arrow's sort) so the path index is written in order,
    and a path that repeats keeps its last row but its first label, as the upsert does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: dict[str, list] = {c: [] for c in ("path", "code", "label", "content_hash", "size", "mtime", *NULLABLE_COLUMNS)}
    near_types = {"near_code": pa.binary(), "near_variants": pa.binary(), "near_quality": pa.int64(), "width": pa.int64(),
                  "height": pa.int64(), "taken_at": pa.float64(), "camera": pa.large_string(), "format": pa.large_string()}  # fmt: skip
    given: set[str] = set()
    for f in files:
        for first, batch in f.batches():
            checked, n = _checked(batch, f, first, n_bits), batch.num_rows
            given.update(checked)
            parts["path"].append(checked["path"].cast(pa.large_string()))
            parts["code"].append(checked["code"])
            parts["label"].append(checked["label"].cast(pa.large_string()) if "label" in checked else pa.nulls(n, pa.large_string()))
            parts["content_hash"].append(checked["content_hash"].cast(pa.large_string()) if "content_hash" in checked
                                         else pa.repeat(pa.scalar("", pa.large_string()), n))  # fmt: skip
            parts["size"].append(checked["size"].to_numpy() if "size" in checked else np.zeros(n, np.int64))
            parts["mtime"].append(checked["mtime"].to_numpy() if "mtime" in checked else np.zeros(n, np.float64))
            for name, kind in near_types.items():
                parts[name].append(checked[name] if name in checked else pa.nulls(n, kind))
            bar.update(n)

    def arrow(name: str):
        return pa.concat_arrays(parts.pop(name)) if parts[name] else pa.array([], pa.large_string())

    def numpy(name: str, dtype):
        return np.concatenate(parts.pop(name)) if parts[name] else np.zeros(0, dtype)

    near = {name: pa.concat_arrays(parts.pop(name)) if parts[name] else pa.array([], kind) for name, kind in near_types.items()}
    path, label, content_hash = arrow("path"), arrow("label"), arrow("content_hash")
    code, size, mtime = numpy("code", np.int64), numpy("size", np.int64), numpy("mtime", np.float64)
    n = len(path)
    if n > 1 and pc.any(pc.less(path.slice(1), path.slice(0, n - 1))).as_py():
        order = pc.sort_indices(path)  # stable: repeated paths stay in file order
        path, label, content_hash = path.take(order), label.take(order), content_hash.take(order)
        near = {name: column.take(order) for name, column in near.items()}
        order = order.to_numpy()
        code, size, mtime = code[order], size[order], mtime[order]
    repeated = pc.equal(path.slice(1), path.slice(0, n - 1)).to_numpy(zero_copy_only=False) if n > 1 else np.zeros(0, bool)
    if repeated.any():
        last = np.flatnonzero(np.append(~repeated, True))  # the last row of each path
        starts = np.append(True, ~repeated)  # the first row of each path
        first_of_run = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        path, content_hash = path.take(pa.array(last)), content_hash.take(pa.array(last))
        near = {name: column.take(pa.array(last)) for name, column in near.items()}
        label = label.take(pa.array(first_of_run[last]))
        code, size, mtime = code[last], size[last], mtime[last]
    return _Columns(path, code, label, content_hash, size, mtime, near, given=frozenset(given) - {"path", "code"})


def _sqlite_uri(path: Path, mode: str) -> str:
    return f"file:{quote(os.fsencode(path))}?mode={mode}"


#: SQLite page size of a bulk-loaded file: at 10^7 rows 16 KiB pages take 2 s (9%) off the
#: inserts against the default 4 KiB (`python -m benchmarks bulk-load`); SQLite reads any size.
#: Files the indexer creates keep 4 KiB: its small transactions write whole pages to the WAL.
NEW_FILE_PAGE_SIZE = 16384


def _create_empty(path: Path, page_size: int) -> None:
    """A new SQLite file whose pages are ``page_size`` bytes (fixed when its first page is
    written: an empty table, created and dropped, writes it)."""
    import sqlite3

    con = interruptible(sqlite3.connect(_sqlite_uri(path, "rwc"), uri=True, isolation_level=None))
    try:
        con.execute(f"PRAGMA page_size={int(page_size)}")
        con.execute("CREATE TABLE semhash_page_size (x)")
        con.execute("DROP TABLE semhash_page_size")
    finally:
        con.close()


def _write_new_file(staging: Path, rows: _Columns, model, hasher, indexed_at: str, bar) -> int:
    """Create a whole index in ``staging`` (a file nobody else knows of): schema and meta as
    any new index has them, then every row in one pass with the code index built after, with
    no rollback journal (a failure deletes the file).  Returns its generation."""
    import sqlite3

    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.schema import CreateIndex

    _create_empty(staging, NEW_FILE_PAGE_SIZE)
    with open_index(staging, create=True) as db, db.write_session() as s, s.begin():
        _bind_in(s, db, model, hasher)
        bump_generation(s)
        s.flush()
        generation = read_meta(s, db.path).generation
    code_indexes = _code_indexes()
    con = interruptible(sqlite3.connect(_sqlite_uri(staging, "rw"), uri=True, isolation_level=None))
    try:
        con.execute("PRAGMA journal_mode=DELETE")  # out of WAL, so that ...
        con.execute("PRAGMA journal_mode=OFF")  # ... nothing is written twice
        con.execute("PRAGMA synchronous=OFF")  # one fsync of the whole file before it is linked in
        con.execute(f"PRAGMA cache_size=-{_IMPORT_CACHE_KIB}")
        con.execute("BEGIN")
        for ix in code_indexes:  # built once after the rows, not updated row by row
            con.execute(f"DROP INDEX {ix.name}")
        # the driver's cost grows with the values bound (eight per row: 27.4 CPU-s at 10^7,
        # three: 22.1): a column no file gave is a literal, as is the one timestamp, and ids
        # are the rowids SQLite assigns, 1..n in order
        bound = ["path", "code", *[c for c in ("label", "content_hash", "size", "mtime", *NULLABLE_COLUMNS) if c in rows.given]]
        literal = {"label": "NULL", "content_hash": "''", "size": "0", "mtime": "0.0", "indexed_at": f"'{indexed_at}'",
                   **dict.fromkeys(NULLABLE_COLUMNS, "NULL")}  # fmt: skip
        names = [*bound, *[c for c in literal if c not in bound]]
        insert = (
            f"INSERT INTO {ImageRow.__tablename__} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' if c in bound else literal[c] for c in names)})"
        )
        n = len(rows)
        for start in range(0, n, BATCH_ROWS):
            stop = min(start + BATCH_ROWS, n)
            con.executemany(insert, zip(*[rows.values(c, start, stop) for c in bound]))
            bar.update(stop - start)
        last_id = con.execute(f"SELECT max(id) FROM {ImageRow.__tablename__}").fetchone()[0] or 0
        if last_id != n:  # the lookup is built with ids 1..n
            raise IndexError_(f"{staging}: the bulk load assigned ids up to {last_id}, not {n}")
        bar.set_description("indexing codes")  # ~a quarter of the load, after the last row
        for ix in code_indexes:
            con.execute(str(CreateIndex(ix).compile(dialect=sqlite_dialect.dialect())))
        con.execute("COMMIT")
        con.execute("PRAGMA journal_mode=WAL")  # as every index is
    finally:
        con.close()
    fd = os.open(staging, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return int(generation)


def _remove_abandoned_builds(target: Path) -> None:
    """Files a killed import left beside ``target`` (their process is gone)."""
    remove_abandoned(target.parent, importing_pattern(target))


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}  # FAT, some network mounts


def _link_into_place(staging: Path, target: Path) -> None:
    """The built file becomes the index, at once and only if no index appeared there
    meanwhile (a hard link never replaces a file; a file system without them gets a rename
    after one last check)."""
    try:
        os.link(staging, target)
    except FileExistsError:
        raise IndexError_(
            f"{target}: another process created this index during the import; nothing was imported: "
            "run the import again to add the rows to it"
        ) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise IndexError_(f"{target}: cannot put the index in place ({exc.strerror or exc})") from None
        if target.exists():
            raise IndexError_(f"{target}: another process created this index during the import; nothing was imported") from None
        try:
            os.replace(staging, target)
        except OSError as exc2:
            raise IndexError_(f"{target}: cannot put the index in place ({exc2.strerror or exc2})") from None
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _import_new_file(target: Path, files: list[_File], model, hasher, summary: ImportSummary, bar) -> None:
    """An import that creates its index: every row read, checked and ordered in memory, the
    file built beside the target under a hidden name and linked into place when complete,
    so that until then there is no index and a failure (or Ctrl-C) leaves none; the lookup
    is built from the rows in hand.  1.8x the staged path's rate at 10^7 rows: no staging
    table, no write-ahead log, no reading back (docs/BENCHMARKS.md)."""
    import pyarrow.compute as pc

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexError_(f"{target}: cannot create the index folder ({exc.strerror or exc})") from None
    rows = _read_all(files, int(hasher.n_bits), bar)
    now = utc_now()
    # the process id tells a later import whether this one is still running
    staging = target.with_name(f".{target.name}.importing-{os.getpid()}-{secrets.token_hex(4)}")
    _remove_abandoned_builds(target)
    bar.reset(total=len(rows))
    bar.set_description("writing")
    try:
        with database_errors(target):
            try:
                generation = _write_new_file(staging, rows, model, hasher, now.strftime("%Y-%m-%d %H:%M:%S.%f"), bar)
            except IndexError_ as exc:  # name the index, not the file it is being built in
                raise IndexError_(str(exc).replace(str(staging), str(target))) from None
            except OSError as exc:
                raise IndexError_(f"{target}: cannot write the index ({exc.strerror or exc})") from None
            _link_into_place(staging, target)
    finally:
        with signals_deferred():  # a second Ctrl-C or SIGTERM does not leave half of them
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    os.unlink(f"{staging}{suffix}")
                except OSError:
                    pass
    summary.added = summary.total = len(rows)
    summary.updated = summary.rows - summary.added
    figures = {"labels": int(pc.count_distinct(rows.label, mode="only_valid").as_py()), "last_indexed_at": now.isoformat()}
    with open_index(target) as db, database_errors(db.path):
        summary.index_path, summary.lookup_path = db.path, db.lookup_path
        save_lookup_of_rows(db, generation, np.arange(1, len(rows) + 1, dtype=np.int64), rows.code, figures)
        _refresh_near_cache_if(db, files)


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
    # SI prefixes (1.2M rows) only where they shorten the figures: 3 rows read "3/3", not "3.00/3.00"
    bar = tqdm(total=total_rows, desc="importing", unit="row", unit_scale=total_rows >= 10_000, file=sys.stderr,
               disable=not progress, leave=False)  # fmt: skip
    location = IndexLocation.parse(index_path)  # a file, or a database URL
    created = location.file is not None and not location.file.exists()
    try:
        if created and not location.file.is_symlink() and _fits_in_memory(files):
            with bar:
                _import_new_file(location.file.expanduser().absolute(), files, model, hasher, summary, bar)
        else:
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
            upserted = _import_sqlite(db, files, model, hasher, indexed_at, bar)
            summary.added, summary.total = upserted.added, upserted.total
            summary.updated = summary.rows - summary.added
            if upserted.ids is not None:
                refresh_lookup_after_upsert(db, upserted.before, upserted.generation, upserted.ids, upserted.codes)
                _refresh_near_cache_if(db, files)
                return
        else:
            indexed_at = utc_now()
            summary.added = _import_generic(db, files, model, hasher, indexed_at, bar)
            summary.total = db.count()
        summary.updated = summary.rows - summary.added
        refresh_lookup(db)


def _refresh_near_cache_if(db: IndexDB, files: list[_File]) -> None:
    """The near tier's cache, rebuilt only when the import brought near codes (else the
    import changed nothing it holds that a reader cannot build at its first near query, and
    a 10^7-row import is not made to scan the table once more)."""
    from semhash.index.tiers import refresh_near_cache

    if any("near_code" in f.columns for f in files):
        refresh_near_cache(db)


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
