"""Exact Hamming radius search whose cost does not grow with the index.

A :class:`HammingLookup` holds (row id, code) pairs, ``n_bits <= 64``, in one or more
*bucket tables*.  Table ``i`` is keyed on a contiguous range of ``k_i`` code bits: a
directory of ``2**k_i + 1`` offsets into its rows, which are sorted by key, and per row the
*residual* (the code with the key bits squeezed out, in the narrowest unsigned dtype) and
the row id (uint32 when every id fits, else int64).

Search is multi-index hashing (Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with
Multi-Index Hashing", CVPR 2012): with disjoint key ranges and per-table probe radii ``t_i``
where ``sum(t_i + 1) = radius + 1``, any code within ``radius`` of a query lies within
``t_i`` of it on the key range of at least one table (pigeonhole), so probing every key
within ``t_i`` of the query's key in each table and checking the full distance of the rows
found is exact.  With one table and ``t = radius`` it is the plain bucket table probed with
every neighbour key.  The cost is the number of keys probed times the rows per bucket, plus
the answer: it depends on ``n_bits``, the radius and the bucket sizes, not on how many rows
the index holds (the layout keeps buckets small as the index grows).  A planner
(:meth:`HammingLookup.plan`) picks, per call, which tables to probe with which radii, or a
linear scan of one table where that is cheaper (tiny indexes, huge radii).  The layout
(how many tables, how many key bits) is chosen at build time by the same cost model; why
this structure and these constants is measured in docs/ARCHITECTURE.md and docs/BENCHMARKS.md.

Results (:class:`Matches`) are flat arrays: per query an ``offsets`` slice of ``ids`` and
``distances``, sorted by (distance, id).  ``limit`` keeps, per query, the first ``limit``
rows in that order (``ties="cut"``), or every row at the distance of the limit-th one as
well (``ties="keep"``): see :meth:`HammingLookup.search` for what each guarantees.

The loops run in a small C extension (``semhash.index._lookup``, compiled by
``pip install -e .``); where it is missing, a vectorised NumPy implementation returns
identical results, slower.  The tests check both against brute force and each other.

On disk (:meth:`HammingLookup.save`, :func:`load_or_build`) a lookup is one file: a magic
string, a JSON header (format version, layout, dtypes and offsets of every array, and the
caller's *key*: the record state it was built from) and the arrays, 64-byte aligned.  It is
written to a temporary file and renamed over the old one, so a reader never sees half a
file, and it is memory-mapped on load: opening it reads only the header.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

try:  # the C kernel; absent where it could not be compiled
    from semhash.index import _lookup as _kernel
except ImportError:  # pragma: no cover - exercised by the NumPy backend tests instead
    _kernel = None

MAX_BITS = 64
MAX_KEY_BITS = 30  # a directory of 2**30 + 1 offsets is 4 GiB: as far as one table goes
MAX_TABLES = 4
FORMAT = "semhash-lookup"
FORMAT_VERSION = 1
MAGIC = b"SEMHASH-LOOKUP\x00\x01"
ALIGN = 64
TIES = ("cut", "keep")
METHODS = ("auto", "probe", "scan")
BACKENDS = ("auto", "c", "numpy")

# The planner's cost model, in nanoseconds of one core's time, calibrated on the benchmark
# machine (see "Choosing the structure" in docs/ARCHITECTURE.md; only ratios matter).
# Probing a key reads a directory entry and the start of its bucket: a cache miss once the
# table outgrows the caches, a few ns while it fits.  A row in a probed bucket costs a read,
# an XOR, a popcount and a compare (more than a scan's row: buckets start cold).  A scan
# pays a sequential row check per row and a directory read per key.
PROBE_NS_CACHED = 10.0
PROBE_NS_MEMORY = 45.0
CACHED_TABLE_BYTES = 4 << 20
ROW_NS = 2.5
SCAN_KEY_NS = 1.0
SCAN_ROW_NS = 1.0
PAIR_QUERIES, PAIR_ROWS = 64, 2048  # sampled (query, row) pairs behind the estimates


def has_c_kernel() -> bool:
    """Whether the compiled kernel is importable (else the NumPy backend answers)."""
    return _kernel is not None


# ---------------------------------------------------------------------------- the answer
@dataclass(frozen=True)
class Matches:
    """Every query's matches as flat arrays: query ``i`` owns ``ids[offsets[i]:offsets[i+1]]``
    and the same slice of ``distances``, sorted by (distance, id)."""

    offsets: np.ndarray  # (Q + 1,) int64
    ids: np.ndarray  # (M,) int64
    distances: np.ndarray  # (M,) uint8

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], self.distances[a:b]

    def counts(self) -> np.ndarray:
        """Matches per query."""
        return np.diff(self.offsets)

    def equals(self, other: "Matches") -> bool:
        return (
            np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.ids, other.ids)
            and np.array_equal(self.distances, other.distances)
        )


def _empty_matches(n_queries: int) -> Matches:
    return Matches(np.zeros(n_queries + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8))


# ---------------------------------------------------------------------------- input checks
def _check_bits(n_bits: int) -> int:
    n_bits = int(n_bits)
    if not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits must be between 1 and {MAX_BITS}, got {n_bits}")
    return n_bits


def as_codes(codes: Any, n_bits: int, what: str = "codes") -> np.ndarray:
    """Any integer codes (uint64, or int64 two's complement as SQLite stores them, or a list
    of Python ints) -> contiguous (N,) uint64, refusing bits above ``n_bits``."""
    arr = np.asarray(codes)
    if arr.dtype.kind in "fO" and arr.size and not isinstance(codes, np.ndarray):
        # a list mixing small and >= 2**63 Python ints comes out as float64 or object
        flat = list(np.ravel(np.asarray(codes, dtype=object)))
        if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in flat):
            raise ValueError(f"{what} must be integers")
        if any(not -(2**63) <= int(x) < 2**64 for x in flat):
            raise ValueError(f"{what} must fit in 64 bits")
        arr = np.array([int(x) % 2**64 for x in flat], dtype=np.uint64)
    if arr.dtype.kind == "u":
        arr = arr.astype(np.uint64, copy=False)
    elif arr.dtype.kind == "i":
        arr = arr.astype(np.int64, copy=False).view(np.uint64)
    elif arr.size == 0:
        arr = arr.astype(np.uint64)
    else:
        raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr.reshape(-1))
    if n_bits < 64 and arr.size and int(arr.max()) >> n_bits:
        raise ValueError(f"{what} have bits set above bit {n_bits - 1} ({n_bits}-bit codes)")
    return arr


def _narrow_ids(ids: Any) -> np.ndarray:
    """Row ids as uint32 when all fit (half the memory), else int64."""
    arr = np.asarray(ids)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.size == 0:
        return np.zeros(0, np.uint32)
    if arr.dtype == np.uint64 and int(arr.max()) >= 2**63:
        raise ValueError("ids must fit in int64")
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi < 2**32:
        return np.ascontiguousarray(arr, dtype=np.uint32)
    return np.ascontiguousarray(arr, dtype=np.int64)


def _uint_for(bits: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= 8 * np.dtype(dtype).itemsize:
            return np.dtype(dtype)
    raise AssertionError(bits)


def _low_mask(width: int) -> int:
    return (1 << width) - 1


def _residual(codes: np.ndarray, lo: int, k: int) -> np.ndarray:
    """Codes with bits [lo, lo + k) squeezed out (uint64)."""
    codes = codes.astype(np.uint64, copy=False)
    low = codes & np.uint64(_low_mask(lo))
    if lo + k >= 64:
        return low
    return low | ((codes >> np.uint64(lo + k)) << np.uint64(lo))


def _residual_int(code: int, lo: int, k: int) -> int:
    return (code & _low_mask(lo)) | ((code >> (lo + k)) << lo)


def _unsqueeze(residuals: np.ndarray, keys: np.ndarray, lo: int, k: int) -> np.ndarray:
    """Inverse of _residual: full codes from residuals and their keys."""
    res = residuals.astype(np.uint64)
    low = res & np.uint64(_low_mask(lo))
    high = res >> np.uint64(lo) if lo < 64 else np.zeros_like(res)
    out = low | (keys.astype(np.uint64) << np.uint64(lo))
    if lo + k < 64:
        out |= high << np.uint64(lo + k)
    return out


# ---------------------------------------------------------------------------- the layout
@dataclass(frozen=True)
class TableLayout:
    """One table: keyed on code bits [lo, lo + k)."""

    lo: int
    k: int


def _split_ranges(n_bits: int, n_tables: int) -> list[tuple[int, int]]:
    """n_bits into n_tables contiguous (start, width) ranges, widest first."""
    base, extra = divmod(n_bits, n_tables)
    ranges, start = [], 0
    for i in range(n_tables):
        width = base + (1 if i < extra else 0)
        ranges.append((start, width))
        start += width
    return ranges


def _layout_bytes(layout: Sequence[TableLayout], n_bits: int, n_rows: int, id_bytes: int) -> float:
    """Bytes per row of a layout: residual + id per table, plus the directories."""
    dir_bytes = 4 if n_rows < 2**32 else 8
    per_row = sum(_uint_for(max(n_bits - t.k, 1)).itemsize + id_bytes for t in layout)
    directories = sum(((1 << t.k) + 1) * dir_bytes for t in layout)
    return per_row + directories / max(n_rows, 1)


def _neighbour_count(k: int, t: int) -> int:
    """Keys within t of a k-bit key: sum of C(k, s), s <= t."""
    return sum(math.comb(k, s) for s in range(min(t, k) + 1))


def _probe_ns(table_bytes: float) -> float:
    return PROBE_NS_CACHED if table_bytes <= CACHED_TABLE_BYTES else PROBE_NS_MEMORY


def _thresholds(n_used: int, radius: int) -> list[int]:
    """Per-table probe radii with sum(t + 1) = radius + 1 (the first ones get the extra)."""
    q, a = divmod(radius + 1, n_used)
    return [q + (1 if i < a else 0) - 1 for i in range(n_used)]


def _best_probe(
    ks: Sequence[int], key_cdfs: Sequence[Sequence[float]], probe_ns: Sequence[float], n_rows: int, radius: int
) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """(cost, tables, thresholds) of the cheapest exact way to probe for ``radius`` with some
    of the tables: a subset S with sum(t_i + 1) = radius + 1 over S.  Probing table i to
    radius t costs C(k_i, <= t) probes and scans the rows whose key is within t of the
    query's: n_rows * key_cdfs[i][t] of them."""
    best = None
    m = len(ks)
    for n_used in range(1, min(m, radius + 1) + 1):
        for subset in combinations(range(m), n_used):
            ts = [min(t, ks[i]) for t, i in zip(_thresholds(n_used, radius), subset)]
            cost = sum(
                _neighbour_count(ks[i], t) * probe_ns[i] + ROW_NS * n_rows * key_cdfs[i][t] for i, t in zip(subset, ts)
            )
            if best is None or cost < best[0]:
                best = (cost, tuple(subset), tuple(ts))
    assert best is not None
    return best


