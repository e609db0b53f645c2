"""Hand-made examples with known answers for semhash.metrics, plus brute-force checks."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from semhash import metrics
from semhash.hashing import hamming_matrix

TOP = 1 << 63


# --------------------------------------------------------------------------- brute force


def brute_ap_ordering(relevant_in_order) -> float:
    rel = np.asarray(relevant_in_order, dtype=bool)
    if not rel.any():
        return math.nan
    hits = np.cumsum(rel)
    ranks = np.arange(1, len(rel) + 1)
    return float(np.sum((hits / ranks)[rel]) / rel.sum())


def brute_expected_ap(dist, relevant) -> float:
    """Exact expectation over every ordering consistent with the distances (ties permuted
    uniformly): enumerate all permutations, keep the sorted ones."""
    dist = np.asarray(dist)
    relevant = np.asarray(relevant, dtype=bool)
    aps = []
    for perm in itertools.permutations(range(len(dist))):
        d = dist[list(perm)]
        if np.all(np.diff(d) >= 0):
            aps.append(brute_ap_ordering(relevant[list(perm)]))
    return float(np.mean(aps))


def brute_neighbourhoods(qc, ql, dc, dl, radius, exclude_self=False):
    dist = hamming_matrix(qc, dc).astype(int)
    purity, precision, prec_all, sizes = [], [], [], []
    for i in range(len(qc)):
        mask = dist[i] <= radius
        if exclude_self:
            mask[i] = False
        lab = dl[mask]
        sizes.append(mask.sum())
        if mask.sum():
            purity.append(metrics.gini_purity(lab))
            precision.append(np.mean(lab == ql[i]))
            prec_all.append(np.mean(lab == ql[i]))
        else:
            prec_all.append(0.0)
    nan_mean = lambda x: float(np.mean(x)) if len(x) else math.nan  # noqa: E731
    return {
        "purity": nan_mean(purity),
        "precision": nan_mean(precision),
        "precision_all": nan_mean(prec_all),
        "hit_rate": float(np.mean(np.asarray(sizes) > 0)),
        "mean_size": float(np.mean(sizes)),
    }


def assert_close_dict(got: dict, want: dict, keys=None):
    for k in keys or want:
        a, b = got[k], want[k]
        if isinstance(b, float) and math.isnan(b):
            assert math.isnan(a), (k, a)
        else:
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12), (k, a, b)


# --------------------------------------------------------------------------- gini


def test_gini_known_values():
    assert metrics.gini_purity([3, 3, 3]) == 1.0
    assert metrics.gini_purity([7]) == 1.0
    assert metrics.gini_purity([0, 1]) == pytest.approx(0.5)
    assert metrics.gini_purity([0, 0, 1, 1, 2, 2]) == pytest.approx(1 / 3)
    assert metrics.gini_purity([0, 0, 0, 1]) == pytest.approx(0.75 ** 2 + 0.25 ** 2)
    assert metrics.gini_purity(["cat", "cat", "dog"]) == pytest.approx(5 / 9)
    assert math.isnan(metrics.gini_purity([]))


# --------------------------------------------------------------------------- buckets


def test_bucket_stats_hand_example():
    codes = np.array([5, 5, 5, 7, 7, 9], dtype=np.uint64)
    labels = np.array([0, 0, 1, 2, 2, 3])
    s = metrics.bucket_stats(codes, labels)
    assert s["n_images"] == 6
    assert s["n_buckets"] == 3
    assert s["purity"] == pytest.approx((3 * 5 / 9 + 2 * 1 + 1 * 1) / 6)  # 7/9
    assert s["coverage"] == pytest.approx(5 / 6)
    assert s["purity_shared"] == pytest.approx((3 * 5 / 9 + 2) / 5)  # 11/15
    assert s["largest_bucket"] == 3
    assert s["n_singletons"] == 1 and s["n_shared_buckets"] == 2
    assert s["size_counts"] == {1: 1, 2: 1, 3: 1}
    assert [(h["label"], h["buckets"], h["images"]) for h in s["size_histogram"]] == [
        ("1", 1, 1), ("2", 1, 2), ("3-4", 1, 3)]
    assert [b["code"] for b in s["largest"]] == [5, 7, 9]
    top = s["largest"][0]
    assert top["size"] == 3 and top["purity"] == pytest.approx(5 / 9)
    assert top["majority_label"] == 0 and top["majority_share"] == pytest.approx(2 / 3)
    assert isinstance(top["code"], int) and isinstance(top["majority_label"], int)


def test_bucket_stats_every_image_isolated_is_pure_but_uncovered():
    codes = np.arange(100, dtype=np.uint64)
    labels = np.arange(100) % 10
    s = metrics.bucket_stats(codes, labels)
    assert s["purity"] == 1.0
    assert s["coverage"] == 0.0
    assert math.isnan(s["purity_shared"])
    assert s["n_buckets"] == 100 and s["largest_bucket"] == 1
    assert s["size_histogram"] == [{"label": "1", "low": 1, "high": 1, "buckets": 100,
                                    "images": 100}]


def test_bucket_stats_single_bucket():
    labels = np.array([0, 0, 1, 1, 1, 2])
    s = metrics.bucket_stats(np.full(6, 42, dtype=np.uint64), labels)
    assert s["coverage"] == 1.0
    assert s["purity"] == pytest.approx(metrics.gini_purity(labels))
    assert s["purity_shared"] == pytest.approx(metrics.gini_purity(labels))
    assert s["largest"][0]["majority_label"] == 1
    assert [h["label"] for h in s["size_histogram"]] == ["1", "2", "3-4", "5-8"]
    assert [h["buckets"] for h in s["size_histogram"]] == [0, 0, 0, 1]


def test_bucket_stats_top_bit_codes_and_signed_input():
    big = TOP + 1
    codes = np.array([big, big, 1, (1 << 64) - 1], dtype=np.uint64)
    s = metrics.bucket_stats(codes, [1, 1, 2, 3])
    assert s["largest"][0]["code"] == big
    assert s["coverage"] == pytest.approx(0.5)
    # the same codes as signed int64 (SQLite) give the same buckets
    signed = codes.view(np.int64)
    assert signed[-1] == -1
    s2 = metrics.bucket_stats(signed, [1, 1, 2, 3])
    assert s2["largest"] == s["largest"]
    # Python ints above 2**63 mixed with negatives
    s3 = metrics.bucket_stats(np.array([big, big, 1, -1], dtype=object), [1, 1, 2, 3])
    assert s3["largest"] == s["largest"]


def test_bucket_stats_empty():
    s = metrics.bucket_stats(np.zeros(0, dtype=np.uint64), [])
    assert s["n_images"] == 0 and s["n_buckets"] == 0 and s["largest"] == []
    assert math.isnan(s["purity"]) and math.isnan(s["coverage"])


def test_size_histogram_bins():
    h = metrics.size_histogram([1, 1, 2, 3, 4, 5, 9, 16, 17])
    assert [x["label"] for x in h] == ["1", "2", "3-4", "5-8", "9-16", "17-32"]
    assert [x["buckets"] for x in h] == [2, 1, 2, 1, 2, 1]
    assert [x["images"] for x in h] == [2, 2, 7, 5, 25, 17]


# --------------------------------------------------------------------------- neighbourhoods

DB4 = np.array([0b0000, 0b0001, 0b0011, 0b1111], dtype=np.uint64)
DB4_LABELS = np.array([0, 0, 1, 1])
Q4 = np.array([0b0000, 0b1000], dtype=np.uint64)
Q4_LABELS = np.array([0, 1])


def test_neighbourhood_hand_example():
    r0 = metrics.neighbourhood_stats(Q4, Q4_LABELS, DB4, DB4_LABELS, 0)
    assert_close_dict(r0, {"hit_rate": 0.5, "purity": 1.0, "precision": 1.0,
                           "precision_all": 0.5, "mean_size": 0.5})
    assert r0["n_hits"] == 1 and r0["radius"] == 0 and r0["n_queries"] == 2
    r1 = metrics.neighbourhood_stats(Q4, Q4_LABELS, DB4, DB4_LABELS, 1)
    assert_close_dict(r1, {"hit_rate": 1.0, "purity": 1.0, "precision": 0.5,
                           "precision_all": 0.5, "mean_size": 1.5})
    r2 = metrics.neighbourhood_stats(Q4, Q4_LABELS, DB4, DB4_LABELS, 2)
    assert_close_dict(r2, {"hit_rate": 1.0, "purity": (5 / 9 + 1) / 2,
                           "precision": (2 / 3 + 0) / 2, "precision_all": 1 / 3,
                           "mean_size": 2.5})
    # a radius beyond the code length retrieves everything
    r9 = metrics.neighbourhood_stats(Q4, Q4_LABELS, DB4, DB4_LABELS, 9)
    assert r9["mean_size"] == 4.0 and r9["precision"] == pytest.approx(0.5)


def test_neighbourhood_empty():
    r = metrics.neighbourhood_stats(np.array([TOP], dtype=np.uint64), [0],
                                    np.array([0, 1], dtype=np.uint64), [0, 0], 0)
    assert r["hit_rate"] == 0.0 and r["n_hits"] == 0 and r["mean_size"] == 0.0
    assert r["precision_all"] == 0.0
    assert math.isnan(r["purity"]) and math.isnan(r["precision"])
    # no queries at all
    r = metrics.neighbourhood_stats(np.zeros(0, dtype=np.uint64), [], DB4, DB4_LABELS, 1)
    assert r["n_queries"] == 0 and math.isnan(r["hit_rate"])


def test_neighbourhood_exclude_self_hand_example():
    codes = np.array([0, 0, 1], dtype=np.uint64)
    labels = np.array([0, 1, 0])
    r0 = metrics.neighbourhood_stats(codes, labels, codes, labels, 0, exclude_self=True)
    assert_close_dict(r0, {"hit_rate": 2 / 3, "purity": 1.0, "precision": 0.0,
                           "precision_all": 0.0, "mean_size": 2 / 3})
    r1 = metrics.neighbourhood_stats(codes, labels, codes, labels, 1, exclude_self=True)
    assert_close_dict(r1, {"hit_rate": 1.0, "purity": (0.5 + 1 + 0.5) / 3,
                           "precision": (0.5 + 0 + 0.5) / 3, "mean_size": 2.0})
    # without exclusion each image finds itself
    r0_self = metrics.neighbourhood_stats(codes, labels, codes, labels, 0)
    assert r0_self["hit_rate"] == 1.0 and r0_self["mean_size"] == pytest.approx(5 / 3)


def test_exclude_self_needs_same_set():
    with pytest.raises(ValueError):
        metrics.neighbourhood_stats(Q4, Q4_LABELS, DB4, DB4_LABELS, 1, exclude_self=True)


def test_neighbourhood_top_bit_codes():
    q = np.array([TOP], dtype=np.uint64)
    db = np.array([TOP, 0, TOP | 1, (1 << 64) - 1], dtype=np.uint64)
    r0 = metrics.neighbourhood_stats(q, [1], db, [1, 0, 1, 0], 0)
    assert r0["mean_size"] == 1.0 and r0["precision"] == 1.0
    r1 = metrics.neighbourhood_stats(q, [1], db, [1, 0, 1, 0], 1)
    assert r1["mean_size"] == 3.0 and r1["precision"] == pytest.approx(2 / 3)
    r63 = metrics.neighbourhood_stats(q, [1], db, [1, 0, 1, 0], 63)
    assert r63["mean_size"] == 4.0


@pytest.mark.parametrize("exclude_self", [False, True])
def test_neighbourhood_matches_brute_force(exclude_self):
    rng = np.random.default_rng(1)
    db = rng.integers(0, 2 ** 8, 300, dtype=np.uint64)
    dl = rng.integers(0, 4, 300)
    q, ql = (db, dl) if exclude_self else (rng.integers(0, 2 ** 8, 120, dtype=np.uint64),
                                           rng.integers(0, 5, 120))
    for radius in (0, 1, 2, 3):
        got = metrics.neighbourhood_stats(q, ql, db, dl, radius, exclude_self)
        want = brute_neighbourhoods(q, ql, db, dl, radius, exclude_self)
        assert_close_dict(got, want)


def test_results_do_not_depend_on_chunk_size():
    rng = np.random.default_rng(2)
    db = rng.integers(0, 2 ** 12, 500, dtype=np.uint64)
    dl = rng.integers(0, 6, 500)
    q = rng.integers(0, 2 ** 12, 97, dtype=np.uint64)
    ql = rng.integers(0, 6, 97)
    ref = metrics.retrieval_metrics(q, ql, db, dl, 12, (0, 1, 2), chunk_size=1000)
    ref_loo = metrics.retrieval_metrics(db, dl, db, dl, 12, (0, 2), True, chunk_size=1000)
    for chunk in (1, 7, 64):
        got = metrics.retrieval_metrics(q, ql, db, dl, 12, (0, 1, 2), chunk_size=chunk)
        assert got["map"] == pytest.approx(ref["map"], rel=1e-14)
        assert got["neighbourhoods"] == ref["neighbourhoods"]
        assert got["pr_by_radius"] == ref["pr_by_radius"]
        np.testing.assert_array_equal(got["ap"], ref["ap"])
        loo = metrics.retrieval_metrics(db, dl, db, dl, 12, (0, 2), True, chunk_size=chunk)
        assert loo["neighbourhoods"] == ref_loo["neighbourhoods"]
        assert loo["map"] == pytest.approx(ref_loo["map"], rel=1e-14)


def test_many_classes_shrink_chunks():
    # 3,000 classes force the (query, distance, class) table chunk down to ~30 queries;
    # each query's only relevant item is its source, one bit away
    rng = np.random.default_rng(3)
    db = rng.integers(0, 2 ** 40, 3000, dtype=np.uint64)
    dl = np.arange(3000)
    q, ql = db[:100] ^ np.uint64(1), dl[:100]
    r = metrics.neighbourhood_stats(q, ql, db, dl, 1)
    assert r["hit_rate"] == 1.0 and r["precision"] == 1.0 and r["mean_size"] == 1.0
    assert metrics.mean_average_precision(q, ql, db, dl, 40) == 1.0


# --------------------------------------------------------------------------- mAP


def test_map_hand_example_with_ties():
    # two items at distance 0 (one relevant), one relevant item at distance 1:
    # orderings [R, N, R] -> AP 5/6 and [N, R, R] -> AP 7/12, expected 17/24
    db = np.array([0, 0, 1], dtype=np.uint64)
    ap = metrics.mean_average_precision(np.array([0], dtype=np.uint64), [1], db, [1, 0, 1], 4)
    assert ap == pytest.approx(17 / 24)


def test_map_exact_enumeration_of_tie_orderings():
    rng = np.random.default_rng(4)
    for _ in range(40):
        n = int(rng.integers(1, 8))
        db = rng.integers(0, 8, n, dtype=np.uint64)  # 3-bit codes: lots of ties
        dl = rng.integers(0, 2, n)
        q = np.uint64(rng.integers(0, 8))
        dist = hamming_matrix(np.array([q]), db)[0]
        want = brute_expected_ap(dist, dl == 1)
        got = metrics.mean_average_precision(np.array([q]), [1], db, dl, 3)
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want, rel=1e-12)


def test_map_monte_carlo_larger_ties():
    rng = np.random.default_rng(5)
    db = rng.integers(0, 16, 60, dtype=np.uint64)
    dl = rng.integers(0, 3, 60)
    q = np.array([5], dtype=np.uint64)
    dist = hamming_matrix(q, db)[0]
    rel = dl == 2
    aps = []
    for _ in range(20000):
        order = np.lexsort((rng.random(60), dist))
        aps.append(brute_ap_ordering(rel[order]))
    mc = float(np.mean(aps))
    got = metrics.mean_average_precision(q, [2], db, dl, 4)
    assert got == pytest.approx(mc, abs=4 * np.std(aps) / np.sqrt(len(aps)) + 1e-9)


def test_map_without_ties_matches_sklearn():
    rng = np.random.default_rng(6)
    n_bits = 24
    queries, qlabels, want = [], [], []
    for _ in range(5):
        # every database item at a distinct distance from query 0
        n = int(rng.integers(5, n_bits + 1))
        dists = rng.permutation(n_bits + 1)[:n]
        db = np.array([(1 << int(d)) - 1 for d in dists], dtype=np.uint64)
        dl = rng.integers(0, 2, n)
        dl[0] = 1
        got = metrics.mean_average_precision(np.array([0], dtype=np.uint64), [1], db, dl,
                                             n_bits)
        ref = average_precision_score(dl == 1, -dists.astype(float))
        assert got == pytest.approx(ref, rel=1e-12)
        queries.append(got)
        want.append(ref)
    assert np.mean(queries) == pytest.approx(np.mean(want))


def test_map_excludes_queries_without_relevant_items():
    db = np.array([0, 1], dtype=np.uint64)
    # query label 9 has no relevant database item: left out
    assert metrics.mean_average_precision(np.array([0, 0], dtype=np.uint64), [0, 9], db,
                                          [0, 1], 2) == pytest.approx(1.0)
    ap = metrics.average_precisions(np.array([0, 0], dtype=np.uint64), [0, 9], db, [0, 1], 2)
    assert ap[0] == pytest.approx(1.0) and math.isnan(ap[1])
    assert math.isnan(metrics.mean_average_precision(np.array([0], dtype=np.uint64), [9],
                                                     db, [0, 1], 2))


def test_map_leave_one_out_matches_manual_removal():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 2 ** 6, 40, dtype=np.uint64)
    labels = rng.integers(0, 3, 40)
    ap = metrics.average_precisions(codes, labels, codes, labels, 6, exclude_self=True)
    for i in range(40):
        keep = np.arange(40) != i
        want = metrics.average_precisions(codes[i:i + 1], labels[i:i + 1], codes[keep],
                                          labels[keep], 6)[0]
        if math.isnan(want):
            assert math.isnan(ap[i])
        else:
            assert ap[i] == pytest.approx(want, rel=1e-12)


def test_map_perfect_and_top_bit_codes():
    top2 = TOP | (TOP >> 1)
    db = np.array([top2, top2 | 1, 0, 1], dtype=np.uint64)  # distances 0,1,2,3 / 2,3,0,1
    q = np.array([top2, 0], dtype=np.uint64)
    assert metrics.mean_average_precision(q, [1, 0], db, [1, 1, 0, 0], 64) == 1.0


def test_codes_wider_than_n_bits_are_rejected():
    with pytest.raises(ValueError):
        metrics.mean_average_precision(np.array([1 << 10], dtype=np.uint64), [0],
                                       np.array([0], dtype=np.uint64), [0], 8)
    with pytest.raises(ValueError):
        metrics.mean_average_precision(np.array([0], dtype=np.uint64), [0],
                                       np.array([0], dtype=np.uint64), [0], 65)


# --------------------------------------------------------------------------- PR by radius


def test_pr_curve_hand_example():
    pr = metrics.pr_curve_by_radius(Q4, Q4_LABELS, DB4, DB4_LABELS, 4)
    assert pr["radius"] == [0, 1, 2, 3, 4]
    # distances: query 0000 -> (0, 1, 2, 4), query 1000 -> (1, 2, 3, 3)
    np.testing.assert_allclose(pr["precision"], [1.0, 2 / 3, 2 / 5, 4 / 7, 0.5])
    np.testing.assert_allclose(pr["recall"], [0.25, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(pr["precision_mean"], [1.0, 0.5, 1 / 3, 7 / 12, 0.5])
    np.testing.assert_allclose(pr["recall_mean"], [0.25, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(pr["hit_rate"], [0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(pr["mean_size"], [0.5, 1.5, 2.5, 3.5, 4])


def test_retrieval_metrics_agrees_with_single_functions():
    rng = np.random.default_rng(8)
    db = rng.integers(0, 2 ** 10, 200, dtype=np.uint64)
    dl = rng.integers(0, 3, 200)
    q = rng.integers(0, 2 ** 10, 30, dtype=np.uint64)
    ql = rng.integers(0, 3, 30)
    allm = metrics.retrieval_metrics(q, ql, db, dl, 10, (0, 2))
    assert allm["map"] == pytest.approx(metrics.mean_average_precision(q, ql, db, dl, 10))
    assert allm["neighbourhoods"][2] == metrics.neighbourhood_stats(q, ql, db, dl, 2)
    assert allm["pr_by_radius"] == metrics.pr_curve_by_radius(q, ql, db, dl, 10)
    # the last PR point retrieves the whole database: recall 1
    assert allm["pr_by_radius"]["recall"][-1] == pytest.approx(1.0)


# --------------------------------------------------------------------------- bits


def test_bit_balance_and_constant_bits():
    bits = np.array([[0, 1, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]])
    np.testing.assert_allclose(metrics.bit_balance(bits), [0.5, 1.0, 0.0])
    assert metrics.constant_bits(bits) == 2
    assert metrics.constant_bits(np.array([[0, 1], [1, 0]])) == 0
    assert np.isnan(metrics.bit_balance(np.zeros((0, 3)))).all()


def test_saturation():
    assert metrics.saturation([0.05, 0.5, 0.95, 0.1]) == pytest.approx(0.5)
    assert metrics.saturation(np.array([[0.0, 1.0], [0.99, 0.01]])) == 1.0
    assert math.isnan(metrics.saturation([]))


def test_bit_correlation():
    indep = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert metrics.bit_correlation(indep) == pytest.approx(0.0, abs=1e-12)
    same = np.array([[0, 0], [1, 1], [0, 0], [1, 1]])
    assert metrics.bit_correlation(same) == pytest.approx(1.0)
    anti = np.array([[0, 1], [1, 0], [0, 1]])
    assert metrics.bit_correlation(anti) == pytest.approx(1.0)
    # a constant bit is left out, without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with_const = np.column_stack([same, np.ones(4, dtype=int)])
        assert metrics.bit_correlation(with_const) == pytest.approx(1.0)
        assert math.isnan(metrics.bit_correlation(np.ones((5, 3))))
        # 3 bits: b0 == b1, b2 independent of both -> pairs (1, 0, 0) -> mean 1/3
        three = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 0], [1, 1, 1]])
        assert metrics.bit_correlation(three) == pytest.approx(1 / 3)
