"""Codes or image files -> indexed images within a Hamming radius.

Two interchangeable methods, which must always agree (the tests check it):

* ``lookup`` (default): the Hamming lookup cache (:mod:`semhash.index.lookup`), any radius
  up to n_bits, at a cost set by the neighbour keys probed and the answer, not by N.
* ``sql``: enumerate every code within the radius (:func:`semhash.hashing.neighbour_codes`)
  and look them up on the indexed ``code`` column, ``IN (...)`` lists of at most 500.  The
  number of neighbours grows as C(n_bits, r), so it is only allowed up to radius 4; it is
  the plain-SQL reference the lookup is checked against.

Results are nearest first, ties broken by path, so output is deterministic.  Paths are the
stored keys (:mod:`semhash.index.pathkeys`): printable text; ``key_path`` gives the file.

The lookup is a cache beside the record: ``index.sqlite`` gets ``index.lookup`` (one file,
memory-mapped when opened), whose header names the record state it was built from
(:func:`lookup_key`: created_at, generation, model fingerprint, bits).  It is rebuilt from
the record, streaming ``(id, code)`` rows, whenever it is missing, unreadable or stale.  It
never answers on its own: a search reads the record's meta, checks the cache against it,
and reads back every row it reports, all in one read transaction.  A reported row must
exist in the record with a code at the distance the cache gave; if not (the record was
changed behind semhash's back) the cache is rebuilt from that same snapshot, and if the
record still disagrees with itself it is reported damaged.  That costs O(matches), not
O(N).  Every database error becomes one line naming the index file.

:func:`open_lookup` gives a long-lived caller (the web service) a :class:`Searcher` loaded
once per record state, without ever writing the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from semhash.errors import IndexDamagedError, IndexError_, ModelError, SemhashError
from semhash.hashing import code_to_str, from_signed64, neighbour_codes, to_signed64
from semhash.index import lookup as hamming_lookup
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
from semhash.index.pathkeys import path_key, printable
from semhash.workspace import Workspace

SQL_MAX_RADIUS = 4
METHODS = ("lookup", "sql")
LOOKUP_SUFFIX = ".lookup"
_FETCH_ROWS = 1 << 16  # rows per fetch while streaming (id, code) into a lookup build


class CodeError(SemhashError):
    """A query code given as text that is not a code of the index's width."""


@dataclass(frozen=True)
class Match:
    """One indexed image found near a query."""

    path: str  # the stored key: the path, undecodable bytes as \xNN (pathkeys.key_path reverses it)
    distance: int  # in the code of the tier it matched in
    label: str | None
    code: int
    tier: str = "similar"  # exact (same bytes), near (a copy: PDQ), similar (the model's code)


@dataclass
class QueryResult:
    """One query image, its code and what the index holds near it."""

    query: str  # the query path as given, as a key (printable)
    code: int
    bits: str  # the code's bits, unit 0 first (hashing.code_to_str)
    matches: list[Match]
    total: int | None = None  # matches within the radius before the limit (None: len(matches))
    note: str | None = None  # a code query that could be read two ways: which reading was used
    #: a query image too flat for the near tier (PDQ quality below MIN_QUALITY): its quality
    flat_quality: int | None = None
    tier: str = "similar"  # the tiers searched: all, exact, near or similar

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
        raise IndexError_(f"{path}: the sql search method handles radius <= {SQL_MAX_RADIUS}, got {radius}: use lookup")
    return radius


def parse_code(text: str | int, n_bits: int) -> int:
    """A query code as given: exactly ``n_bits`` characters of 0/1 are the bits, unit 0 first
    (as ``semhash query`` prints them); otherwise a decimal integer below ``2**n_bits``.
    :class:`CodeError` (one line saying what is accepted) for anything else."""
    return read_code(text, n_bits)[0]