def _pair_xors(codes: np.ndarray) -> np.ndarray:
    """XORs of sampled (query, row) pairs, both drawn from the codes (queries look like the
    data), for estimating how many rows a probe scans."""
    if len(codes) == 0:
        return np.zeros(0, np.uint64)
    rng = np.random.default_rng(0)
    queries = codes[rng.integers(0, len(codes), PAIR_QUERIES)]
    rows = codes[rng.integers(0, len(codes), PAIR_ROWS)]
    return (queries[:, None] ^ rows[None, :]).reshape(-1)


def _key_cdf(xors: np.ndarray, lo: int, k: int) -> list[float]:
    """P(key distance <= t), t = 0..k, for a random (query, row) pair: from the sample, but
    never below what uniformly random codes give (the sample cannot see tiny fractions)."""
    uniform = np.cumsum([math.comb(k, s) for s in range(k + 1)]) / float(2**k)
    if len(xors) == 0:
        return uniform.tolist()
    d = np.bitwise_count((xors >> np.uint64(lo)) & np.uint64(_low_mask(k)))
    sampled = np.cumsum(np.bincount(d, minlength=k + 1)[: k + 1]) / len(xors)
    return np.maximum(sampled, uniform).tolist()


def choose_layout(
    codes: Any,
    n_bits: int,
    *,
    radius_hint: int = 2,
    max_bytes_per_code: float = 16.0,
    id_bytes: int = 4,
) -> list[TableLayout]:
    """The layout the cost model expects to answer ``radius_hint`` fastest for these codes
    within ``max_bytes_per_code`` (else the smallest).  Candidates: 1 to 4 tables over
    equal contiguous bit ranges, keyed on the top 0 to log2(N) + 1 bits of each; the rows a
    probe scans are estimated on sampled pairs of the codes themselves, so clustered codes
    (where a short key lumps a whole cluster into one bucket) get the layout that suits
    them, not the one random codes would."""
    n_bits = _check_bits(n_bits)
    codes = as_codes(codes, n_bits)
    n_rows = len(codes)
    xors = _pair_xors(codes)
    cap = min(MAX_KEY_BITS, max(0, math.ceil(math.log2(max(n_rows, 1))) + 1))
    candidates: list[tuple[float, float, list[TableLayout]]] = []
    for n_tables in range(1, min(MAX_TABLES, n_bits) + 1):
        ranges = _split_ranges(n_bits, n_tables)
        for shrink in range(0, 9):
            layout = [
                TableLayout(start + width - max(0, min(width, cap) - shrink), max(0, min(width, cap) - shrink))
                for start, width in ranges
            ]
            size = _layout_bytes(layout, n_bits, n_rows, id_bytes)
            probe_ns = [_probe_ns(size * n_rows / len(layout))] * len(layout)
            cdfs = [_key_cdf(xors, t.lo, t.k) for t in layout]
            cost = _best_probe([t.k for t in layout], cdfs, probe_ns, n_rows, radius_hint)[0]
            candidates.append((cost, size, layout))
            if all(t.k == 0 for t in layout):
                break
    fitting = [c for c in candidates if c[1] <= max_bytes_per_code]
    if fitting:
        return min(fitting, key=lambda c: (c[0], c[1]))[2]
    return min(candidates, key=lambda c: (c[1], c[0]))[2]


