"""Codes or image files -> indexed images within a Hamming radius.

Two interchangeable methods, which must always agree (the tests check it):

* ``faiss`` (default): range search on the faiss binary cache, any radius up to n_bits.
* ``sql``: enumerate every code within the radius (:func:`semhash.hashing.neighbour_codes`)
  and look them up on the indexed ``code`` column, ``IN (...)`` lists of at most 500.  The
  number of neighbours grows as C(n_bits, r), so it is only allowed up to radius 4; it is
  the plain-SQLite reference the faiss path is checked against.

Results are nearest first, ties broken by path, so output is deterministic.  Paths are the
stored keys (:mod:`semhash.index.pathkeys`): printable text; ``key_path`` gives the file.

The faiss cache never answers on its own: a search reads the record's meta, checks the cache
against it, and reads back every row it reports, all in one read transaction.  A reported
row must exist in the record with a code at the distance the cache gave; if not (the record
was changed behind semhash's back) the cache is rebuilt from that same snapshot, and if the
record still disagrees with itself it is reported damaged.  That costs O(matches), not O(N).
Every database error becomes one line naming the index file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from semhash.data import decode_image
from semhash.errors import IndexDamagedError, IndexError_, ModelError
from semhash.hashing import code_to_str, from_signed64, neighbour_codes, to_signed64
from semhash.index import faiss_store
from semhash.index.db import (
    DAMAGED_HINT,
    SCHEMA_VERSION,
    ImageRow,
    IndexDB,
    IndexMeta,
    chunked,
    database_errors,
    open_index,
    read_meta,
)
from semhash.index.pathkeys import path_key
from semhash.workspace import Workspace

SQL_MAX_RADIUS = 4
METHODS = ("faiss", "sql")


@dataclass(frozen=True)
class Match:
    """One indexed image found near a query."""

    path: str  # the stored key: the path, undecodable bytes as \xNN (pathkeys.key_path reverses it)
    distance: int
    label: str | None
    code: int


@dataclass
class QueryResult:
    """One query image, its code and what the index holds near it."""

    query: str  # the query path as given, as a key (printable)
    code: int
    bits: str  # the code's bits, unit 0 first (hashing.code_to_str)
    matches: list[Match]
    total: int | None = None  # matches within the radius before the limit (None: len(matches))

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = len(self.matches)


@dataclass
class IndexedCodes:
    """Every row of an index as arrays (for evaluation), ordered by path."""

    ids: np.ndarray  # int64
    paths: list[str]
    labels: list[str | None]
    codes: np.ndarray  # uint64
    n_bits: int
    model_name: str
    model_fingerprint: str


def _bound_meta(db: IndexDB) -> IndexMeta:
    meta = db.meta()
    if not meta.bound:
        raise IndexError_(f"{db.path}: the index is empty: run 'semhash index DIR' first")
    return meta


def _check_codes(codes: Any, n_bits: int) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.uint64).reshape(-1)
    if n_bits < 64 and len(codes) and int(codes.max()) >> n_bits:
        raise ValueError(f"query codes have bits set above the index's {n_bits} bits")
    return codes


def _check_radius(radius: int, n_bits: int, method: str, path: Path) -> int:
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}: use one of {', '.join(METHODS)}")
    radius = int(radius)
    if not 0 <= radius <= n_bits:
        raise IndexError_(f"{path}: radius {radius} is outside 0..{n_bits} for this {n_bits}-bit index")
    if method == "sql" and radius > SQL_MAX_RADIUS:
        raise IndexError_(f"{path}: the sql search method handles radius <= {SQL_MAX_RADIUS}, got {radius}: use faiss")
    return radius


def _rows_by_id(session: Session, ids: Iterable[int]) -> dict[int, tuple[str, str | None, int]]:
    ids = sorted({int(i) for i in ids})
    found: dict[int, tuple[str, str | None, int]] = {}
    for chunk in chunked(ids):
        stmt = select(ImageRow.id, ImageRow.path, ImageRow.label, ImageRow.code).where(ImageRow.id.in_(chunk))
        for i, path, label, code in session.execute(stmt).tuples():
            found[i] = (path, label, from_signed64(code))
    return found


def _finish(matches: list[Match], limit: int | None) -> list[Match]:
    matches.sort(key=lambda m: (m.distance, m.path))
    return matches if limit is None else matches[:limit]


def _confirmed(hits, rows, codes: np.ndarray) -> bool:
    """Every hit names a row the record holds, at the distance the cache gave."""
    for (ids, distances), query in zip(hits, codes.tolist()):
        for i, d in zip(ids.tolist(), distances.tolist()):
            row = rows.get(i)
            if row is None or (query ^ row[2]).bit_count() != d:
                return False
    return True


def _search_faiss(db: IndexDB, codes: np.ndarray, radius: int, n_bits: int, limit: int | None) -> list[list[Match]]:
    packed = faiss_store.pack_codes(codes, n_bits)
    with db.session() as s, s.begin():  # one snapshot: meta, cache check and every reported row
        meta = read_meta(s, db.path)
        index = faiss_store.load_cached(db, meta)
        rebuilt = index is None
        if rebuilt:
            index = faiss_store.rebuild(db, s)
        while True:
            hits = faiss_store.range_search(index, packed, radius)
            rows = _rows_by_id(s, (i for ids, _ in hits for i in ids))
            if _confirmed(hits, rows, codes):
                break
            if rebuilt:  # built from this very snapshot and still at odds with it
                raise IndexDamagedError(
                    f"{db.path}: the index is damaged (rows read by id disagree with a full read): {DAMAGED_HINT}"
                )
            index, rebuilt = faiss_store.rebuild(db, s), True  # edited behind our back: trust the record
    return [
        _finish([Match(rows[i][0], int(d), rows[i][1], rows[i][2]) for i, d in zip(ids.tolist(), ds.tolist())], limit)
        for ids, ds in hits
    ]


# the driver's positional placeholder: sqlite3 takes '?', psycopg '%s'
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


@lru_cache(maxsize=None)
def _code_lookup_sql(n: int, paramstyle: str = "qmark") -> str:
    """Driver-level SQL for ``code IN (n placeholders)``, cached per chunk length and
    driver: compiling an expanding ORM IN clause costs milliseconds, and radius 4 on 64 bits
    is ~1,400 chunks of 500 neighbour codes per query."""
    marker = _PLACEHOLDERS[paramstyle]
    return f"SELECT path, label, code FROM {ImageRow.__tablename__} WHERE code IN ({', '.join([marker] * n)})"


_CODE_ANY_SQL = f"SELECT path, label, code FROM {ImageRow.__tablename__} WHERE code = ANY(%s)"


def _search_sql(db: IndexDB, codes: np.ndarray, radius: int, n_bits: int, limit: int | None) -> list[list[Match]]:
    results = []
    with db.session() as s, s.begin():
        conn = s.connection()
        paramstyle = conn.dialect.paramstyle
        for query in codes.tolist():
            neighbours = [to_signed64(code) for code, _ in neighbour_codes(query, n_bits, radius)]
            matches = []
            if paramstyle == "qmark":  # SQLite: IN lists under its variable limit
                statements = [(_code_lookup_sql(len(chunk), paramstyle), tuple(chunk)) for chunk in chunked(neighbours, 500)]
            else:  # PostgreSQL: one statement, every neighbour in one array parameter
                statements = [(_CODE_ANY_SQL, (neighbours,))]
            for sql, params in statements:
                for path, label, stored in conn.exec_driver_sql(sql, params):
                    code = from_signed64(stored)
                    matches.append(Match(path, (query ^ code).bit_count(), label, code))
            results.append(_finish(matches, limit))
    return results


def _search(
    db: IndexDB, meta: IndexMeta, codes: Any, radius: int, limit: int | None, method: str
) -> list[list[Match]]:
    n_bits = int(meta.n_bits)  # type: ignore[arg-type]
    radius = _check_radius(radius, n_bits, method, db.path)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    codes = _check_codes(codes, n_bits)
    if len(codes) == 0:
        return []
    search = _search_faiss if method == "faiss" else _search_sql
    return search(db, codes, radius, n_bits, None if limit is None else int(limit))


def search_codes(
    index_path: str | Path,
    codes: np.ndarray | Sequence[int],
    radius: int,
    limit: int | None = None,
    method: str = "faiss",
) -> list[list[Match]]:
    """For each query code, the indexed images within Hamming ``radius`` (inclusive),
    nearest first then by path, at most ``limit`` each."""
    with open_index(index_path) as db, database_errors(db.path):
        return _search(db, _bound_meta(db), codes, radius, limit, method)


def query_files(
    index_path: str | Path,
    workspace: Workspace,
    paths: Sequence[str | Path],
    radius: int = 2,
    limit: int | None = None,
) -> list[QueryResult]:
    """Hash image files with the model the index was built with, then search.

    The model is taken from the index's metadata, not from the caller, and its fingerprint
    must still match: codes from a retrained or re-exported encoder are not comparable with
    the stored ones.  An unreadable query image raises ImageError.
    """
    with open_index(index_path) as db, database_errors(db.path):
        meta = _bound_meta(db)
        try:
            model = workspace.model(meta.model_name)
        except ModelError as exc:
            raise IndexError_(
                f"{db.path}: the index was built with model {meta.model_name!r}, which cannot be loaded "
                f"({exc}): re-run `semhash index --rebuild` with an existing model"
            ) from None
        hasher = model.load_hasher()
        if hasher.fingerprint != meta.model_fingerprint or hasher.n_bits != meta.n_bits:
            raise IndexError_(
                f"{db.path}: model {meta.model_name!r} changed since indexing (fingerprint "
                f"{meta.model_fingerprint} -> {hasher.fingerprint}): re-run `semhash index --rebuild`"
            )
        if not paths:
            return []
        images = np.stack([decode_image(p, hasher.input_shape) for p in paths])
        codes = hasher.hash(images)
        if limit is not None and int(limit) < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        found = _search(db, meta, codes, radius, None, "faiss")  # all of them: the total is reported
        return [
            QueryResult(path_key(p), int(c), code_to_str(int(c), hasher.n_bits), m if limit is None else m[: int(limit)], len(m))
            for p, c, m in zip(paths, codes.tolist(), found)
        ]


def load_index_codes(index_path: str | Path) -> IndexedCodes:
    """Every indexed row's code as arrays, read in one snapshot (for evaluation)."""
    with open_index(index_path) as db, database_errors(db.path):
        with db.session() as s, s.begin():
            meta = read_meta(s, db.path)
            if not meta.bound:
                raise IndexError_(f"{db.path}: the index is empty: run 'semhash index DIR' first")
            rows = s.execute(
                select(ImageRow.id, ImageRow.path, ImageRow.label, ImageRow.code).order_by(ImageRow.path)
            ).tuples().all()
    return IndexedCodes(
        ids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
        paths=[r[1] for r in rows],
        labels=[r[2] for r in rows],
        codes=np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows)).view(np.uint64),
        n_bits=int(meta.n_bits),  # type: ignore[arg-type]
        model_name=str(meta.model_name),
        model_fingerprint=str(meta.model_fingerprint),
    )


def index_info(index_path: str | Path) -> dict[str, Any]:
    """A summary for ``semhash status``: what is indexed, with which model, where."""
    with open_index(index_path) as db, database_errors(db.path):
        with db.session() as s, s.begin():
            meta = read_meta(s, db.path)
            count = int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)
            n_labels = int(s.scalar(select(func.count(distinct(ImageRow.label)))) or 0)
            last = s.scalar(select(func.max(ImageRow.indexed_at)))
        return {
            "index_path": str(db.path),
            "faiss_path": str(db.faiss_path),
            "faiss_current": faiss_store.is_current(db, meta),
            "schema_version": meta.schema_version,
            "supported_schema_version": SCHEMA_VERSION,
            "count": count,
            "labels": n_labels,
            "model": meta.model_name,
            "model_fingerprint": meta.model_fingerprint,
            "bits": meta.n_bits,
            "input_shape": list(meta.input_shape) if meta.input_shape else None,
            "created_at": meta.created_at,
            "last_indexed_at": last.isoformat() if last is not None else None,
            "generation": meta.generation,
        }
