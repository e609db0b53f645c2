"""From codes and labels to one JSON-serialisable evaluation dict (pure NumPy).

Two protocols:

* :func:`evaluate_codes` -- a labelled query set searched against a labelled database
  (e.g. MNIST test images against the training index);
* :func:`evaluate_leave_one_out` -- one labelled set, each image querying all the others.

Both return the same dict (see :func:`evaluate_codes`), ready for ``json.dump`` and for
:func:`semhash.report.write_report`.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from semhash import metrics
from semhash.hashing import check_bits, codes_to_bits

HEADLINE_RADIUS = 2
TIE_HANDLING = ("expected AP over uniformly random orderings of the images at equal "
                "Hamming distance (McSherry & Najork, 2008)")

__all__ = ["evaluate_codes", "evaluate_leave_one_out", "jsonable", "HEADLINE_RADIUS"]


def jsonable(obj):
    """Recursively turn ``obj`` into plain JSON types: NumPy scalars/arrays -> Python
    numbers/lists, nan/inf -> None, tuples -> lists, dict keys -> str."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def _name_of(label, class_names):
    if class_names is None:
        return str(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, label))
    try:
        return str(class_names[int(label)])
    except (IndexError, ValueError, TypeError):
        return str(label)


def _bit_summary(balance: np.ndarray) -> dict:
    if balance.size == 0 or np.isnan(balance).all():
        return {"min": None, "max": None, "mean": None, "mean_abs_deviation": None,
                "n_within_0.1": 0}
    dev = np.abs(balance - 0.5)
    return {
        "min": float(balance.min()),
        "max": float(balance.max()),
        "mean": float(balance.mean()),
        "mean_abs_deviation": float(dev.mean()),  # mean |p - 0.5|
        "n_within_0.1": int(np.sum(dev <= 0.1)),  # bits firing 40%..60% of the time
    }


def _evaluate(db_codes, db_labels, query_codes, query_labels, n_bits: int,
              radii: Iterable[int], class_names, exclude_self: bool,
              chunk_size: int) -> dict:
    n_bits = check_bits(n_bits)
    db_codes = metrics._as_codes(db_codes)
    query_codes = metrics._as_codes(query_codes)
    db_labels = metrics._as_labels(db_labels, len(db_codes), "db_labels")
    query_labels = metrics._as_labels(query_labels, len(query_codes), "query_labels")
    radii = sorted({int(r) for r in radii} | {HEADLINE_RADIUS})
    if radii[0] < 0:
        raise ValueError("radii must be >= 0")

    ret = metrics.retrieval_metrics(query_codes, query_labels, db_codes, db_labels, n_bits,
                                    radii, exclude_self, chunk_size=chunk_size)
    head = ret["neighbourhoods"][HEADLINE_RADIUS]
    bits = codes_to_bits(db_codes, n_bits)
    balance = metrics.bit_balance(bits)

    # per-class breakdown (queries grouped by their label)
    tab = ret["tables"]
    col = min(HEADLINE_RADIUS, tab["n"].shape[1] - 1)
    size2 = tab["n"][:, : col + 1].sum(axis=1)
    rel2 = tab["r"][:, : col + 1].sum(axis=1)
    hit2 = size2 > 0
    prec_all2 = np.where(hit2, rel2 / np.maximum(size2, 1), 0.0)
    per_class = []
    for label in np.unique(np.concatenate([query_labels, db_labels])):
        sel = query_labels == label
        ap = ret["ap"][sel]
        ap = ap[~np.isnan(ap)]
        per_class.append({
            "label": metrics._py(label),
            "name": _name_of(metrics._py(label), class_names),
            "n_queries": int(sel.sum()),
            "n_database": int(np.sum(db_labels == label)),
            "map": float(ap.mean()) if ap.size else None,
            "precision_r2": float(prec_all2[sel].mean()) if sel.any() else None,
            "hit_rate_r2": float(hit2[sel].mean()) if sel.any() else None,
        })

    buckets = metrics.bucket_stats(db_codes, db_labels)
    for b in buckets["largest"]:
        b["majority_name"] = _name_of(b["majority_label"], class_names)

    result = {
        "protocol": "leave-one-out" if exclude_self else "query-database",
        "n_bits": n_bits,
        "n_database": int(len(db_codes)),
        "n_queries": int(len(query_codes)),
        "radii": radii,
        "map": ret["map"],
        "n_map_queries": ret["n_map_queries"],
        "map_ties": TIE_HANDLING,
        "precision_r2": head["precision_all"],
        "precision_r2_hits": head["precision"],
        "hit_rate_r2": head["hit_rate"],
        "purity_r2": head["purity"],
        "buckets": buckets,
        "neighbourhoods": {str(r): v for r, v in ret["neighbourhoods"].items()},
        "bit_balance": balance.tolist(),
        "bit_balance_summary": _bit_summary(balance),
        "constant_bits": metrics.constant_bits(bits),
        "bit_correlation": metrics.bit_correlation(bits),
        "pr_by_radius": ret["pr_by_radius"],
        "per_class": per_class,
        "class_names": (None if class_names is None else
                        {str(k): str(v) for k, v in class_names.items()}
                        if isinstance(class_names, Mapping) else [str(c) for c in class_names]),
    }
    return jsonable(result)