@dataclass(frozen=True)
class Plan:
    """How one call is answered: ``probe`` the listed tables with the listed radii, or
    ``scan`` table 0.  ``cost_ns`` is the model's estimate per query."""

    method: str
    tables: tuple[int, ...]
    thresholds: tuple[int, ...]
    cost_ns: float


# ---------------------------------------------------------------------------- the structure
class _Table:
    __slots__ = ("lo", "k", "directory", "residuals", "ids", "key_cdf")

    def __init__(self, lo: int, k: int, directory: np.ndarray, residuals: np.ndarray, ids: np.ndarray,
                 key_cdf: Sequence[float]):  # fmt: skip
        self.lo, self.k = int(lo), int(k)
        self.directory, self.residuals, self.ids = directory, residuals, ids
        self.key_cdf = [float(x) for x in key_cdf]  # P(key distance <= t) for data-like queries

    @property
    def nbytes(self) -> int:
        return int(self.directory.nbytes + self.residuals.nbytes + self.ids.nbytes)

    def kernel_args(self, t: int) -> tuple:
        return (
            self.lo, self.k, int(t), self.residuals.itemsize, self.ids.itemsize, self.directory.itemsize,
            len(self.ids), self.directory, self.residuals, self.ids,
        )  # fmt: skip


def _build_table(codes: np.ndarray, ids: np.ndarray, n_bits: int, lo: int, k: int, xors: np.ndarray) -> _Table:
    n = len(codes)
    keys = ((codes >> np.uint64(lo)) & np.uint64(_low_mask(k))).astype(np.uint32)
    counts = np.bincount(keys, minlength=1 << k)
    starts = np.zeros((1 << k) + 1, dtype=np.uint64)
    np.cumsum(counts, out=starts[1:])
    if _kernel is not None and n:
        order = np.empty(n, dtype=np.int64)
        _kernel.bucket_order(keys, starts[:-1].copy(), order)  # O(N) stable counting sort
    else:
        order = np.argsort(keys, kind="stable")
    del keys
    residuals = _residual(codes[order], lo, k).astype(_uint_for(max(n_bits - k, 1)))
    directory = starts.astype(np.uint32 if n < 2**32 else np.uint64)
    return _Table(lo, k, directory, residuals, ids[order], _key_cdf(xors, lo, k))