def read_code(text: str | int, n_bits: int) -> tuple[int, str | None]:
    """:func:`parse_code`, and a note saying which reading was used when the text could
    mean two codes: 0/1 digits of another length than ``n_bits`` (``0101`` on a 30-bit index:
    the integer 101, not bits), or ``n_bits`` of them that are also an integer in range
    (only possible with leading zeros: the bits win).  None when the text is unambiguous."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        code = int(text)
        if not 0 <= code < 1 << n_bits:
            raise CodeError(f"code {code} is outside 0..2**{n_bits}-1 for this {n_bits}-bit index")
        return code, None
    value = str(text).strip()
    binary = len(value) > 1 and set(value) <= {"0", "1"}
    if binary and len(value) == n_bits:
        code = int(value[::-1], 2)
        other = int(value)
        note = None
        if other < 1 << n_bits and other != code:
            note = (f"code {value!r} read as {n_bits} bits, unit 0 first (the integer {code}); "
                    f"for the integer {other}, write it without leading zeros")
        return code, note
    if value.isascii() and value.isdigit() and len(value) <= 20:
        code = int(value)
        if code >> n_bits:
            raise CodeError(f"code {code} has bits set above this index's {n_bits} bits")
        note = None
        if binary and int(value[::-1], 2) != code:
            note = (f"code {value!r} read as the integer {code}: as bits (unit 0 first) a code of this "
                    f"index needs exactly {n_bits} characters of 0/1")
        return code, note
    shown = value if len(value) <= 80 else value[:77] + "..."
    raise CodeError(
        f"code {shown!r}: give {n_bits} bits (0/1, unit 0 first, as `semhash query` prints them) "
        f"or an integer below 2**{n_bits}"
    )


# --------------------------------------------------------------------------- the lookup cache
def lookup_path_for(db_path: str | Path) -> Path:
    """``.../index.sqlite`` -> ``.../index.lookup`` (same folder, never the db itself)."""
    db_path = Path(db_path)
    if db_path.suffix == LOOKUP_SUFFIX:
        return db_path.with_name(db_path.name + LOOKUP_SUFFIX)
    return db_path.with_suffix(LOOKUP_SUFFIX)


def lookup_key(meta: IndexMeta) -> dict[str, Any]:
    """The record state a lookup is built from and must match to be used: a rebuild, any row
    change (the generation) and a new model each change it."""
    return {
        "created_at": meta.created_at,
        "generation": meta.generation,
        "model_fingerprint": meta.model_fingerprint,
        "n_bits": meta.n_bits,
    }


def lookup_is_current(db: IndexDB, meta: IndexMeta | None = None) -> bool:
    """Whether the lookup file beside ``db`` was built from the record's current state
    (reads the file's header only)."""
    meta = meta if meta is not None else db.meta()
    return hamming_lookup.is_current(db.lookup_path, lookup_key(meta))


def stream_codes(session: Session) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every row's ``(ids int64, codes int64 as stored)``, in chunks, read in ``session``'s
    transaction on the raw DBAPI cursor: a tuple per row is all the driver makes, no ORM row,
    and each chunk becomes two arrays in one pass in C."""
    raw = session.connection().connection
    # PostgreSQL: a server-side cursor, so the rows arrive a chunk at a time, not all at once
    cursor = raw.cursor(name="semhash_stream_codes") if session.get_bind().dialect.name == "postgresql" else raw.cursor()
    try:
        cursor.execute(f"SELECT id, code FROM {ImageRow.__tablename__}")
        yield from id_code_chunks(cursor)
    finally:
        cursor.close()


def id_code_chunks(cursor) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``(id, code)`` rows a DBAPI cursor has to give, as ``(ids, codes)`` int64 arrays
    in chunks."""
    while True:
        rows = cursor.fetchmany(_FETCH_ROWS)
        if not rows:
            break
        # one pass over the tuples in C: 3x faster than np.array on a list of tuples
        pairs = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=2 * len(rows)).reshape(-1, 2)
        yield pairs[:, 0], pairs[:, 1]


def _build_lookup(db: IndexDB, session: Session, meta: IndexMeta, write: bool) -> hamming_lookup.HammingLookup:
    """A lookup built from ``session``'s snapshot; saved beside the record when ``write`` (a
    file that cannot be written, in a read-only folder or on a full disk, is no error: the
    built lookup still answers this search)."""
    built = hamming_lookup.build_from_rows(stream_codes(session), int(meta.n_bits or 64))
    if write:
        _save_lookup(db, meta, built, _record_figures(session, built.count))
    return built


