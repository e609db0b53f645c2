"""semhash.evaluate (the result dict) and semhash.report (files, headline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semhash import metrics
from semhash.evaluate import evaluate_codes, evaluate_leave_one_out, jsonable
from semhash.report import format_headline, write_report

N_BITS = 12


def clustered(n: int, n_classes: int, rng, flips: int = 1):
    """Codes scattered around one centre per class (few bits flipped)."""
    centres = rng.integers(0, 2 ** N_BITS, n_classes, dtype=np.uint64)
    labels = rng.integers(0, n_classes, n)
    codes = centres[labels].copy()
    for _ in range(flips):
        flip = rng.integers(0, N_BITS, n).astype(np.uint64)
        codes ^= np.left_shift(np.uint64(1), flip) * (rng.random(n) < 0.5)
    return codes, labels


@pytest.fixture(scope="module")
def result_and_data():
    rng = np.random.default_rng(0)
    db, dl = clustered(400, 5, rng)
    q, ql = clustered(80, 5, rng)
    q[:3] = 0xFFF  # some queries probably far from everything
    names = ["zero", "one", "two", "three", "four"]
    res = evaluate_codes(db, dl, q, ql, N_BITS, class_names=names)
    images = rng.random((400, 8, 8, 1)).astype(np.float32)
    return res, db, dl, q, ql, images


def test_evaluate_codes_keys_and_values(result_and_data):
    res, db, dl, q, ql, _ = result_and_data
    for key in ("protocol", "n_bits", "n_database", "n_queries", "radii", "map",
                "n_map_queries", "map_ties", "precision_r2", "precision_r2_hits",
                "hit_rate_r2", "purity_r2", "buckets", "neighbourhoods", "bit_balance",
                "bit_balance_summary", "constant_bits", "bit_correlation", "pr_by_radius",
                "per_class", "class_names"):
        assert key in res, key
    assert res["protocol"] == "query-database"
    assert (res["n_bits"], res["n_database"], res["n_queries"]) == (N_BITS, 400, 80)
    assert sorted(res["neighbourhoods"]) == ["0", "1", "2"] and res["radii"] == [0, 1, 2]
    assert res["map"] == pytest.approx(metrics.mean_average_precision(q, ql, db, dl, N_BITS))
    r2 = metrics.neighbourhood_stats(q, ql, db, dl, 2)
    assert res["precision_r2"] == pytest.approx(r2["precision_all"])
    assert res["precision_r2_hits"] == pytest.approx(r2["precision"])
    assert res["hit_rate_r2"] == pytest.approx(r2["hit_rate"])
    b = metrics.bucket_stats(db, dl)
    assert res["buckets"]["purity"] == pytest.approx(b["purity"])
    assert res["buckets"]["coverage"] == pytest.approx(b["coverage"])
    assert res["buckets"]["largest"][0]["majority_name"] in ["zero", "one", "two", "three",
                                                              "four"]
    assert len(res["bit_balance"]) == N_BITS
    assert len(res["pr_by_radius"]["precision"]) == N_BITS + 1
    assert [pc["name"] for pc in res["per_class"]] == ["zero", "one", "two", "three", "four"]
    assert sum(pc["n_queries"] for pc in res["per_class"]) == 80
    # JSON-serialisable, strictly (no nan) and only plain types
    text = json.dumps(res, allow_nan=False)
    assert json.loads(text) == res
    assert isinstance(res["map"], float) and isinstance(res["constant_bits"], int)


def test_evaluate_nan_becomes_none():
    db = np.array([0, 1], dtype=np.uint64)
    q = np.array([0xF0], dtype=np.uint64)  # no neighbour within radius 2
    res = evaluate_codes(db, [0, 1], q, [7], 8, radii=(0, 1))
    assert res["neighbourhoods"]["2"]["purity"] is None
    assert res["precision_r2_hits"] is None and res["precision_r2"] == 0.0
    assert res["map"] is None and res["n_map_queries"] == 0
    json.dumps(res, allow_nan=False)


def test_evaluate_leave_one_out():
    rng = np.random.default_rng(1)
    codes, labels = clustered(200, 4, rng)
    res = evaluate_leave_one_out(codes, labels, N_BITS, radii=(0, 3))
    assert res["protocol"] == "leave-one-out"
    assert res["n_queries"] == res["n_database"] == 200
    assert sorted(res["neighbourhoods"], key=int) == ["0", "2", "3"]
    want = metrics.neighbourhood_stats(codes, labels, codes, labels, 0, exclude_self=True)
    assert res["neighbourhoods"]["0"]["hit_rate"] == pytest.approx(want["hit_rate"])
    # leave-one-out at radius 0: a hit exactly when the image's bucket is shared
    assert want["hit_rate"] == pytest.approx(res["buckets"]["coverage"])
    assert res["map"] == pytest.approx(
        metrics.mean_average_precision(codes, labels, codes, labels, N_BITS, True))


def test_jsonable():
    out = jsonable({1: np.float32(0.5), "a": (np.int64(3), float("nan")),
                    "b": np.array([1.0, np.inf])})
    assert out == {"1": 0.5, "a": [3, None], "b": [1.0, None]}


def test_write_report(tmp_path, result_and_data):
    res, db, dl, q, ql, images = result_and_data
    out = tmp_path / "rep"
    paths = write_report(res, out, title="Test report", db_images=images, db_codes=db,
                         n_montage_buckets=4)
    names = [p.name for p in paths]
    for name in ("report.json", "report.md", "purity_coverage.png", "bucket_sizes.png",
                 "bit_balance.png", "pr_by_radius.png", "largest_buckets.png"):
        assert name in names, name
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text()) == res
    md = (out / "report.md").read_text()
    assert md.startswith("# Test report")
    assert "coverage" in md.lower() and "mAP" in md and "P@r2" in md
    assert "isolates every image" in md and "McSherry" in md
    for name in names:
        if name.endswith(".png"):
            assert f"]({name})" in md


def test_write_report_with_only_singletons(tmp_path):
    codes = np.arange(30, dtype=np.uint64)
    labels = np.arange(30) % 3
    res = evaluate_leave_one_out(codes, labels, 8)
    assert res["buckets"]["purity"] == 1.0 and res["buckets"]["coverage"] == 0.0
    # images given but no shared bucket: no montage, no error
    paths = write_report(res, tmp_path / "b", title="singletons",
                         db_images=np.zeros((30, 4, 4, 3)), db_codes=codes)
    assert "largest_buckets.png" not in [p.name for p in paths]
    assert all(p.exists() for p in paths) and len(paths) == 6
    # images and codes that do not match: refused before anything is written
    with pytest.raises(ValueError):
        write_report(res, tmp_path / "c", title="x", db_images=np.zeros((5, 4, 4, 1)),
                     db_codes=codes)
    assert not (tmp_path / "c").exists()


def test_format_headline(result_and_data):
    res = result_and_data[0]
    text = format_headline(res)
    assert "mAP" in text and "P@r2" in text and "coverage" in text and "r2 purity" in text
    assert f"{res['map']:.3f}" in text
    assert len(text.splitlines()) <= 4
    # tolerant of missing values
    assert "n/a" in format_headline({"map": None})
