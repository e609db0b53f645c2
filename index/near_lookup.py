"""Exact search of 256-bit near codes within a Hamming threshold: multi-index hashing.

The near tier's PDQ codes are 256 bits and a copy is within 31 of them, far beyond what
enumerating neighbour codes can reach.  Multi-index hashing (Norouzi et al.; PDQ's own
index does the same) cuts each code into 16 words of 16 bits: two codes within ``T`` bits
differ by at most ``T // 16`` bits in at least one word (pigeonhole), so probing, for each
word, every value within ``T // 16`` bits of the query's word (17 values for T = 31) finds
every true match among the candidates, which are then checked on all 256 bits.  Exact: the
property tests compare it with :func:`brute_force`.

Each word has a directory: the rows sorted by that word (``order``) and where each of the
65,536 values starts (``starts``), so a probe is two array reads.  Memory: 32 bytes of code
and 64 bytes of directories per row.  Beyond ``T // 16 > 2`` (T > 47, never a near-duplicate
threshold) the probes outnumber a scan, and the search scans.

Rotations and mirrors are found by querying with the 8 dihedral codes of the query image
(:func:`semhash.perceptual.near_codes`), never by indexing 8 codes per row.
"""

from __future__ import annotations

import json
import mmap
import os
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from semhash.perceptual import NEAR_BYTES

try:  # the compiled kernel (setup.py); the NumPy code below gives identical answers
    from semhash.index import _near as _kernel
except ImportError:  # pragma: no cover - a build without a C compiler
    _kernel = None

WORDS = 16
WORD_BITS = 16
MAX_WORD_RADIUS = 2
_QUERY_BLOCK = 256  # queries probed at once (bounds the candidate arrays)
_SCAN_CELLS = 1 << 22  # (query, row) distances a scan holds at once