def _record_figures(session: Session, count: int) -> dict[str, Any]:
    """What ``semhash status`` shows besides the meta, read from the record.  The writer that
    builds the lookup keeps them in its header (one scan per record state instead of one per
    status: at 10^7 rows these two aggregates take seconds); status reads them there."""
    n_labels, last = session.execute(select(func.count(distinct(ImageRow.label)), func.max(ImageRow.indexed_at))).one()
    return {
        "count": int(count),
        "labels": int(n_labels or 0),
        "last_indexed_at": last.isoformat() if last is not None else None,
    }


@dataclass
class Searcher:
    """A lookup loaded for one record state (``key``): ``search`` answers any number of
    queries from it.  ``source`` says where it came from ("cache file" or "built in memory")."""

    lookup: hamming_lookup.HammingLookup
    key: dict[str, Any]
    source: str

    @property
    def n_bits(self) -> int:
        return self.lookup.n_bits

    def search(self, codes: Any, radius: int) -> hamming_lookup.Matches:
        """Every row within ``radius`` of each code, as flat arrays sorted by (distance, id)."""
        return self.lookup.search(codes, radius)


def _load(db: IndexDB, session: Session, meta: IndexMeta, write: bool) -> Searcher:
    key = lookup_key(meta)
    n_bits = int(meta.n_bits)  # type: ignore[arg-type]
    cached = hamming_lookup.HammingLookup.load(db.lookup_path, key)
    if cached is not None and cached.n_bits == n_bits:
        return Searcher(cached, key, "cache file")
    return Searcher(_build_lookup(db, session, meta, write), key, "built in memory")


def open_lookup(db: IndexDB, *, write: bool = False) -> tuple[IndexMeta, Searcher | None]:
    """The record's meta and a :class:`Searcher` for its current state, read in one snapshot:
    the lookup file when it is current, else one built from the record (saved only when
    ``write``: a read-only service passes False and builds in memory).  The searcher is None
    while the index is empty (not bound to a model)."""
    with database_errors(db.path), db.session() as s, s.begin():
        meta = read_meta(s, db.path)
        if not meta.bound:
            return meta, None
        return meta, _load(db, s, meta, write)


def refresh_lookup(db: IndexDB) -> None:
    """Leave the lookup files current after a write (``semhash index``, ``import``, ``remove``),
    so the next query opens them instead of rebuilding them: the Hamming lookup and the near
    tier's (:func:`semhash.index.tiers.refresh_near_cache`)."""
    from semhash.index.tiers import refresh_near_cache

    with db.session() as s, s.begin():
        meta = read_meta(s, db.path)
        if meta.bound and not hamming_lookup.is_current(db.lookup_path, lookup_key(meta)):
            _build_lookup(db, s, meta, write=True)
    refresh_near_cache(db)


def refresh_lookup_after_upsert(
    db: IndexDB, before: dict[str, Any], generation: int, ids: np.ndarray, codes: np.ndarray
) -> None:
    """After a write that only inserted or updated the rows ``ids`` (``codes`` as stored; a
    repeated id's last code counts): the lookup that was current for the state ``before``
    it, with those rows put in, instead of every row read back (at 10^7 rows the read-back is
    most of a small import's time).  When that lookup is not there, another writer has been
    in since (the record is not at ``generation``), or the merged count is not the record's,
    the lookup is rebuilt from the record as :func:`refresh_lookup` does."""
    with db.session() as s, s.begin():
        meta = read_meta(s, db.path)
        if not meta.bound or hamming_lookup.is_current(db.lookup_path, lookup_key(meta)):
            return
        old = hamming_lookup.HammingLookup.load(db.lookup_path, before) if meta.generation == int(generation) else None
        if old is not None and old.n_bits == meta.n_bits:
            ids, codes = np.asarray(ids, np.int64), np.asarray(codes, np.int64)
            last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]  # each id's last row
            ids, codes = ids[last], codes[last]
            old_ids, old_codes = old.codes()
            kept = ~np.isin(old_ids, ids)
            count = int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)
            if int(kept.sum()) + len(ids) == count:
                built = hamming_lookup.build_from_rows([(old_ids[kept], old_codes[kept]), (ids, codes)], int(meta.n_bits))
                _save_lookup(db, meta, built, _record_figures(s, built.count))
                return
        _build_lookup(db, s, meta, write=True)


