"""Retrieval and purity metrics for binary hash codes (pure NumPy).

Codes are unsigned 64-bit integers as produced by :mod:`semhash.hashing` (signed int64
codes, e.g. read back from SQLite, are reinterpreted as two's complement).  Labels are any
1-D arrays of comparable values (ints in practice); "relevant" always means "same label".

Conventions used throughout
---------------------------
* Gini purity of a set of labels: ``sum_c p_c**2`` where ``p_c`` is the share of class
  ``c``.  1.0 for a pure set, ``1/C`` for a set spread evenly over ``C`` classes, nan for
  an empty set.
* A *bucket* is the set of database images sharing one exact code.
* The *neighbourhood* of a query at radius ``r`` is the set of database images whose code
  is within Hamming distance ``<= r`` of the query's code.  With ``exclude_self=True``
  (leave-one-out on one set, query ``i`` is database image ``i``) the query itself is left
  out of its own neighbourhood and of its own relevant set.

Every query/database metric is computed by one chunked scan (:func:`_scan`): for a chunk of
queries it computes the Hamming distances to the whole database and, with a single
``np.bincount``, the number of database images per (query, distance, class).  Everything
else (neighbourhoods for every radius, tie-aware AP, precision/recall per radius) derives
from those small tables, so 10,000 queries x 60,000 database images run in a few seconds
in bounded memory.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from semhash.hashing import MAX_BITS, check_bits

#: default number of queries per distance chunk (chunk x database int distances in memory)
DEFAULT_CHUNK = 256
#: cap on the number of cells of one chunk's (queries, distances, classes) count table
_MAX_TABLE_CELLS = 4_000_000
#: cap on the number of (query, database) pairs held per chunk (a few int64 buffers of it)
_MAX_CHUNK_ELEMENTS = 8_000_000
#: default number of largest buckets listed by :func:`bucket_stats`
DEFAULT_N_LARGEST = 16

__all__ = [
    "gini_purity",
    "bucket_stats",
    "size_histogram",
    "neighbourhood_stats",
    "mean_average_precision",
    "average_precisions",
    "pr_curve_by_radius",
    "retrieval_metrics",
    "bit_balance",
    "constant_bits",
    "saturation",
    "bit_correlation",
    "within_radius_rate",
]


# --------------------------------------------------------------------------- helpers


def _as_codes(codes) -> np.ndarray:
    """Any integer array-like -> 1-D uint64 (negative int64 reinterpreted, two's complement)."""
    arr = np.asarray(codes)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype == object:
        return np.array([int(v) & ((1 << 64) - 1) for v in arr.reshape(-1)], dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"codes must be 1-D, got shape {arr.shape}")
    return arr.astype(np.uint64, copy=False)


def _as_labels(labels, n: int | None = None, what: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{what} has {arr.shape[0]} entries but there are {n} codes")
    return arr


def _check_code_width(codes: np.ndarray, n_bits: int, what: str) -> None:
    if n_bits < MAX_BITS and codes.size and (codes >> np.uint64(n_bits)).any():
        raise ValueError(f"{what} have bits set beyond n_bits={n_bits}")


def _encode_labels(query_labels: np.ndarray, db_labels: np.ndarray):
    """Map both label arrays onto 0..C-1 over their union; returns (q_cls, db_cls, classes)."""
    both = np.concatenate([np.asarray(query_labels), np.asarray(db_labels)])
    classes, inverse = np.unique(both, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.intp)
    return inverse[: len(query_labels)], inverse[len(query_labels):], classes


def _harmonic(n: int) -> np.ndarray:
    """H[k] = 1 + 1/2 + ... + 1/k for k = 0..n (H[0] = 0)."""
    h = np.zeros(n + 1, dtype=np.float64)
    if n:
        np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64), out=h[1:])
    return h


def _py(value):
    """NumPy scalar -> plain Python value (anything else unchanged)."""
    return value.item() if isinstance(value, np.generic) else value


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else math.nan


