"""A faiss binary index beside the SQLite file: a cache for fast Hamming range search.

SQLite is the record; this file is only ever derived from it.  ``index.sqlite`` gets
``index.faiss`` (any other name gets ``<name>.faiss``) plus a sidecar ``index.faiss.json``
recording which index state (created_at, generation, model fingerprint, bits, row count) the
cache was built from.  The same key is also written at the head of ``index.faiss`` itself, so
the two files cannot be paired wrongly (two writers interleaving their index and sidecar
renames): the cache is used only when the record's meta, the sidecar and the file's own
header all agree.  :func:`load_or_build` returns the cached index when they do and rebuilds
(and rewrites) it when the cache is missing, unreadable or stale, so deleting the cache is
always safe.  A search also reads back every row it reports from the record
(:mod:`semhash.index.search`), so a cache never answers for a row the record cannot give.

Codes are packed little-endian into ``ceil(n_bits / 8)`` bytes (padding bits are zero for
every code, so they never add distance) and stored in
``IndexBinaryIDMap(IndexBinaryFlat(d))`` keyed by the SQLite row ids.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from semhash.index.db import ImageRow, IndexDB, IndexMeta, read_meta

_HEADER_MAGIC = b"semhash-faiss-cache\x00"


def faiss_path_for(db_path: str | Path) -> Path:
    """``.../index.sqlite`` -> ``.../index.faiss`` (same folder, never the db itself)."""
    db_path = Path(db_path)
    if db_path.suffix == ".faiss":
        return db_path.with_name(db_path.name + ".faiss")
    return db_path.with_suffix(".faiss")


def sidecar_path_for(faiss_path: str | Path) -> Path:
    faiss_path = Path(faiss_path)
    return faiss_path.with_name(faiss_path.name + ".json")


def n_bytes(n_bits: int) -> int:
    return (int(n_bits) + 7) // 8


def pack_codes(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """(N,) uint64 codes -> (N, ceil(n_bits/8)) uint8, least significant byte first."""
    codes = np.ascontiguousarray(np.asarray(codes, dtype=np.uint64).reshape(-1))
    as_bytes = codes.astype("<u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(as_bytes[:, : n_bytes(n_bits)])


def build_index(ids: np.ndarray, codes: np.ndarray, n_bits: int) -> faiss.IndexBinaryIDMap:
    """A fresh in-memory faiss index over ``codes`` keyed by ``ids``."""
    index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(8 * n_bytes(n_bits)))
    if len(ids):
        index.add_with_ids(pack_codes(codes, n_bits), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def range_search(index: faiss.IndexBinary, queries: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every stored id within Hamming distance ``radius`` (inclusive) of each packed query.

    faiss keeps distances *strictly below* its radius argument, hence ``radius + 1``.
    Returns one ``(ids int64, distances int64)`` pair per query.
    """
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    if len(queries) == 0:
        return []
    lims, distances, ids = index.range_search(queries, int(radius) + 1)
    distances = np.asarray(distances).astype(np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    return [(ids[lims[i] : lims[i + 1]], distances[lims[i] : lims[i + 1]]) for i in range(len(queries))]


# --------------------------------------------------------------------------- the cache file
def _snapshot(db: IndexDB, session: Session | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(cache key, ids, uint64 codes) read in one transaction (the caller's, when given), so
    they agree."""
    if session is None:
        with db.session() as s, s.begin():
            return _snapshot(db, s)
    meta = read_meta(session, db.path)
    rows = session.execute(select(ImageRow.id, ImageRow.code).order_by(ImageRow.id)).tuples().all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    codes = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)).view(np.uint64)
    return _key(meta, len(rows)), ids, codes


def _key(meta, count: int | None) -> dict[str, Any]:
    key = {
        "created_at": meta.created_at,
        "generation": meta.generation,
        "model_fingerprint": meta.model_fingerprint,
        "n_bits": meta.n_bits,
    }
    if count is not None:
        key["count"] = count
    return key


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; whoever can read the index can read its cache
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _encode_key(key: dict[str, Any]) -> bytes:
    return json.dumps(key, sort_keys=True).encode()


def write_cache(db: IndexDB, index: faiss.IndexBinary, key: dict[str, Any]) -> None:
    """Index first (its key in its header), sidecar second, each via tmp file + os.replace."""
    path = db.faiss_path
    mode = db.cache_file_mode()
    header = _encode_key(key)
    body = faiss.serialize_index_binary(index).tobytes()
    _atomic_write(path, _HEADER_MAGIC + len(header).to_bytes(4, "little") + header + body, mode)
    _atomic_write(sidecar_path_for(path), header, mode)


def _parse_header(head: bytes) -> tuple[dict[str, Any], int]:
    """(key, offset of the faiss bytes) from the start of a cache file."""
    start = len(_HEADER_MAGIC)
    if head[:start] != _HEADER_MAGIC or len(head) < start + 4:
        raise ValueError("no semhash cache header")
    size = int.from_bytes(head[start : start + 4], "little")
    if len(head) < start + 4 + size:
        raise ValueError("truncated semhash cache header")
    return json.loads(head[start + 4 : start + 4 + size]), start + 4 + size


def _read_cache_file(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    data = np.fromfile(path, dtype=np.uint8)
    key, offset = _parse_header(data[:65536].tobytes())
    return key, data[offset:]


def _header_matches(db: IndexDB, meta: IndexMeta | None = None) -> bool:
    """Sidecar and cache header agree with the record, reading only their first bytes."""
    path = db.faiss_path
    try:
        recorded = json.loads(sidecar_path_for(path).read_text())
        current = _key(meta if meta is not None else db.meta(), None)
        with open(path, "rb") as fh:
            header, _ = _parse_header(fh.read(65536))
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(recorded, dict) and header == recorded and all(recorded.get(k) == v for k, v in current.items())


def load_cached(db: IndexDB, meta: IndexMeta | None = None) -> faiss.IndexBinary | None:
    """The cached index if it exists, reads back and matches the record (``meta``, read by
    the caller in the snapshot it searches; else read here); else None."""
    path = db.faiss_path
    try:
        recorded = json.loads(sidecar_path_for(path).read_text())
        current = _key(meta if meta is not None else db.meta(), None)
        if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in current.items()):
            return None
        header, body = _read_cache_file(path)
        if header != recorded:
            return None  # this file was written for another state than its sidecar names
        index = faiss.deserialize_index_binary(body)
    except (OSError, ValueError, RuntimeError, TypeError):
        return None  # missing, unreadable or not a faiss file: the caller rebuilds
    if index.ntotal != recorded.get("count") or current["n_bits"] is None or index.d != 8 * n_bytes(current["n_bits"]):
        return None
    return index


def is_current(db: IndexDB, meta: IndexMeta | None = None) -> bool:
    """Whether the cache file on disk is up to date (for status displays; reads only the
    sidecar and the cache file's header, not the whole cache)."""
    return _header_matches(db, meta)


def rebuild(db: IndexDB, session: Session | None = None) -> faiss.IndexBinary:
    """Build from SQLite (in ``session``'s snapshot when given) and write the cache.  A
    cache that cannot be written (read-only folder, full disk) is not an error: the
    in-memory index still answers this search."""
    key, ids, codes = _snapshot(db, session)
    index = build_index(ids, codes, key["n_bits"] or 8)
    try:
        write_cache(db, index, key)
    except OSError:
        pass
    return index


def load_or_build(db: IndexDB) -> faiss.IndexBinary:
    """The current faiss index for ``db``: from the cache when current, else rebuilt."""
    cached = load_cached(db)
    return cached if cached is not None else rebuild(db)