def save_lookup_of_rows(db: IndexDB, generation: int, ids: np.ndarray, codes: np.ndarray, figures: dict[str, Any]) -> None:
    """After a bulk load whose every row the writer still holds (``ids``, ``codes`` as stored,
    and the ``figures`` status shows): save the lookup built from them instead of reading
    the rows back.  Only while the record is still at ``generation`` (the state that load
    committed); if another writer has been in since, the lookup is built from the record."""
    with db.session() as s, s.begin():
        meta = read_meta(s, db.path)
        if not meta.bound:
            return
        if meta.generation != int(generation):
            if not hamming_lookup.is_current(db.lookup_path, lookup_key(meta)):
                _build_lookup(db, s, meta, write=True)
            return
        built = hamming_lookup.build_from_rows([(ids, codes)], int(meta.n_bits or 64))
        _save_lookup(db, meta, built, {**figures, "count": built.count})


def _save_lookup(db: IndexDB, meta: IndexMeta, built: hamming_lookup.HammingLookup, info: dict[str, Any]) -> None:
    """Save ``built`` beside the record for its state ``meta``; a file that cannot be written
    (read-only folder, full disk) is no error: the first query builds one in memory."""
    try:  # the record's permissions (a file's own; owner-only for a database)
        built.save(db.lookup_path, lookup_key(meta), mode=db.cache_file_mode(), info=info)
    except OSError:
        pass


# --------------------------------------------------------------------------- searching
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