def _word_masks(radius: int, width: int = 16) -> np.ndarray:
    """Every ``width``-bit value with at most ``radius`` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(width), r)]
    return np.array(masks, dtype=np.int64)


def as_near_codes(codes) -> np.ndarray:
    """(N, 32) uint8 from an array or a list of 32-byte strings."""
    if isinstance(codes, (list, tuple)) and codes and isinstance(codes[0], (bytes, bytearray, memoryview)):
        codes = np.frombuffer(b"".join(bytes(c) for c in codes), dtype=np.uint8).reshape(-1, NEAR_BYTES)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim == 1:
        codes = codes.reshape(-1, NEAR_BYTES)
    if codes.ndim != 2 or codes.shape[1] != NEAR_BYTES:
        raise ValueError(f"near codes are (N, {NEAR_BYTES}) bytes, got shape {codes.shape}")
    return codes


def _distances(a64: np.ndarray, b64: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a64, b64)).sum(axis=-1, dtype=np.int64)


#: word layouts: (first bit, width) of each word.  Narrow: 16 words of 16 bits (17 probes a
#: word at threshold 31; 65,537-entry directories).  Wide: 12 words of 21-22 bits (radius 2:
#: ~240 probes a word, each bucket 1/32 of a narrow one; 134 MB of directories).  Wider: 11
#: words of 23-24 bits (~290 probes, buckets 1/128; 470 MB).  Measured at 10^7 random codes,
#: threshold 31, one core: 1,165, 1,446 and 3,385 queries/s (docs/BENCHMARKS.md "Copies").
NARROW = tuple((16 * w, 16) for w in range(16))
WIDE = tuple([(22 * w, 22) for w in range(4)] + [(88 + 21 * w, 21) for w in range(8)])
WIDER = tuple([(23 * w, 23) for w in range(8)] + [(184 + 24 * w, 24) for w in range(3)])
#: rows from which each wider layout is used (its directories' size is fixed, whatever the rows)
WIDE_FROM, WIDER_FROM = 1 << 20, 1 << 23


def layout_for(n: int) -> tuple[tuple[int, int], ...]:
    return WIDER if n >= WIDER_FROM else WIDE if n >= WIDE_FROM else NARROW


def _words(codes64: np.ndarray, lo: int, width: int) -> np.ndarray:
    """Bits lo..lo+width-1 of (N, 4) uint64 codes -> (N,) int64."""
    lane, off = lo >> 6, lo & 63
    value = codes64[:, lane] >> np.uint64(off)
    if off + width > 64:
        value = value | (codes64[:, lane + 1] << np.uint64(64 - off))
    return (value & np.uint64((1 << width) - 1)).astype(np.int64)


class NearLookup:
    """Rows ``ids`` with near ``codes`` ((N, 32) uint8), searchable within a threshold.
    ``layout``: the words (see :data:`NARROW`, :data:`WIDE`); by default chosen by size."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, layout: tuple[tuple[int, int], ...] | None = None):
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.codes = as_near_codes(codes)
        if len(self.ids) != len(self.codes):
            raise ValueError("one id per code")
        if len(self.ids) >= 2**31:
            raise ValueError("a near lookup holds fewer than 2**31 rows")
        self._codes64 = self.codes.view(np.uint64)
        self.layout = tuple(layout or layout_for(len(self.ids)))
        self._words_array = np.array(self.layout, np.int32).reshape(-1, 2)
        self._order = np.empty((len(self.layout), len(self.ids)), dtype=np.int32)
        sizes = [(1 << width) + 1 for _, width in self.layout]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._starts = np.zeros(int(sum(sizes)), dtype=np.uint32)
        for w, (lo, width) in enumerate(self.layout):
            column = _words(self._codes64, lo, width)
            self._order[w] = np.argsort(column, kind="stable")
            start = self._offsets[w]
            np.cumsum(np.bincount(column, minlength=1 << width), out=self._starts[start + 1 : start + sizes[w]])

    @classmethod
    def from_arrays(cls, ids: np.ndarray, codes: np.ndarray, order: np.ndarray, starts: np.ndarray,
                    words: np.ndarray) -> "NearLookup":  # fmt: skip
        """A lookup from its saved arrays (nothing sorted again)."""
        lookup = cls.__new__(cls)
        lookup.ids, lookup.codes = ids, codes
        lookup._codes64 = codes.view(np.uint64)
        lookup._order, lookup._starts = order, starts
        lookup.layout = tuple((int(lo), int(width)) for lo, width in np.asarray(words).reshape(-1, 2))
        lookup._words_array = np.array(lookup.layout, np.int32).reshape(-1, 2)
        sizes = [(1 << width) + 1 for _, width in lookup.layout]
        lookup._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        if order.shape != (len(sizes), len(ids)) or len(starts) != sum(sizes):
            raise ValueError("the saved near lookup's arrays do not fit together")
        return lookup

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "codes": self.codes, "order": self._order, "starts": self._starts, "words": self._words_array}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.ids.nbytes + self._order.nbytes + self._starts.nbytes

    def _radius(self, threshold: int) -> int:
        return threshold // len(self.layout)

    def _directory(self, w: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = self._offsets[w]
        return self._starts[start + values].astype(np.int64), self._starts[start + values + 1].astype(np.int64)

    def search(self, queries, threshold: int, backend: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query, row) pair within ``threshold`` bits -> (query index, row position,
        distance) arrays, sorted by query then distance then row position.  Row positions
        index ``ids``/``codes``.  ``backend``: "c", "numpy" or "auto" (C when compiled)."""
        queries = as_near_codes(queries)
        threshold = int(threshold)
        if self._use_c(threshold, backend):
            return self._sorted(*self._search_c(queries, threshold))
        parts = [self._search_block(queries[i : i + _QUERY_BLOCK], threshold, i) for i in range(0, len(queries), _QUERY_BLOCK)]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return self._sorted(*(np.concatenate(x) for x in zip(*parts)))

    def pairs(self, threshold: int, backend: str = "auto", block: int = 1 << 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair of rows within ``threshold`` of each other, each once -> (position i,
        position j > i, distance), sorted by i then distance then j."""
        threshold = int(threshold)
        parts = []
        # 16-bit words from bit 0: the lookup's own when it has them (a model's near code: its
        # first 64 bits), else all 16 of the 256 bits
        words = len(self.layout) if self.layout == NARROW[: len(self.layout)] else WORDS
        if _kernel is not None and backend != "numpy" and 0 <= threshold and threshold // words <= MAX_WORD_RADIUS:
            # word by word (16 bits), over the codes sorted by that word: both sides of every
            # check are read in order (a search per row reads them at random: 14x slower)
            narrow = self if self.layout == NARROW[:words] else NearLookup(self.ids, self.codes, NARROW)
            masks = _word_masks(threshold // words)
            for w in range(words):
                in_order = narrow.codes[narrow._order[w]]
                starts = narrow._starts[narrow._offsets[w] : narrow._offsets[w] + (1 << WORD_BITS) + 1].astype(np.int64)
                found = _kernel.pairs(in_order, narrow._order[w], starts, w, masks, threshold, threshold // words)
                parts.append(tuple(np.frombuffer(x, np.int64) for x in found))
        elif backend == "c":
            raise RuntimeError("the compiled near kernel is not available for this search")
        else:
            for start in range(0, len(self.ids), block):
                q, pos, d = self._search_block(self.codes[start : start + block], threshold, 0)
                keep = pos > q + start
                parts.append((q[keep] + start, pos[keep], d[keep]))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return self._sorted(*(np.concatenate(x) for x in zip(*parts)))

    @staticmethod
    def _sorted(q: np.ndarray, pos: np.ndarray, d: np.ndarray):
        order = np.lexsort((pos, d, q))
        return q[order], pos[order], d[order]

    def _use_c(self, threshold: int, backend: str) -> bool:
        if backend not in ("auto", "c", "numpy"):
            raise ValueError(f"unknown backend {backend!r}")
        usable = _kernel is not None and 0 <= threshold and self._radius(threshold) <= MAX_WORD_RADIUS
        if backend == "c" and not usable:
            raise RuntimeError("the compiled near kernel is not available for this search")
        return usable and backend != "numpy"

    def _search_c(self, queries: np.ndarray, threshold: int):
        radius = self._radius(threshold)
        masks = _word_masks(radius, max(width for _, width in self.layout))
        q, pos, d = _kernel.search(self.codes, self._order, self._starts, self._offsets, self._words_array,
                                   np.ascontiguousarray(queries), masks, threshold, radius)  # fmt: skip
        return (np.frombuffer(x, np.int64) for x in (q, pos, d))

    def _search_block(self, queries: np.ndarray, threshold: int, first: int):
        n, nq = len(self.ids), len(queries)
        q64 = queries.view(np.uint64)
        radius = self._radius(threshold)
        if n == 0 or nq == 0 or threshold < 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        if radius > MAX_WORD_RADIUS:  # a scan, a few queries x every row at a time (bounded memory)
            step = max(1, _SCAN_CELLS // max(1, n))
            parts = []
            for start in range(0, nq, step):
                d = _distances(q64[start : start + step, None, :], self._codes64[None, :, :])
                qi, pos = np.nonzero(d <= threshold)
                parts.append((qi + start + first, pos.astype(np.int64), d[qi, pos]))
            return tuple(np.concatenate(x) for x in zip(*parts))
        cand_q, cand_pos = [], []
        for w, (lo, width) in enumerate(self.layout):
            masks = _word_masks(radius, width)
            probes = (_words(q64, lo, width)[:, None] ^ masks[None, :]).reshape(-1)  # (Q * P,)
            starts, ends = self._directory(w, probes)
            counts = ends - starts
            total = int(counts.sum())
            if not total:
                continue
            # positions start..end-1 of every probe, flattened without a Python loop
            offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
            cand_pos.append(self._order[w, offsets].astype(np.int64))
            cand_q.append(np.repeat(np.repeat(np.arange(nq), len(masks)), counts))
        if not cand_pos:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        qi, pos = np.concatenate(cand_q), np.concatenate(cand_pos)
        d = _distances(q64[qi], self._codes64[pos])
        keep = d <= threshold
        qi, pos, d = qi[keep], pos[keep], d[keep]
        # a pair found through several words once
        pair = np.unique(qi * n + pos, return_index=True)[1]
        return qi[pair] + first, pos[pair], d[pair]


def brute_force(codes, queries, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: every (query, row) pair within ``threshold``, by a full scan, in the
    order :meth:`NearLookup.search` gives."""
    codes64, q64 = as_near_codes(codes).view(np.uint64), as_near_codes(queries).view(np.uint64)
    d = _distances(q64[:, None, :], codes64[None, :, :]) if len(codes64) and len(q64) else np.zeros((len(q64), len(codes64)), np.int64)
    qi, pos = np.nonzero(d <= int(threshold))
    dist = d[qi, pos]
    order = np.lexsort((pos, dist, qi))
    return qi[order].astype(np.int64), pos[order].astype(np.int64), dist[order]


# --------------------------------------------------------------------------- the cache file
MAGIC = b"SEMHASH-NEAR\x00\x01"
FORMAT_VERSION = 1
_ALIGN = 64


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], key: Any, mode: int = 0o644) -> None:
    """Write named arrays and the record state ``key`` they were built from into one file,
    atomically (:func:`semhash.index.lookup.written_atomically`)."""
    from semhash.index.lookup import written_atomically

    path = Path(path)
    entries, offset = {}, 0
    blobs = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        entries[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        blobs.append(array)
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"version": FORMAT_VERSION, "key": key, "arrays": entries}, sort_keys=True).encode()
    head = len(MAGIC) + 8 + len(header)
    start = -(-head // _ALIGN) * _ALIGN
    with written_atomically(path, mode) as fh:
        fh.write(MAGIC + np.uint64(len(header)).tobytes() + header)
        fh.write(b"\0" * (start - head))
        for array in blobs:
            if array.nbytes:  # (an empty array has nothing to write, and memoryview cannot cast it)
                fh.write(memoryview(array.reshape(-1)).cast("B"))
            fh.write(b"\0" * (-(-array.nbytes // _ALIGN) * _ALIGN - array.nbytes))


def load_arrays(path: str | Path, key: Any) -> dict[str, np.ndarray] | None:
    """The arrays saved at ``path`` when they were built from ``key``, memory-mapped; None
    when the file is missing, unreadable, of another format or stale."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(MAGIC) + 8)
            if len(head) != len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
                return None
            length = int(np.frombuffer(head[len(MAGIC):], np.uint64)[0])
            if length > 1 << 20:
                return None
            header = json.loads(fh.read(length))
            if header.get("version") != FORMAT_VERSION or header.get("key") != json.loads(json.dumps(key, sort_keys=True)):
                return None
            size = os.fstat(fh.fileno()).st_size
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        start = -(-(len(MAGIC) + 8 + length) // _ALIGN) * _ALIGN
        out = {}
        for name, entry in header["arrays"].items():
            dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
            count = int(np.prod(shape)) if shape else 1
            offset = start + int(entry["offset"])
            if offset + count * dtype.itemsize > size:
                return None
            out[name] = np.frombuffer(mapped, dtype, count, offset).reshape(shape) if count else np.zeros(shape, dtype)
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None
