"""Three tiers of "the same image", one interface: why a match matches.

* ``exact``: the same bytes (the sha256 content hash every row keeps); distance 0.
* ``near``: a copy - re-saved, resized, re-encoded, brightened, lightly blurred, mirrored or
  rotated by a multiple of 90 degrees: PDQ codes (:mod:`semhash.perceptual`) within the near
  threshold (default 31 of 256 bits), found by :mod:`semhash.index.near_lookup`; the query is
  expanded to its 8 dihedral codes.  Images too flat for PDQ (quality below
  :data:`~semhash.perceptual.MIN_QUALITY`) never match in this tier, on either side.  An
  index bound to a near model (``semhash index --near-model NAME``) has that model's codes
  here instead, one per image, with the model's threshold (:mod:`semhash.near_codes`).
* ``similar``: a look-alike - the model's semantic code within the Hamming radius (the search
  semhash has always done).

A query lists exact matches, then near, then similar; an image is listed once, in the
strictest tier it reaches, with the distance in that tier's code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.index.near_lookup import NearLookup
from semhash.near_codes import PDQ, NearCoder, NearScheme
from semhash.perceptual import NEAR_BYTES
from semhash.tiers import DIHEDRAL_MAX, MIN_QUALITY

@dataclass
class QueryFacts:
    """What the exact and near tiers need of a query image: its bytes' sha256, its near codes
    ((V, 32) uint8: PDQ's 8 dihedral codes, or a near model's one) and their quality (None:
    a model's code, which has none)."""

    content_hash: str
    near: np.ndarray
    quality: int | None

    @property
    def flat(self) -> bool:
        return self.quality is not None and self.quality < MIN_QUALITY


def query_facts(name: str | Path, data: bytes, shape: Sequence[int], coder: NearCoder | None = None) -> tuple[np.ndarray, QueryFacts]:
    """One query image's bytes -> (the model's input array, its :class:`QueryFacts`), from one
    decode, exactly as the indexer decodes a file; ``coder``: the index's near coder (PDQ
    when None)."""
    from semhash.data import decode_views

    decoded = decode_views(name, shape, data=data)
    ((codes, quality),) = (coder or NearCoder()).codes([decoded.near])
    return decoded.array, QueryFacts(hashlib.sha256(data).hexdigest(), codes, quality)


@dataclass
class NearIndex:
    """The near codes of every row that has one, and their quality, searchable: built from
    one snapshot of the record (the record is the truth; this is rebuilt when it changes)."""

    lookup: NearLookup
    quality: np.ndarray  # int16 per row position, -1 where unknown (an imported code)

    @classmethod
    def from_rows(cls, rows, scheme: NearScheme = PDQ) -> "NearIndex":
        """``rows``: (id, near_code bytes, near_quality or None) tuples; ``scheme``: what made
        the codes (a near model's are searched on their own bits' words)."""
        ids, codes, quality = [], [], []
        for i, code, q in rows:
            if code is None or len(code) != NEAR_BYTES:
                continue
            ids.append(int(i))
            codes.append(bytes(code))
            quality.append(-1 if q is None else int(q))
        array = np.frombuffer(b"".join(codes), np.uint8).reshape(-1, NEAR_BYTES) if codes else np.zeros((0, NEAR_BYTES), np.uint8)
        return cls(NearLookup(np.array(ids, np.int64), array, scheme.layout()), np.array(quality, np.int16))

    def __len__(self) -> int:
        return len(self.lookup)

    def search(self, codes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        """One query's codes ((V, 32): its own, then its rotations' and mirrors') -> (row ids,
        distances) within ``threshold`` (the variants within min(threshold,
        :data:`~semhash.tiers.DIHEDRAL_MAX`)), each row once at its smallest distance; rows
        too flat to match are left out."""
        threshold = int(threshold)
        codes = np.asarray(codes, np.uint8).reshape(-1, NEAR_BYTES)
        _, pos, d = self.lookup.search(codes[:1], threshold)
        if len(codes) > 1:  # rotations and mirrors, within DIHEDRAL_MAX at most
            _, more_pos, more_d = self.lookup.search(codes[1:], min(threshold, DIHEDRAL_MAX))
            pos, d = np.concatenate([pos, more_pos]), np.concatenate([d, more_d])
        keep = (self.quality[pos] < 0) | (self.quality[pos] >= MIN_QUALITY)
        pos, d = pos[keep], d[keep]
        if not len(pos):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        order = np.lexsort((d, pos))
        pos, d = pos[order], d[order]
        first = np.ones(len(pos), bool)
        first[1:] = pos[1:] != pos[:-1]
        return self.lookup.ids[pos[first]], d[first]


NEAR_ROWS_SQL = "SELECT id, near_code, near_quality FROM images WHERE near_code IS NOT NULL"
NEAR_SUFFIX = ".near"


def near_path_for(cache_base: Path) -> Path:
    """``.../index.sqlite`` -> ``.../index.near``: the near lookup's cache beside the record."""
    return Path(cache_base).with_suffix(NEAR_SUFFIX)


def open_near_index(db, meta, connection, write: bool) -> NearIndex:
    """The near tier's index for the record state ``meta``: the cache file beside the record
    when it was built from that state (memory-mapped), else built from the rows read on
    ``connection`` (a DBAPI connection inside the caller's snapshot) and saved when ``write``
    (a file that cannot be written is no error: the built index answers)."""
    from semhash.index.near_lookup import load_arrays, save_arrays
    from semhash.index.search import lookup_key

    path = near_path_for(db.cache_base)
    key = lookup_key(meta)
    arrays = load_arrays(path, key)
    if arrays is not None and {"ids", "codes", "order", "starts", "words", "quality"} <= set(arrays):
        try:
            lookup = NearLookup.from_arrays(arrays["ids"], arrays["codes"], arrays["order"], arrays["starts"], arrays["words"])
            return NearIndex(lookup, arrays["quality"])
        except ValueError:
            pass  # arrays that do not fit together: built again below
    built = load_near_index(connection, meta.near_scheme)
    if write:
        try:
            save_arrays(path, {**built.lookup.arrays(), "quality": built.quality}, key, db.cache_file_mode())
        except OSError:
            pass
    return built


def refresh_near_cache(db) -> None:
    """Leave the near lookup's cache file current after a write (index, import, remove,
    duplicates --move-to), so that the next query maps it instead of building it."""
    from semhash.index.db import read_meta

    if not db.has_near_tier:
        return
    with db.session() as s, s.begin():
        meta = read_meta(s, db.path)
        if meta.bound:
            open_near_index(db, meta, s.connection().connection, write=True)


def load_near_index(dbapi_connection, scheme: NearScheme = PDQ) -> NearIndex:
    """The :class:`NearIndex` of the record (near codes made by ``scheme``), read on a DBAPI
    connection (sqlite3 or psycopg) inside the caller's transaction."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(NEAR_ROWS_SQL)
        rows = []
        while True:
            chunk = cursor.fetchmany(1 << 16)
            if not chunk:
                break
            rows.extend(chunk)
    finally:
        cursor.close()
    return NearIndex.from_rows(rows, scheme)


def exact_ids_sql(paramstyle: str) -> str:
    marker = "?" if paramstyle == "qmark" else "%s"
    return f"SELECT id FROM images WHERE content_hash = {marker} ORDER BY path"


@dataclass(frozen=True)
class TierHit:
    id: int
    tier: str
    distance: int


def tier_hits(
    tiers: Sequence[str],
    exact: Sequence[int],
    near: tuple[np.ndarray, np.ndarray] | None,
    similar: tuple[np.ndarray, np.ndarray] | None,
) -> list[TierHit]:
    """Every hit of one query, each row once in the strictest tier that reached it: exact,
    then near (nearest first), then similar (nearest first); ties keep the caller's order
    (the caller orders equal distances by path)."""
    seen: set[int] = set()
    hits: list[TierHit] = []

    def add(tier: str, ids, distances) -> None:
        for i, d in zip(ids, distances):
            i = int(i)
            if i not in seen:
                seen.add(i)
                hits.append(TierHit(i, tier, int(d)))

    if "exact" in tiers:
        add("exact", exact, [0] * len(exact))
    for tier, found in (("near", near), ("similar", similar)):
        if tier in tiers and found is not None:
            ids, distances = found
            order = np.argsort(np.asarray(distances), kind="stable")
            add(tier, np.asarray(ids)[order], np.asarray(distances)[order])
    return hits



def check_tier_threshold(near_threshold: int | None, scheme: NearScheme = PDQ) -> int:
    """The near threshold to search with: ``scheme``'s default when None, else checked
    against its bits (ValueError)."""
    return scheme.check_threshold(near_threshold)