def first_tiers(ids: np.ndarray, distances: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Of one query's hits, those that can be among its first ``limit`` once equal distances
    are ordered by path: every hit up to the distance of the limit-th nearest (whole tiers)."""
    if limit is None or len(ids) <= limit:
        return ids, distances
    boundary = np.partition(distances, limit - 1)[limit - 1]
    keep = distances <= boundary
    return ids[keep], distances[keep]


def _search_lookup(
    db: IndexDB, codes: np.ndarray, radius: int, limit: int | None
) -> list[tuple[list[Match], int]]:
    with db.session() as s, s.begin():  # one snapshot: meta, cache check and every reported row
        meta = read_meta(s, db.path)
        searcher = _load(db, s, meta, write=True)
        rebuilt = searcher.source != "cache file"
        while True:
            found = searcher.search(codes, radius)  # all of them: the total is reported
            kept = [first_tiers(*found[q], limit) for q in range(len(codes))]
            rows = _rows_by_id(s, np.concatenate([ids for ids, _ in kept]) if kept else [])
            if _confirmed(kept, rows, codes):
                break
            if rebuilt:  # built from this very snapshot and still at odds with it
                raise IndexDamagedError(
                    f"{db.path}: the index is damaged (rows read by id disagree with a full read): {DAMAGED_HINT}"
                )
            # edited behind our back: trust the record
            searcher, rebuilt = Searcher(_build_lookup(db, s, meta, write=True), lookup_key(meta), "built"), True
    totals = found.counts().tolist()
    return [
        (_finish([Match(rows[i][0], d, rows[i][1], rows[i][2]) for i, d in zip(ids.tolist(), ds.tolist())], limit), total)
        for (ids, ds), total in zip(kept, totals)
    ]


def _confirmed(hits, rows, codes: np.ndarray) -> bool:
    """Every hit names a row the record holds, at the distance the cache gave."""
    for (ids, distances), query in zip(hits, codes.tolist()):
        for i, d in zip(ids.tolist(), distances.tolist()):
            row = rows.get(i)
            if row is None or (query ^ row[2]).bit_count() != d:
                return False
    return True


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


def _search_sql(db: IndexDB, codes: np.ndarray, radius: int, n_bits: int, limit: int | None) -> list[tuple[list[Match], int]]:
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
            results.append((_finish(matches, limit), len(matches)))
    return results


def _search(
    db: IndexDB, meta: IndexMeta, codes: Any, radius: int, limit: int | None, method: str
) -> list[tuple[list[Match], int]]:
    """Per query: its first ``limit`` matches (nearest first, ties by path) and how many
    there are within the radius."""
    n_bits = int(meta.n_bits)  # type: ignore[arg-type]
    radius = _check_radius(radius, n_bits, method, db.path)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    codes = _check_codes(codes, n_bits)
    if len(codes) == 0:
        return []
    limit = None if limit is None else int(limit)
    if method == "lookup":
        return _search_lookup(db, codes, radius, limit)
    return _search_sql(db, codes, radius, n_bits, limit)


def search_codes(
    index_path: str | Path,
    codes: np.ndarray | Sequence[int],
    radius: int,
    limit: int | None = None,
    method: str = "lookup",
) -> list[list[Match]]:
    """For each query code, the indexed images within Hamming ``radius`` (inclusive),
    nearest first then by path, at most ``limit`` each."""
    with open_index(index_path) as db, database_errors(db.path):
        return [matches for matches, _ in _search(db, _bound_meta(db), codes, radius, limit, method)]


def query_codes(
    index_path: str | Path,
    codes: Sequence[str | int],
    radius: int = 2,
    limit: int | None = None,
    origins: Sequence[str] | None = None,
) -> list[QueryResult]:
    """Query by code, no image and no model: each code as :func:`parse_code` reads it (bits
    or an integer, checked against the index's width).  ``origins`` names where each code
    came from (``FILE:LINE``) for the one-line error a bad one gets; the result's ``query``
    is the code as given."""
    with open_index(index_path) as db, database_errors(db.path):
        meta = _bound_meta(db)
        n_bits = int(meta.n_bits)  # type: ignore[arg-type]
        values, notes = [], []
        for k, text in enumerate(codes):
            where = origins[k] if origins is not None else f"--code {printable(str(text))!r}"
            try:
                code, note = read_code(text, n_bits)
            except CodeError as exc:
                raise CodeError(f"{where}: {exc}") from None
            values.append(code)
            notes.append(None if note is None else f"{where}: {note}" if origins is not None else note)
        found = _search(db, meta, np.array(values, dtype=np.uint64), radius, limit, "lookup") if values else []
        return [
            QueryResult(str(text).strip(), c, code_to_str(c, n_bits), matches, total, note)
            for text, c, note, (matches, total) in zip(codes, values, notes, found)
        ]


def query_files(
    index_path: str | Path,
    workspace: Workspace,
    paths: Sequence[str | Path],
    radius: int = 2,
    limit: int | None = None,
    tier: str = "all",
    near_threshold: int | None = None,
) -> list[QueryResult]:
    """Hash image files with the model the index was built with, then search the tiers
    (:mod:`semhash.index.tiers`): ``tier`` is ``all`` (exact, then near, then similar), or
    one of them.  Each match says its tier and the distance in that tier's code.

    The model is taken from the index's metadata, not from the caller, and its fingerprint
    must still match: codes from a retrained or re-exported encoder are not comparable with
    the stored ones.  An unreadable query image raises ImageError.  Each file is read once.
    """
    from semhash.data import read_image_file
    from semhash.index.tiers import check_tier_threshold, exact_ids_sql, open_near_index, query_facts
    from semhash.tiers import tiers_for

    tiers = tiers_for(tier)
    with open_index(index_path) as db, database_errors(db.path):
        meta = _bound_meta(db)
        threshold = check_tier_threshold(near_threshold, meta.near_scheme)
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
        if limit is not None and int(limit) < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        note = None
        if "near" in tiers and not db.has_near_tier:
            if tier != "all":
                db.require_near_tier()
            tiers = tuple(t for t in tiers if t != "near")
            note = f"{db.path}: this index (read-only) predates the near tier: no near-duplicate matches"
        coder = near_coder(meta.near_scheme, workspace, db.path) if "near" in tiers else None
        decoded = [query_facts(p, read_image_file(p), hasher.input_shape, coder) for p in paths]
        codes = hasher.hash(np.stack([array for array, _ in decoded]))
        similar = _search(db, meta, codes, radius, None, "lookup") if "similar" in tiers else [([], 0)] * len(paths)
        results = []
        with db.session() as s, s.begin():
            conn = s.connection()
            near_index = open_near_index(db, meta, conn.connection, write=True) if "near" in tiers else None
            for p, c, (_, facts), (similar_matches, _) in zip(paths, codes.tolist(), decoded, similar):
                exact = ([r[0] for r in conn.exec_driver_sql(exact_ids_sql(conn.dialect.paramstyle), (facts.content_hash,))]
                         if "exact" in tiers else [])  # fmt: skip
                near = near_index.search(facts.near, threshold) if near_index is not None and not facts.flat else None
                matches = _tier_matches(s, exact, near, similar_matches)
                shown = matches if limit is None else matches[: int(limit)]
                flat = facts.quality if facts.flat and "near" in tiers else None
                results.append(QueryResult(path_key(p), int(c), code_to_str(int(c), hasher.n_bits), shown, len(matches), note, flat, tier))
        return results


def near_coder(scheme, workspace: Workspace, index_name):
    """The coder of an index's near codes (:mod:`semhash.near_codes`): PDQ, or the near
    model from ``workspace``, checked against the fingerprint the index was bound with."""
    from semhash.near_codes import coder_for

    def load(name: str):
        try:
            return workspace.model(name).load_hasher()
        except ModelError as exc:
            raise IndexError_(
                f"{index_name}: the index's near codes come from model {name!r}, which cannot be loaded ({exc}): "
                f"use the --home that holds it, or re-run `semhash index --rebuild`"
            ) from None

    return coder_for(scheme, load)


def _tier_matches(session: Session, exact: list[int], near, similar: list[Match]) -> list[Match]:
    """One query's matches over the tiers: exact (by path), near then similar (nearest first,
    ties by path), each image once in the strictest tier that reached it."""
    near_ids, near_d = near if near is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    rows = _rows_by_id(session, [*exact, *near_ids.tolist()])
    out = sorted((Match(rows[i][0], 0, rows[i][1], rows[i][2], "exact") for i in exact if i in rows), key=lambda m: m.path)
    seen = {m.path for m in out}
    near_matches = [Match(rows[i][0], d, rows[i][1], rows[i][2], "near") for i, d in zip(near_ids.tolist(), near_d.tolist()) if i in rows]
    for m in sorted(near_matches, key=lambda m: (m.distance, m.path)):
        if m.path not in seen:
            seen.add(m.path)
            out.append(m)
    out += [m for m in similar if m.path not in seen]
    return out


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
    """A summary for ``semhash status``: what is indexed, with which model, where.  The row
    count, label count and last indexing time come from the lookup file's header when it was
    built from the record's current state (every writer leaves it so), else from the record."""
    with open_index(index_path) as db, database_errors(db.path):
        with db.session() as s, s.begin():
            meta = read_meta(s, db.path)
            lookup_path = db.lookup_path
            current = hamming_lookup.is_current(lookup_path, lookup_key(meta))
            figures = (hamming_lookup.read_header(lookup_path) or {}).get("info") if current else None
            if not isinstance(figures, dict) or not {"count", "labels", "last_indexed_at"} <= set(figures):
                count = int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)
                figures = _record_figures(s, count)
        return {
            "index_path": str(db.path),
            "lookup_path": str(lookup_path),
            "lookup_current": current,
            "schema_version": meta.schema_version,
            "supported_schema_version": SCHEMA_VERSION,
            "count": int(figures["count"]),
            "labels": int(figures["labels"]),
            "model": meta.model_name,
            "model_fingerprint": meta.model_fingerprint,
            "bits": meta.n_bits,
            "input_shape": list(meta.input_shape) if meta.input_shape else None,
            "near_code": meta.near_scheme.describe(),
            "near_threshold": meta.near_scheme.threshold,
            "created_at": utc_timestamp(meta.created_at),
            "last_indexed_at": utc_timestamp(figures["last_indexed_at"]),
            "generation": meta.generation,
        }


def utc_timestamp(text: str | None) -> str | None:
    """An ISO 8601 time as the record keeps it (``indexed_at`` is naive UTC, ``created_at``
    carries +00:00) -> ISO 8601 with its UTC offset, so that every time status shows reads
    the same way."""
    if not text:
        return text or None
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()