def evaluate_codes(db_codes, db_labels, query_codes, query_labels, n_bits: int,
                   radii: Sequence[int] = (0, 1, 2), class_names=None, *,
                   chunk_size: int = metrics.DEFAULT_CHUNK) -> dict:
    """Evaluate query codes against database codes; returns a JSON-serialisable dict.

    ``class_names`` (optional) is a sequence indexed by integer label, or a mapping
    label -> name; it only decorates the per-class table and the largest buckets.

    Keys of the result (floats are plain Python floats, nan is ``None``):

    * ``protocol`` ("query-database" or "leave-one-out"), ``n_bits``, ``n_database``,
      ``n_queries``, ``radii`` (the requested radii plus 2, sorted);
    * ``map``: tie-aware mAP over the full Hamming ranking (:func:`metrics.mean_average_precision`),
      ``n_map_queries`` (queries with >= 1 relevant database image), ``map_ties`` (a
      sentence on how ties are handled);
    * ``precision_r2``: precision within Hamming radius 2 with queries that retrieve
      nothing counted as 0 (the literature's convention); ``precision_r2_hits``: the same
      over queries with >= 1 neighbour only; ``hit_rate_r2``: share of queries with >= 1
      neighbour; ``purity_r2``: mean Gini purity of the radius-2 neighbourhoods;
    * ``buckets``: :func:`metrics.bucket_stats` of the database codes (purity, coverage,
      purity_shared, n_buckets, size_histogram, size_counts, largest, ...), each entry of
      ``largest`` also carrying ``majority_name``;
    * ``neighbourhoods``: ``{"0": metrics.neighbourhood_stats, "1": ..., "2": ...}`` (string
      keys);
    * ``bit_balance`` (per-bit firing rate over the database), ``bit_balance_summary``
      (min, max, mean, mean_abs_deviation from 0.5, n_within_0.1), ``constant_bits``,
      ``bit_correlation``;
    * ``pr_by_radius``: :func:`metrics.pr_curve_by_radius` (micro-averaged precision and
      recall for r = 0..n_bits, plus per-query means, hit rate and mean size);
    * ``per_class``: one entry per label: label, name, n_queries, n_database, map,
      precision_r2, hit_rate_r2;
    * ``class_names``: as given (list or str-keyed dict) or None.
    """
    return _evaluate(db_codes, db_labels, query_codes, query_labels, n_bits, radii,
                     class_names, False, chunk_size)


def evaluate_leave_one_out(codes, labels, n_bits: int, radii: Sequence[int] = (0, 1, 2),
                           class_names=None, *, chunk_size: int = metrics.DEFAULT_CHUNK
                           ) -> dict:
    """Evaluate one labelled set: each image queries all the others (the image itself is
    excluded from its neighbourhoods and its relevant set).  Same keys as
    :func:`evaluate_codes`, with ``protocol == "leave-one-out"`` and
    ``n_queries == n_database``."""
    return _evaluate(codes, labels, codes, labels, n_bits, radii, class_names, True,
                     chunk_size)