# --------------------------------------------------------------------------- purity


def gini_purity(labels) -> float:
    """Gini purity ``sum_c p_c**2`` of one set of labels.

    ``p_c`` is the share of the set carrying label ``c``.  1.0 for a pure set (and for a
    single image), ``1/C`` for a set spread evenly over ``C`` classes; nan for an empty set.
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        return math.nan
    _, counts = np.unique(labels, return_counts=True)
    p = counts / labels.size
    return float(np.sum(p * p))


def _size_bins(max_size: int) -> list[tuple[int, int]]:
    """Bins 1, 2, 3-4, 5-8, 9-16, ... covering 1..max_size."""
    bins = [(1, 1)]
    hi = 1
    while hi < max_size:
        lo, hi = hi + 1, hi * 2
        bins.append((lo, hi))
    return bins


def size_histogram(sizes) -> list[dict]:
    """Histogram of bucket sizes over power-of-two bins 1, 2, 3-4, 5-8, 9-16, ...

    Returns one dict per bin up to the largest size:
    ``{"label": "3-4", "low": 3, "high": 4, "buckets": <number of buckets whose size is in
    [low, high]>, "images": <number of images in those buckets>}``.
    """
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if sizes.size == 0:
        return []
    out = []
    for lo, hi in _size_bins(int(sizes.max())):
        sel = (sizes >= lo) & (sizes <= hi)
        out.append({
            "label": str(lo) if lo == hi else f"{lo}-{hi}",
            "low": lo,
            "high": hi,
            "buckets": int(sel.sum()),
            "images": int(sizes[sel].sum()),
        })
    return out


def bucket_stats(codes, labels, n_largest: int = DEFAULT_N_LARGEST) -> dict:
    """Group images by identical code ("buckets") and measure how pure and how shared they are.

    Returns a dict:

    * ``n_images``: number of images; ``n_buckets``: number of distinct codes.
    * ``purity``: size-weighted mean Gini purity of the buckets,
      ``sum_b |b| * gini(b) / n_images``.  Singleton buckets count, with purity 1, so a
      hash that isolates every image scores 1.0 -- read it together with ``coverage``.
    * ``coverage``: share of images whose bucket holds at least one other image
      (``sum over buckets of size >= 2 of |b|`` / ``n_images``).
    * ``purity_shared``: the same weighted purity restricted to buckets of size >= 2
      (nan if there are none).
    * ``n_shared_buckets``: number of buckets of size >= 2; ``n_singletons``: size-1 buckets.
    * ``largest_bucket``: size of the largest bucket (0 for no images).
    * ``size_histogram``: :func:`size_histogram` of the bucket sizes (bins 1, 2, 3-4, ...).
    * ``size_counts``: ``{size: number of buckets of that size}`` (int keys, ascending).
    * ``largest``: the ``n_largest`` largest buckets, largest first (ties: smaller code
      first), each ``{"code": int, "size": int, "purity": float, "majority_label": label,
      "majority_share": float}``.
    """
    codes = _as_codes(codes)
    labels = _as_labels(labels, codes.shape[0])
    n = int(codes.shape[0])
    if n == 0:
        return {
            "n_images": 0, "n_buckets": 0, "purity": math.nan, "coverage": math.nan,
            "purity_shared": math.nan, "n_shared_buckets": 0, "n_singletons": 0,
            "largest_bucket": 0, "size_histogram": [], "size_counts": {}, "largest": [],
        }
    ucodes, bucket, sizes = np.unique(codes, return_inverse=True, return_counts=True)
    bucket = bucket.reshape(-1).astype(np.int64)
    classes, cls = np.unique(labels, return_inverse=True)
    cls = cls.reshape(-1).astype(np.int64)
    n_classes = len(classes)
    # sparse (bucket, class) counts -> per-bucket sum of squared class counts
    pair_keys, pair_counts = np.unique(bucket * n_classes + cls, return_counts=True)
    pair_bucket = pair_keys // n_classes
    pair_cls = pair_keys % n_classes
    sumsq = np.bincount(pair_bucket, weights=pair_counts.astype(np.float64) ** 2,
                        minlength=len(ucodes))
    gini = sumsq / sizes.astype(np.float64) ** 2
    shared = sizes >= 2
    n_shared_images = int(sizes[shared].sum())
    purity = float(np.sum(sizes * gini) / n)
    purity_shared = (float(np.sum(sizes[shared] * gini[shared]) / n_shared_images)
                     if n_shared_images else math.nan)

    # majority class per bucket (first class in sorted order among ties)
    order = np.lexsort((pair_cls, -pair_counts, pair_bucket))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair_bucket[order][1:] != pair_bucket[order][:-1]
    maj_idx = order[first]  # one per bucket, bucket ascending
    majority_cls = pair_cls[maj_idx]
    majority_cnt = pair_counts[maj_idx]

    top = np.lexsort((ucodes, -sizes))[: max(0, int(n_largest))]
    largest = [{
        "code": int(ucodes[b]),
        "size": int(sizes[b]),
        "purity": float(gini[b]),
        "majority_label": _py(classes[majority_cls[b]]),
        "majority_share": float(majority_cnt[b] / sizes[b]),
    } for b in top]

    size_values, size_freq = np.unique(sizes, return_counts=True)
    return {
        "n_images": n,
        "n_buckets": int(len(ucodes)),
        "purity": purity,
        "coverage": n_shared_images / n,
        "purity_shared": purity_shared,
        "n_shared_buckets": int(shared.sum()),
        "n_singletons": int((sizes == 1).sum()),
        "largest_bucket": int(sizes.max()),
        "size_histogram": size_histogram(sizes),
        "size_counts": {int(s): int(c) for s, c in zip(size_values, size_freq)},
        "largest": largest,
    }


# --------------------------------------------------------------------------- the scan


def _scan(query_codes, query_labels, db_codes, db_labels, max_distance: int,
          exclude_self: bool = False, chunk_size: int = DEFAULT_CHUNK) -> dict:
    """Per-query tables over distances ``0..max_distance`` (distances beyond are dropped).

    Returns a dict of arrays with ``D = max_distance + 1`` columns:

    * ``n``: (Q, D) number of database images at exactly distance d;
    * ``r``: (Q, D) of those, how many share the query's label;
    * ``sumsq``: (Q, D) ``sum_c (count of class c within distance <= d)**2`` (for purity);
    * ``r_total``: (Q,) number of relevant database images at any distance;
    * ``n_db``: database size (minus one with ``exclude_self``).
    """
    q = _as_codes(query_codes)
    db = _as_codes(db_codes)
    ql = _as_labels(query_labels, q.shape[0], "query_labels")
    dl = _as_labels(db_labels, db.shape[0], "db_labels")
    if max_distance < 0:
        raise ValueError("radius must be >= 0")
    if exclude_self:
        if q.shape[0] != db.shape[0] or not np.array_equal(q, db):
            raise ValueError("exclude_self=True needs the query set to be the database "
                             "(same codes, same order)")
        if not np.array_equal(ql, dl):
            raise ValueError("exclude_self=True needs query_labels == db_labels")
    n_q, n_db = int(q.shape[0]), int(db.shape[0])
    D = int(min(max_distance, MAX_BITS)) + 1
    q_cls, db_cls, classes = _encode_labels(ql, dl)
    C = max(1, len(classes))

    n_tab = np.zeros((n_q, D), dtype=np.int64)
    r_tab = np.zeros((n_q, D), dtype=np.int64)
    s_tab = np.zeros((n_q, D), dtype=np.int64)
    class_totals = np.bincount(db_cls, minlength=C).astype(np.int64)
    r_total = class_totals[q_cls] if n_q else np.zeros(0, dtype=np.int64)
    if exclude_self:
        r_total = r_total - 1

    clip = D <= MAX_BITS  # distances can exceed max_distance: send them to an overflow bin
    Dk = D + 1 if clip else D
    m = int(max(1, min(int(chunk_size), _MAX_TABLE_CELLS // (Dk * C),
                       _MAX_CHUNK_ELEMENTS // max(1, n_db))))
    m = min(m, max(1, n_q))
    # bincount key of (row, distance, class) = (row * Dk + distance) * C + class; the part
    # that does not depend on the distance is precomputed once, buffers are reused.
    base = (np.arange(m, dtype=np.intp) * (Dk * C))[:, None] + db_cls.astype(np.intp)[None, :]
    xor_buf = np.empty((m, n_db), dtype=np.uint64)
    key_buf = np.empty((m, n_db), dtype=np.intp)
    for start in range(0, n_q, m):
        stop = min(n_q, start + m)
        mm = stop - start
        np.bitwise_xor(q[start:stop, None], db[None, :], out=xor_buf[:mm])
        dist = np.bitwise_count(xor_buf[:mm])
        if clip:
            np.minimum(dist, D, out=dist)
        key = key_buf[:mm]
        np.multiply(dist, C, out=key, dtype=np.intp)  # not uint8: d*C overflows
        key += base[:mm]
        counts = np.bincount(key.ravel(), minlength=mm * Dk * C).reshape(mm, Dk, C)[:, :D]
        rows = np.arange(mm)
        qc = q_cls[start:stop]
        if exclude_self:
            counts[rows, 0, qc] -= 1
        n_tab[start:stop] = counts.sum(axis=2)
        r_tab[start:stop] = counts[rows, :, qc]
        cum = np.cumsum(counts, axis=1)
        s_tab[start:stop] = np.einsum("qdc,qdc->qd", cum, cum)
    return {"n": n_tab, "r": r_tab, "sumsq": s_tab, "r_total": r_total,
            "n_db": n_db - (1 if exclude_self else 0)}


def _neighbourhood_from_tables(tab: dict, radius: int) -> dict:
    """Neighbourhood statistics at ``radius`` from :func:`_scan` tables (see
    :func:`neighbourhood_stats` for the definitions)."""
    n_q = tab["n"].shape[0]
    col = min(int(radius), tab["n"].shape[1] - 1)
    size = tab["n"][:, : col + 1].sum(axis=1)
    rel = tab["r"][:, : col + 1].sum(axis=1)
    sumsq = tab["sumsq"][:, col]
    hit = size > 0
    sz = size[hit].astype(np.float64)
    purity = sumsq[hit] / (sz * sz)
    precision = rel[hit] / sz
    prec_all = np.zeros(n_q, dtype=np.float64)
    prec_all[hit] = precision
    return {
        "radius": int(radius),
        "n_queries": int(n_q),
        "n_hits": int(hit.sum()),
        "hit_rate": _nanmean(hit),
        "purity": _nanmean(purity),
        "precision": _nanmean(precision),
        "precision_all": _nanmean(prec_all),
        "mean_size": _nanmean(size),
        "median_size": float(np.median(size)) if n_q else math.nan,
    }


def _ap_from_tables(tab: dict) -> np.ndarray:
    """Tie-aware (expected) average precision per query; nan where there is no relevant item.

    Distance groups are walked in order d = 0, 1, ...; a group holds ``n`` items of which
    ``r`` are relevant, with ``N_prev`` items and ``R_prev`` relevant ones ranked before it.
    Averaging over uniformly random orderings inside the group (McSherry & Najork 2008),
    position ``i`` (1-based) of the group is relevant with probability ``r/n`` and, given
    that, is preceded inside the group by ``(i-1)*a`` relevant items in expectation, with
    ``a = (r-1)/(n-1)`` (``a = 0`` if ``n == 1``).  The group therefore contributes

        sum_{i=1..n} (r/n) * (R_prev + 1 + (i-1)*a) / (N_prev + i)
          = (r/n) * [ n*a + (R_prev + 1 - (N_prev + 1)*a) * (H(N_prev + n) - H(N_prev)) ]

    with ``H`` the harmonic numbers, and ``AP = sum over groups / R_total``.
    """
    n = tab["n"].astype(np.float64)
    r = tab["r"].astype(np.float64)
    n_int = tab["n"]
    N_prev_int = np.cumsum(n_int, axis=1) - n_int
    R_prev = np.cumsum(r, axis=1) - r
    H = _harmonic(int(max(tab["n_db"], int(np.cumsum(n_int, axis=1).max(initial=0)))))
    dH = H[N_prev_int + n_int] - H[N_prev_int]
    N_prev = N_prev_int.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(n > 1, (r - 1.0) / np.maximum(n - 1.0, 1.0), 0.0)
        contrib = np.where(
            r > 0,
            (r / np.maximum(n, 1.0)) * (n * a + (R_prev + 1.0 - (N_prev + 1.0) * a) * dH),
            0.0,
        )
    total = contrib.sum(axis=1)
    r_total = tab["r_total"].astype(np.float64)
    ap = np.full(total.shape, np.nan)
    ok = r_total > 0
    ap[ok] = total[ok] / r_total[ok]
    return ap


def _pr_from_tables(tab: dict, n_bits: int) -> dict:
    n_q = tab["n"].shape[0]
    cols = np.minimum(np.arange(n_bits + 1), tab["n"].shape[1] - 1)
    size = np.cumsum(tab["n"], axis=1)[:, cols]
    rel = np.cumsum(tab["r"], axis=1)[:, cols]
    r_total = tab["r_total"]
    tot_ret = size.sum(axis=0).astype(np.float64)
    tot_rel = rel.sum(axis=0).astype(np.float64)
    all_rel = float(r_total.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tot_ret > 0, tot_rel / np.maximum(tot_ret, 1), np.nan)
        recall = (tot_rel / all_rel) if all_rel > 0 else np.full(n_bits + 1, np.nan)
        hit = size > 0
        p_q = np.where(hit, rel / np.maximum(size, 1), np.nan)
        has_rel = r_total > 0
        rc_q = rel[has_rel] / r_total[has_rel][:, None]
    n_hit = hit.sum(axis=0)
    precision_mean = np.array([np.nanmean(p_q[:, j]) if n_hit[j] else np.nan
                               for j in range(n_bits + 1)])
    recall_mean = rc_q.mean(axis=0) if rc_q.shape[0] else np.full(n_bits + 1, np.nan)
    return {
        "radius": list(range(n_bits + 1)),
        "precision": precision.tolist(),
        "recall": np.asarray(recall, dtype=np.float64).tolist(),
        "precision_mean": precision_mean.tolist(),
        "recall_mean": np.asarray(recall_mean, dtype=np.float64).tolist(),
        "hit_rate": (n_hit / n_q).tolist() if n_q else [math.nan] * (n_bits + 1),
        "mean_size": (size.mean(axis=0)).tolist() if n_q else [math.nan] * (n_bits + 1),
    }


# --------------------------------------------------------------------------- public retrieval


def neighbourhood_stats(query_codes, query_labels, db_codes, db_labels, radius: int,
                        exclude_self: bool = False, *, chunk_size: int = DEFAULT_CHUNK) -> dict:
    """Statistics of the Hamming balls of radius ``radius`` around each query.

    The neighbourhood of a query is every database image within Hamming distance
    ``<= radius`` (minus the query itself when ``exclude_self``).  Returns:

    * ``purity``: mean, over queries with >= 1 neighbour, of the Gini purity of the
      neighbours' labels (nan if no query has a neighbour);
    * ``precision``: mean, over the same queries, of the share of neighbours carrying the
      query's label;
    * ``precision_all``: the same mean over *all* queries, a query without neighbours
      counting 0 (the usual "precision within Hamming radius" of the hashing literature);
    * ``hit_rate``: share of queries with >= 1 neighbour; ``n_hits`` their number;
    * ``mean_size`` / ``median_size``: neighbourhood size over all queries;
    * ``radius``, ``n_queries``.

    Queries are processed ``chunk_size`` at a time; the results do not depend on it.
    """
    tab = _scan(query_codes, query_labels, db_codes, db_labels, int(radius),
                exclude_self, chunk_size)
    return _neighbourhood_from_tables(tab, int(radius))


def average_precisions(query_codes, query_labels, db_codes, db_labels, n_bits: int,
                       exclude_self: bool = False, *, chunk_size: int = DEFAULT_CHUNK
                       ) -> np.ndarray:
    """Per-query tie-aware average precision (nan for queries with no relevant item).

    See :func:`mean_average_precision` for the definition.
    """
    n_bits = check_bits(n_bits)
    _check_code_width(_as_codes(query_codes), n_bits, "query codes")
    _check_code_width(_as_codes(db_codes), n_bits, "database codes")
    tab = _scan(query_codes, query_labels, db_codes, db_labels, n_bits, exclude_self,
                chunk_size)
    return _ap_from_tables(tab)


def mean_average_precision(query_codes, query_labels, db_codes, db_labels, n_bits: int,
                           exclude_self: bool = False, *, chunk_size: int = DEFAULT_CHUNK
                           ) -> float:
    """Mean average precision of the full Hamming ranking; relevant = same label.

    The database is ranked by Hamming distance to each query.  Items at equal distance
    are tied; instead of breaking ties arbitrarily (which makes mAP depend on storage
    order), AP is the exact *expected* AP over uniformly random orderings within each
    distance (McSherry & Najork, 2008) -- see :func:`_ap_from_tables` for the closed form.
    Without ties it equals the usual AP (``sklearn.metrics.average_precision_score``).
    Queries with no relevant database item are left out of the mean; nan if none remain.
    """
    ap = average_precisions(query_codes, query_labels, db_codes, db_labels, n_bits,
                            exclude_self, chunk_size=chunk_size)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else math.nan


def pr_curve_by_radius(query_codes, query_labels, db_codes, db_labels, n_bits: int,
                       exclude_self: bool = False, *, chunk_size: int = DEFAULT_CHUNK) -> dict:
    """Precision and recall of "retrieve everything within radius r", for r = 0..n_bits.

    Returns lists indexed by radius:

    * ``precision``: micro-averaged -- total relevant retrieved / total retrieved, pooled
      over all queries (nan where nothing is retrieved at all);
    * ``recall``: micro-averaged -- total relevant retrieved / total relevant;
    * ``precision_mean``: mean over queries with >= 1 retrieved item of their precision;
    * ``recall_mean``: mean over queries with >= 1 relevant item of their recall;
    * ``hit_rate``: share of queries retrieving >= 1 item; ``mean_size``: mean number
      retrieved; ``radius``: 0..n_bits.
    """
    n_bits = check_bits(n_bits)
    tab = _scan(query_codes, query_labels, db_codes, db_labels, n_bits, exclude_self,
                chunk_size)
    return _pr_from_tables(tab, n_bits)


def retrieval_metrics(query_codes, query_labels, db_codes, db_labels, n_bits: int,
                      radii: Iterable[int] = (0, 1, 2), exclude_self: bool = False, *,
                      chunk_size: int = DEFAULT_CHUNK) -> dict:
    """All query/database metrics from a single chunked scan.

    Returns ``{"neighbourhoods": {radius: neighbourhood_stats dict}, "map": float,
    "ap": (Q,) per-query AP array (nan = no relevant item), "n_map_queries": int,
    "pr_by_radius": pr_curve_by_radius dict, "tables": per-query count tables}`` (the
    tables, from the internal scan, are ``n``/``r``/``sumsq`` (Q, n_bits+1) arrays of
    neighbours / relevant neighbours at each exact distance / squared class counts within
    each radius, and ``r_total`` (Q,)) -- the metrics are identical to calling
    :func:`neighbourhood_stats`, :func:`mean_average_precision` and
    :func:`pr_curve_by_radius` separately, at the cost of one scan.
    """
    n_bits = check_bits(n_bits)
    _check_code_width(_as_codes(query_codes), n_bits, "query codes")
    _check_code_width(_as_codes(db_codes), n_bits, "database codes")
    tab = _scan(query_codes, query_labels, db_codes, db_labels, n_bits, exclude_self,
                chunk_size)
    ap = _ap_from_tables(tab)
    valid = ap[~np.isnan(ap)]
    return {
        "neighbourhoods": {int(r): _neighbourhood_from_tables(tab, int(r))
                           for r in sorted(set(int(r) for r in radii))},
        "map": float(valid.mean()) if valid.size else math.nan,
        "ap": ap,
        "n_map_queries": int(valid.size),
        "pr_by_radius": _pr_from_tables(tab, n_bits),
        "tables": tab,
    }


# --------------------------------------------------------------------------- bits


def _as_bits(bits) -> np.ndarray:
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be 2-D (N, B), got shape {bits.shape}")
    return bits


def bit_balance(bits) -> np.ndarray:
    """Mean of each bit over the images, shape (B,): 0.5 is a balanced bit, 0 or 1 a dead
    one.  All nan for zero images."""
    bits = _as_bits(bits)
    if bits.shape[0] == 0:
        return np.full(bits.shape[1], np.nan)
    return bits.astype(np.float64).mean(axis=0)


def constant_bits(bits) -> int:
    """Number of bits that never fire or always fire over the images (0 for zero images)."""
    bits = _as_bits(bits)
    if bits.shape[0] == 0:
        return 0
    b = bits.astype(bool)
    return int(np.sum(b.all(axis=0) | ~b.any(axis=0)))


def saturation(activations) -> float:
    """Share of sigmoid activations below 0.1 or above 0.9 (nan for an empty array)."""
    a = np.asarray(activations, dtype=np.float64)
    if a.size == 0:
        return math.nan
    return float(np.mean((a < 0.1) | (a > 0.9)))


def bit_correlation(bits) -> float:
    """Mean absolute Pearson correlation between pairs of distinct bits.

    Constant bits have no defined correlation and are left out (they are counted by
    :func:`constant_bits`); the mean is over the pairs of non-constant bits, nan when fewer
    than two bits vary.
    """
    bits = _as_bits(bits)
    x = bits.astype(np.float64)
    if x.shape[0] == 0:
        return math.nan
    std = x.std(axis=0)
    x = x[:, std > 0]
    k = x.shape[1]
    if k < 2:
        return math.nan
    x = x - x.mean(axis=0)
    x /= x.std(axis=0)
    corr = (x.T @ x) / x.shape[0]
    off = np.abs(corr[~np.eye(k, dtype=bool)])
    return float(np.clip(off, 0.0, 1.0).mean())


# --------------------------------------------------------------------------- near duplicates
def within_radius_rate(codes, other_codes, radius: int) -> float:
    """Share of pairs (codes[i], other_codes[i]) within Hamming distance ``radius`` of each
    other: how often a changed copy of image i still finds image i at that radius (nan for
    zero pairs)."""
    from semhash.hashing import hamming

    a, b = _as_codes(codes), _as_codes(other_codes)
    if a.shape != b.shape:
        raise ValueError(f"{len(a)} codes but {len(b)} copies")
    if radius < 0:
        raise ValueError("radius must be >= 0")
    if len(a) == 0:
        return math.nan
    return float(np.mean(hamming(a, b) <= radius))