class HammingLookup:
    """Exact radius search over (row id, code) pairs.  Build with :meth:`build`, open a
    saved one with :meth:`load`, query with :meth:`search`.  Immutable once built."""

    def __init__(self, n_bits: int, count: int, tables: list[_Table]):
        self.n_bits = _check_bits(n_bits)
        self.count = int(count)
        self.tables = tables
        self._codes_cache: np.ndarray | None = None
        self._plans: dict[int, Plan] = {}  # per radius: the model's answer never changes

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        ids: Any,
        codes: Any,
        n_bits: int,
        *,
        layout: Sequence[TableLayout] | None = None,
        radius_hint: int = 2,
        max_bytes_per_code: float = 16.0,
    ) -> "HammingLookup":
        """Index ``codes`` (any integer dtype, ``< 2**n_bits``) under ``ids`` (integers;
        duplicates are kept as separate rows).  ``layout`` overrides the cost model's
        choice (:func:`choose_layout` with ``radius_hint`` and ``max_bytes_per_code``)."""
        n_bits = _check_bits(n_bits)
        codes = as_codes(codes, n_bits)
        ids = _narrow_ids(ids)
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} ids for {len(codes)} codes")
        if layout is None:
            layout = choose_layout(
                codes, n_bits, radius_hint=radius_hint, max_bytes_per_code=max_bytes_per_code,
                id_bytes=ids.itemsize,
            )  # fmt: skip
        _validate_layout(layout, n_bits)
        xors = _pair_xors(codes)
        tables = [_build_table(codes, ids, n_bits, t.lo, t.k, xors) for t in layout]
        return cls(n_bits, len(codes), tables)

    # ------------------------------------------------------------------ facts
    @property
    def layout(self) -> list[TableLayout]:
        return [TableLayout(t.lo, t.k) for t in self.tables]

    @property
    def nbytes(self) -> int:
        """Bytes of every array (mapped or in memory)."""
        return sum(t.nbytes for t in self.tables)

    @property
    def bytes_per_code(self) -> float:
        return self.nbytes / max(self.count, 1)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        keys = ", ".join(f"bits {t.lo}..{t.lo + t.k - 1}" if t.k else "no key" for t in self.tables)
        return f"HammingLookup({self.count} codes of {self.n_bits} bits; tables keyed on {keys})"

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, codes uint64) of every row, in table 0's order (reconstructed)."""
        t = self.tables[0]
        keys = np.repeat(np.arange(1 << t.k, dtype=np.uint64), np.diff(t.directory.astype(np.int64)))
        return t.ids.astype(np.int64), _unsqueeze(t.residuals, keys, t.lo, t.k)

    # ------------------------------------------------------------------ planning
    def probe_plan(self, radius: int) -> Plan:
        """The cheapest exact way to answer ``radius`` by probing tables."""
        radius = min(int(radius), self.n_bits)
        probe_ns = [_probe_ns(t.nbytes) for t in self.tables]
        cdfs = [t.key_cdf for t in self.tables]
        cost, subset, ts = _best_probe([t.k for t in self.tables], cdfs, probe_ns, self.count, radius)
        return Plan("probe", subset, ts, cost)

    def plan(self, radius: int) -> Plan:
        """How :meth:`search` answers ``radius`` by default: the cheaper of the best probe
        plan and a scan of table 0, by the cost model."""
        radius = min(int(radius), self.n_bits)
        cached = self._plans.get(radius)
        if cached is None:
            best = self.probe_plan(radius)
            scan = SCAN_KEY_NS * (1 << self.tables[0].k) + SCAN_ROW_NS * self.count
            cached = Plan("scan", (0,), (self.tables[0].k,), scan) if scan < best.cost_ns else best
            self._plans[radius] = cached
        return cached

    # ------------------------------------------------------------------ searching
    def search(
        self,
        queries: Any,
        radius: int,
        *,
        limit: int | None = None,
        ties: str = "cut",
        method: str = "auto",
        backend: str = "auto",
    ) -> Matches:
        """For each query code, every row within Hamming ``radius`` (inclusive).

        Each query's rows come sorted by (distance, id).  With ``limit``:

        * ``ties="cut"``: exactly the first ``min(limit, n)`` rows in that order;
        * ``ties="keep"``: every row at a distance below D and every row at distance D, D
          being the distance of the limit-th row: the smallest set of whole distance
          tiers holding ``limit`` rows.  Whatever key a caller orders equally distant rows
          by (a path, say), sorting this set by (distance, key) and keeping ``limit`` rows
          gives exactly the rows a full search would: use it when ties are not broken by
          id.  Its size is bounded by ``limit`` plus the last tier.

        Either way probing stops as soon as no farther row can enter the answer.
        ``method`` forces ``probe`` or ``scan`` (both exact); ``backend`` forces the C
        kernel or the NumPy implementation (identical results)."""
        queries = as_codes(np.atleast_1d(np.asarray(queries)) if np.ndim(queries) == 0 else queries,
                           self.n_bits, "query codes")  # fmt: skip
        radius = int(radius)
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        radius = min(radius, self.n_bits)
        if limit is not None:
            limit = int(limit)
            if limit < 1:
                raise ValueError(f"limit must be >= 1 or None, got {limit}")
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "c" and _kernel is None:
            raise RuntimeError("the C lookup kernel is not built: reinstall with `pip install -e .`")
        if len(queries) == 0:
            return _empty_matches(0)
        plan = self.plan(radius)
        if method == "scan":
            plan = Plan("scan", (0,), (self.tables[0].k,), plan.cost_ns)
        elif method == "probe" and plan.method == "scan":
            plan = self.probe_plan(radius)
        use_c = _kernel is not None and backend != "numpy"
        if use_c:
            return self._search_c(queries, radius, plan, limit, ties == "keep")
        return self._search_numpy(queries, radius, plan, limit, ties == "keep")

    def _signed_ids(self) -> bool:
        return self.tables[0].ids.dtype == np.int64

    def _search_c(self, queries: np.ndarray, radius: int, plan: Plan, limit: int | None, keep_ties: bool) -> Matches:
        args = tuple(self.tables[i].kernel_args(t) for i, t in zip(plan.tables, plan.thresholds))
        run = _kernel.scan if plan.method == "scan" else _kernel.probe
        offsets, ids, distances = run(queries, args, radius, limit or 0, keep_ties, self._signed_ids())
        return Matches(
            np.frombuffer(offsets, dtype=np.int64),
            np.frombuffer(ids, dtype=np.int64),
            np.frombuffer(distances, dtype=np.uint8),
        )

    # ------------------------------------------------------------------ NumPy backend
    def _search_numpy(
        self, queries: np.ndarray, radius: int, plan: Plan, limit: int | None, keep_ties: bool
    ) -> Matches:
        # queries per chunk: about a million probes (or scanned rows) in flight at most
        if plan.method == "scan":
            work = max(self.count, 1)
        else:
            work = sum(_neighbour_count(self.tables[i].k, t) for i, t in zip(plan.tables, plan.thresholds))
        chunk = int(max(1, min(256, 1_000_000 // max(work, 1))))
        parts = []
        for start in range(0, len(queries), chunk):
            q = queries[start : start + chunk]
            if plan.method == "scan":
                qidx, dist, ids = self._scan_numpy(q, radius)
            else:
                qidx, dist, ids = self._probe_numpy(q, radius, plan)
            parts.append(_assemble(qidx, dist, ids, len(q), limit, keep_ties))
        offsets = [np.zeros(1, np.int64)]
        total = 0
        for p in parts:
            offsets.append(p.offsets[1:] + total)
            total += int(p.offsets[-1])
        return Matches(
            np.concatenate(offsets),
            np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, np.int64),
            np.concatenate([p.distances for p in parts]) if parts else np.zeros(0, np.uint8),
        )

    def _scan_numpy(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._codes_cache is None:
            self._codes_cache = self.codes()[1]
        codes = self._codes_cache
        row_ids = self.tables[0].ids.astype(np.int64)
        d = np.bitwise_count(queries[:, None] ^ codes[None, :])
        qidx, rows = np.nonzero(d <= radius)
        return qidx, d[qidx, rows].astype(np.uint8), row_ids[rows]

    def _probe_numpy(self, queries: np.ndarray, radius: int, plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        used = [self.tables[i] for i in plan.tables]
        out_q, out_d, out_ids = [], [], []
        for ti, (table, t) in enumerate(zip(used, plan.thresholds)):
            masks, levels = _masks(table.k, t)
            qkey = (queries >> np.uint64(table.lo)) & np.uint64(_low_mask(table.k))
            qres = _residual(queries, table.lo, table.k)
            keys = (qkey[:, None] ^ masks[None, :]).astype(np.int64)
            a = table.directory[keys].astype(np.int64)
            lengths = table.directory[keys + 1].astype(np.int64) - a
            flat_len = lengths.reshape(-1)
            total = int(flat_len.sum())
            if total == 0:
                continue
            probe_q = np.repeat(np.arange(len(queries)), len(masks))
            probe_s = np.tile(levels, len(queries))
            row_q = np.repeat(probe_q, flat_len)
            row_s = np.repeat(probe_s, flat_len)
            first = np.repeat(a.reshape(-1) - (np.cumsum(flat_len) - flat_len), flat_len)
            pos = first + np.arange(total)
            x = table.residuals[pos].astype(np.uint64) ^ qres[row_q]
            d = row_s + np.bitwise_count(x).astype(np.int64)
            keep = d <= radius
            for oj, (other, t_other) in enumerate(zip(used, plan.thresholds)):
                if oj == ti:
                    continue
                mask = np.uint64(_residual_int(_low_mask(other.k) << other.lo, table.lo, table.k))
                dj = np.bitwise_count(x & mask).astype(np.int64)
                keep &= ~((dj <= t_other) & ((dj < row_s) | ((dj == row_s) & (oj < ti))))
            out_q.append(row_q[keep])
            out_d.append(d[keep].astype(np.uint8))
            out_ids.append(table.ids[pos[keep]].astype(np.int64))
        if not out_q:
            return np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64)
        return np.concatenate(out_q), np.concatenate(out_d), np.concatenate(out_ids)

    # ------------------------------------------------------------------ persistence
    def save(
        self, path: str | Path, key: dict[str, Any] | None = None, mode: int | None = None, info: dict[str, Any] | None = None
    ) -> None:
        """Write to ``path`` atomically (temporary file + rename), recording ``key`` (the
        record state it was built from; JSON-able) in the header, and ``info`` (anything
        JSON-able the caller wants to read back with :func:`read_header`)."""
        path = Path(path)
        arrays: list[np.ndarray] = []
        tables_meta = []
        for t in self.tables:
            entry: dict[str, Any] = {"lo": t.lo, "k": t.k, "key_cdf": t.key_cdf}
            for name in ("directory", "residuals", "ids"):
                arr = np.ascontiguousarray(getattr(t, name))
                entry[name] = {"dtype": arr.dtype.str, "length": int(len(arr))}
                arrays.append(arr)
            tables_meta.append(entry)
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_bits": self.n_bits,
            "count": self.count,
            "key": _jsonable(key),
            "info": _jsonable(info),
            "tables": tables_meta,
        }
        # offsets depend on the header's length, which depends on the offsets: fix the
        # header size first with placeholder offsets of the final width
        offsets_width = 20
        for entry in tables_meta:
            for name in ("directory", "residuals", "ids"):
                entry[name]["offset"] = 10**offsets_width - 1
        head_len = _aligned(len(MAGIC) + 8 + len(json.dumps(header).encode()))
        offset = head_len
        for entry, arr in zip((e[n] for e in tables_meta for n in ("directory", "residuals", "ids")), arrays):
            entry["offset"] = offset
            offset = _aligned(offset + arr.nbytes)
        blob = json.dumps(header).encode()
        blob = blob + b" " * (head_len - len(MAGIC) - 8 - len(blob))
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        with written_atomically(path, mode) as fh:
            fh.write(MAGIC)
            fh.write(np.uint64(len(blob)).tobytes())
            fh.write(blob)
            for arr in arrays:
                fh.write(b"\0" * (_aligned(fh.tell()) - fh.tell()))
                fh.write(memoryview(arr).cast("B"))
            fh.write(b"\0" * (_aligned(fh.tell()) - fh.tell()))

    @classmethod
    def load(cls, path: str | Path, key: dict[str, Any] | None = None) -> "HammingLookup | None":
        """Memory-map a saved lookup.  None when the file is missing, unreadable, of another
        format version, or (with ``key``) built from another record state: the caller rebuilds.
        Only the header is read; the arrays are paged in by the searches that touch them."""
        try:
            with open(path, "rb") as fh:
                header = _read_header(fh)
                if header is None or (key is not None and header.get("key") != _jsonable(key)):
                    return None
                size = os.fstat(fh.fileno()).st_size
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            tables = []
            for entry in header["tables"]:
                arrays = {}
                for name in ("directory", "residuals", "ids"):
                    spec = entry[name]
                    dtype, length, offset = np.dtype(spec["dtype"]), int(spec["length"]), int(spec["offset"])
                    if offset % ALIGN or offset + length * dtype.itemsize > size:
                        return None
                    arrays[name] = (
                        np.frombuffer(mapped, dtype=dtype, count=length, offset=offset)
                        if length
                        else np.zeros(0, dtype)
                    )
                lo, k = int(entry["lo"]), int(entry["k"])
                if (len(arrays["directory"]) != (1 << k) + 1 or len(arrays["ids"]) != header["count"]
                        or len(arrays["residuals"]) != header["count"] or len(entry["key_cdf"]) != k + 1):
                    return None  # fmt: skip
                tables.append(_Table(lo, k, arrays["directory"], arrays["residuals"], arrays["ids"], entry["key_cdf"]))
            _validate_layout([TableLayout(t.lo, t.k) for t in tables], header["n_bits"])
            return cls(header["n_bits"], header["count"], tables)
        except (OSError, ValueError, KeyError, TypeError):
            return None


@contextmanager
def written_atomically(path: Path, mode: int) -> Iterator[Any]:
    """A binary file handle whose content becomes ``path`` (permissions ``mode``) only when
    the block ends without error: written under a temporary name, fsync'ed, renamed into
    place.  The temporary name carries this process's id: if it is killed mid-write, the
    next open of the index removes the file (db.remove_leftovers) once the process is gone."""
    import tempfile  # only writers pay for it

    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _validate_layout(layout: Sequence[TableLayout], n_bits: int) -> None:
    if not 1 <= len(layout) <= MAX_TABLES:
        raise ValueError(f"a layout has 1 to {MAX_TABLES} tables, got {len(layout)}")
    taken = 0
    for t in layout:
        if t.k < 0 or t.k > MAX_KEY_BITS or t.lo < 0 or t.lo + t.k > n_bits:
            raise ValueError(f"table key bits {t.lo}..{t.lo + t.k - 1} do not fit {n_bits}-bit codes")
        bits = _low_mask(t.k) << t.lo
        if bits & taken:
            raise ValueError("table key ranges must not overlap")
        taken |= bits


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _jsonable(key: dict[str, Any] | None) -> Any:
    return json.loads(json.dumps(key, sort_keys=True, default=str)) if key is not None else None


def _read_header(fh) -> dict[str, Any] | None:
    head = fh.read(len(MAGIC) + 8)
    if len(head) != len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
        return None
    n = int(np.frombuffer(head[len(MAGIC) :], dtype=np.uint64)[0])
    if n > 1 << 24:
        return None
    header = json.loads(fh.read(n).decode())
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
        return None
    return header


def read_header(path: str | Path) -> dict[str, Any] | None:
    """The header of a saved lookup (key, count, n_bits, layout), or None if unreadable;
    reads a few hundred bytes (for status displays)."""
    try:
        with open(path, "rb") as fh:
            return _read_header(fh)
    except (OSError, ValueError):
        return None


def is_current(path: str | Path, key: dict[str, Any]) -> bool:
    """Whether the file at ``path`` is a lookup built from the record state ``key``."""
    header = read_header(path)
    return header is not None and header.get("key") == _jsonable(key)


def load_or_build(
    path: str | Path,
    key: dict[str, Any],
    rows: Callable[[], Iterable[tuple[Any, Any]]],
    n_bits: int,
    *,
    write: bool = True,
    mode: int | None = None,
    **build_options: Any,
) -> HammingLookup:
    """The lookup saved at ``path`` if it was built from ``key``; else build one from
    ``rows()`` (an iterable of ``(ids, codes)`` chunks, read only when a build is needed)
    and save it.  A file that cannot be written (read-only folder, full disk) is not an
    error: the built lookup still answers."""
    n_bits = _check_bits(n_bits)
    cached = HammingLookup.load(path, key)
    if cached is not None and cached.n_bits == n_bits:
        return cached
    lookup = build_from_rows(rows(), n_bits, **build_options)
    if write:
        try:
            lookup.save(path, key, mode=mode)
        except OSError:
            pass
    return lookup


def build_from_rows(rows: Iterable[tuple[Any, Any]], n_bits: int, **build_options: Any) -> HammingLookup:
    """A lookup over ``(ids, codes)`` chunks (each chunk two arrays; codes in any integer
    dtype, int64 two's complement included), gathered into two flat arrays first."""
    n_bits = _check_bits(n_bits)
    id_chunks, code_chunks = [], []
    for ids, codes in rows:
        id_chunks.append(np.asarray(ids).reshape(-1).astype(np.int64, copy=False))
        code_chunks.append(as_codes(codes, n_bits))
    ids = np.concatenate(id_chunks) if id_chunks else np.zeros(0, np.int64)
    codes = np.concatenate(code_chunks) if code_chunks else np.zeros(0, np.uint64)
    del id_chunks, code_chunks
    return HammingLookup.build(ids, codes, n_bits, **build_options)


# ---------------------------------------------------------------------------- helpers
_MASKS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _masks(k: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Every k-bit mask of popcount <= t (uint64) and its popcount, by popcount."""
    cached = _MASKS.get((k, t))
    if cached is None:
        masks, levels = [], []
        for s in range(min(t, k) + 1):
            for positions in combinations(range(k), s):
                masks.append(sum(1 << p for p in positions))
                levels.append(s)
        cached = (np.array(masks, dtype=np.uint64), np.array(levels, dtype=np.int64))
        if len(_MASKS) < 64:
            _MASKS[(k, t)] = cached
    return cached


def _assemble(
    qidx: np.ndarray, dist: np.ndarray, ids: np.ndarray, n_queries: int, limit: int | None, keep_ties: bool
) -> Matches:
    """Flat (query, distance, id) triples -> Matches sorted by (distance, id), limited."""
    order = np.lexsort((ids, dist, qidx))
    qidx, dist, ids = qidx[order], dist[order], ids[order]
    counts = np.bincount(qidx, minlength=n_queries).astype(np.int64)
    if limit is not None and len(qidx):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(qidx)) - starts[qidx]
        if keep_ties:
            # the distance of each query's limit-th row (or beyond every row if fewer)
            last = np.full(n_queries, 255, dtype=np.int64)
            has = counts >= limit
            last[has] = dist[starts[has] + limit - 1]
            keep = dist.astype(np.int64) <= last[qidx]
        else:
            keep = rank < limit
        qidx, dist, ids = qidx[keep], dist[keep], ids[keep]
        counts = np.bincount(qidx, minlength=n_queries).astype(np.int64)
    offsets = np.zeros(n_queries + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Matches(offsets, ids.astype(np.int64), dist.astype(np.uint8))


def brute_force(
    ids: Any, codes: Any, queries: Any, radius: int, n_bits: int, *, limit: int | None = None, ties: str = "cut"
) -> Matches:
    """The reference answer: every (query, row) distance computed, no structure."""
    codes = as_codes(codes, n_bits)
    queries = as_codes(queries, n_bits, "query codes")
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    d = np.bitwise_count(queries[:, None] ^ codes[None, :]) if len(codes) else np.zeros((len(queries), 0), np.uint8)
    qidx, rows = np.nonzero(d <= radius)
    return _assemble(qidx, d[qidx, rows].astype(np.uint8), ids[rows], len(queries), limit, ties == "keep")
