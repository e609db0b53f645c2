"""semhash.index.lookup: every method and backend returns exactly what brute force returns;
limit keeps what it promises; the file is a cache that is trusted only when current."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semhash.index import lookup as lk
from semhash.index.lookup import HammingLookup, TableLayout, brute_force

REPO = Path(__file__).resolve().parent.parent
BITS = (8, 16, 30, 32, 48, 64)
BACKENDS = ("c", "numpy") if lk.has_c_kernel() else ("numpy",)


def random_codes(rng, n, bits):
    return rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64) \
        if bits == 64 else rng.integers(0, 2**bits, n, dtype=np.uint64)  # fmt: skip


def clustered_codes(rng, n, bits, n_centres=5, p=0.08):
    centres = random_codes(rng, n_centres, bits)
    codes = centres[rng.integers(0, n_centres, n)]
    flips = rng.random((n, bits)) < p
    weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))
    return codes ^ (flips.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def random_layout(rng, bits, n_tables):
    layout = []
    for start, width in lk._split_ranges(bits, n_tables):
        k = int(rng.integers(0, min(width, 12) + 1))
        lo = start + int(rng.integers(0, width - k + 1))
        layout.append(TableLayout(lo, k))
    return layout


def check_all_ways(index, ids, codes, queries, radius, bits, limit=None, ties="cut"):
    expected = brute_force(ids, codes, queries, radius, bits, limit=limit, ties=ties)
    for method in ("auto", "probe", "scan"):
        for backend in BACKENDS:
            got = index.search(queries, radius, limit=limit, ties=ties, method=method, backend=backend)
            assert got.equals(expected), (method, backend, radius, limit, ties, index)
    return expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=st.sampled_from(BITS),
    n=st.integers(0, 300),
    radius=st.integers(0, 6),
    n_tables=st.integers(1, 4),
    clustered=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    limit=st.one_of(st.none(), st.integers(1, 20)),
    ties=st.sampled_from(lk.TIES),
)
def test_every_method_equals_brute_force(bits, n, radius, n_tables, clustered, seed, limit, ties):
    rng = np.random.default_rng(seed)
    codes = clustered_codes(rng, n, bits) if clustered else random_codes(rng, n, bits)
    ids = rng.permutation(n).astype(np.int64) * 7 + 3
    queries = np.concatenate([codes[:10], random_codes(rng, 5, bits)])
    layout = random_layout(rng, bits, n_tables)
    index = HammingLookup.build(ids, codes, bits, layout=layout)
    check_all_ways(index, ids, codes, queries, radius, bits, limit, ties)


@pytest.mark.parametrize("bits", BITS)
def test_clustered_codes_with_big_buckets_seeded(bits):
    """A few centres with bit flips, so buckets hold many rows; chosen and forced layouts."""
    rng = np.random.default_rng(bits)
    n = 3000 if bits > 16 else 800  # short codes: every answer is most of the index
    codes = clustered_codes(rng, n, bits, n_centres=4, p=0.04)
    ids = np.arange(1, n + 1, dtype=np.int64)
    queries = np.concatenate([codes[:15], clustered_codes(rng, 10, bits, n_centres=4), random_codes(rng, 5, bits)])
    layouts = [None, [TableLayout(bits - min(bits, 10), min(bits, 10))], random_layout(rng, bits, 2), random_layout(rng, bits, 3)]
    for layout in layouts:
        index = HammingLookup.build(ids, codes, bits, layout=layout)
        for radius in range(7):
            expected = check_all_ways(index, ids, codes, queries, radius, bits)
            check_all_ways(index, ids, codes, queries, radius, bits, limit=5, ties="cut")
            check_all_ways(index, ids, codes, queries, radius, bits, limit=5, ties="keep")
        assert expected.counts().max() > 50  # the big buckets really are big


def test_empty_and_one_row_indexes():
    for bits in BITS:
        empty = HammingLookup.build([], [], bits)
        m = empty.search([0, 1], 3)
        assert len(m) == 2 and m.counts().tolist() == [0, 0]
        for backend in BACKENDS:
            assert empty.search([0], 6, backend=backend, method="probe").counts().tolist() == [0]
        one = HammingLookup.build([42], [1], bits)
        for backend in BACKENDS:
            got = one.search([1, 0, 3, (1 << bits) - 1], 1, backend=backend)
            assert got.counts().tolist() == [1, 1, 1, 0 if bits > 2 else 1]
            assert got.ids.tolist()[:3] == [42, 42, 42] and got.distances.tolist()[:3] == [0, 1, 1]
    assert len(HammingLookup.build([1], [5], 8).search([], 2)) == 0


def test_duplicate_codes_bit_63_and_wide_ids():
    """Many rows per code, codes using the top bit, ids that need int64 (negative, huge)."""
    rng = np.random.default_rng(5)
    base = np.array([2**63, 2**63 + 1, 2**64 - 1, 0, 12345], dtype=np.uint64)
    codes = base[rng.integers(0, len(base), 2000)]
    for ids in (np.arange(2000, dtype=np.int64), rng.permutation(2000).astype(np.int64) - 1000,
                rng.integers(-(2**62), 2**62, 2000, dtype=np.int64)):
        for layout in (None, [TableLayout(56, 8)], [TableLayout(48, 16), TableLayout(0, 16)]):
            index = HammingLookup.build(ids, codes, 64, layout=layout)
            assert index.tables[0].ids.dtype == (np.uint32 if ids.min() >= 0 else np.int64)
            queries = np.concatenate([base, random_codes(rng, 3, 64)])
            for radius in (0, 1, 2, 6):
                check_all_ways(index, ids, codes, queries, radius, 64)
                check_all_ways(index, ids, codes, queries, radius, 64, limit=7, ties="keep")
    # signed int64 codes (as SQLite stores them) mean the same codes
    signed = codes.view(np.int64)
    a = HammingLookup.build(np.arange(2000), signed, 64).search(base, 1)
    b = HammingLookup.build(np.arange(2000), codes, 64).search(base, 1)
    assert a.equals(b)


def test_results_sorted_by_distance_then_id():
    rng = np.random.default_rng(1)
    codes = clustered_codes(rng, 2000, 30, n_centres=3)
    ids = rng.permutation(2000) + 100
    m = HammingLookup.build(ids, codes, 30).search(codes[:20], 4)
    for i in range(len(m)):
        got_ids, got_d = m[i]
        keys = list(zip(got_d.tolist(), got_ids.tolist()))
        assert keys == sorted(keys) and len(set(got_ids.tolist())) == len(got_ids)
    assert m.ids.dtype == np.int64 and m.distances.dtype == np.uint8 and m.offsets.dtype == np.int64


def test_limit_keep_ties_lets_a_caller_break_ties_by_another_key():
    """A caller sorting by (distance, path) gets its exact top-`limit` from ties="keep",
    while ties="cut" (id order) would hand it the wrong rows at the boundary distance."""
    rng = np.random.default_rng(3)
    codes = clustered_codes(rng, 4000, 30, n_centres=3, p=0.03)
    ids = np.arange(4000)
    paths = {int(i): f"img-{int(j):05d}" for i, j in zip(ids, rng.permutation(4000))}  # unrelated to ids
    index = HammingLookup.build(ids, codes, 30)
    queries = codes[:30]
    full = index.search(queries, 3)
    mismatch_with_cut = 0
    for limit in (1, 5, 40):
        keep = index.search(queries, 3, limit=limit, ties="keep")
        cut = index.search(queries, 3, limit=limit, ties="cut")
        for q in range(len(queries)):
            def top(m):
                got_ids, got_d = m[q]
                return sorted(zip(got_d.tolist(), (paths[int(i)] for i in got_ids)))[:limit]
            assert top(keep) == top(full)
            mismatch_with_cut += top(cut) != top(full)
            assert len(cut[q][0]) == min(limit, len(full[q][0]))
            assert np.array_equal(cut[q][0], full[q][0][:limit])  # cut: the first rows by (distance, id)
    assert mismatch_with_cut > 0  # the difference is real on this data


def test_limit_on_a_probe_plan_with_a_large_radius():
    """A limit met at distance 0 stops the probing there (radius 6 on 20 key bits would be
    60,000 probes per query); the answer is still the first rows by (distance, id)."""
    rng = np.random.default_rng(2)
    codes = np.repeat(random_codes(rng, 50, 64), 20)
    ids = rng.permutation(len(codes))
    index = HammingLookup.build(ids, codes, 64, layout=[TableLayout(44, 20)])
    for backend in BACKENDS:
        m = index.search(codes[:3], 6, limit=5, method="probe", backend=backend)
        assert m.equals(brute_force(ids, codes, codes[:3], 6, 64, limit=5))
        assert m.counts().tolist() == [5, 5, 5] and set(m.distances.tolist()) == {0}


def test_bad_input_is_refused():
    index = HammingLookup.build([1, 2], [3, 4], 8)
    with pytest.raises(ValueError, match="bits set above bit 7"):
        index.search([256], 1)
    with pytest.raises(ValueError, match="bits set above"):
        HammingLookup.build([1], [1 << 30], 30)
    with pytest.raises(ValueError, match="radius"):
        index.search([1], -1)
    with pytest.raises(ValueError, match="limit"):
        index.search([1], 1, limit=0)
    with pytest.raises(ValueError, match="ties"):
        index.search([1], 1, ties="some")
    with pytest.raises(ValueError, match="ids for"):
        HammingLookup.build([1, 2, 3], [3, 4], 8)
    with pytest.raises(ValueError, match="n_bits"):
        HammingLookup.build([1], [1], 65)
    with pytest.raises(ValueError, match="overlap"):
        HammingLookup.build([1], [1], 16, layout=[TableLayout(0, 8), TableLayout(4, 8)])
    with pytest.raises(ValueError, match="integers"):
        index.search([1.5], 1)
    with pytest.raises(ValueError, match="64 bits"):
        HammingLookup.build([1, 2], [1, 2**64], 64)
    assert index.search([3], 99).counts().tolist() == [2]  # beyond n_bits: everything


# ---------------------------------------------------------------------------- persistence
KEY = {"generation": 3, "model_fingerprint": "abc", "n_bits": 30, "count": 500}


def _rows(ids, codes, calls):
    def rows():
        calls.append(1)
        yield ids[:200], codes[:200]
        yield ids[200:], codes[200:]

    return rows


def test_save_load_roundtrip_is_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    codes, ids = random_codes(rng, 500, 30), np.arange(500) + 1
    index = HammingLookup.build(ids, codes, 30, layout=[TableLayout(15, 15), TableLayout(0, 15)])
    path = tmp_path / "index.lookup"
    index.save(path, KEY)
    loaded = HammingLookup.load(path, KEY)
    assert loaded is not None and loaded.layout == index.layout and loaded.count == 500
    for t in loaded.tables:
        for arr in (t.directory, t.residuals, t.ids):
            assert isinstance(memoryview(arr.base).obj, mmap.mmap) and not arr.flags.writeable
    for backend in BACKENDS:
        assert loaded.search(codes[:50], 3, backend=backend).equals(index.search(codes[:50], 3))
    assert lk.read_header(path)["key"] == KEY and lk.is_current(path, KEY)
    assert HammingLookup.load(path, {**KEY, "generation": 4}) is None
    assert not lk.is_current(path, {**KEY, "generation": 4})


def test_load_or_build_rebuilds_only_when_missing_stale_or_unreadable(tmp_path):
    rng = np.random.default_rng(1)
    codes, ids = random_codes(rng, 500, 30), np.arange(500)
    path = tmp_path / "index.lookup"
    calls: list[int] = []
    first = lk.load_or_build(path, KEY, _rows(ids, codes, calls), 30)
    assert calls == [1] and path.exists()
    again = lk.load_or_build(path, KEY, _rows(ids, codes, calls), 30)
    assert calls == [1] and isinstance(memoryview(again.tables[0].ids.base).obj, mmap.mmap)
    assert again.search(codes, 2).equals(first.search(codes, 2))
    lk.load_or_build(path, {**KEY, "count": 501}, _rows(ids, codes, calls), 30)  # stale: rebuilt
    assert calls == [1, 1]
    for damage in (b"garbage", path.read_bytes()[:100], path.read_bytes()[:-64]):
        path.write_bytes(damage)
        assert HammingLookup.load(path, KEY) is None
        rebuilt = lk.load_or_build(path, KEY, _rows(ids, codes, calls), 30)
        assert rebuilt.search(codes, 2).equals(first.search(codes, 2))
    assert len(calls) == 5
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:  # a cache that cannot be written is not an error (root may write anyway)
        unwritable = lk.load_or_build(tmp_path / "ro" / "x.lookup", KEY, _rows(ids, codes, calls), 30)
        assert unwritable.search(codes, 1).equals(first.search(codes, 1))
    finally:
        os.chmod(tmp_path / "ro", 0o700)
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_replacing_the_file_never_disturbs_a_reader(tmp_path):
    rng = np.random.default_rng(2)
    codes, ids = random_codes(rng, 400, 16), np.arange(400)
    path = tmp_path / "index.lookup"
    HammingLookup.build(ids, codes, 16).save(path, {"generation": 1})
    reader = HammingLookup.load(path, {"generation": 1})
    before = reader.search(codes[:20], 2)
    HammingLookup.build(ids[:10], codes[:10], 16).save(path, {"generation": 2})
    assert reader.search(codes[:20], 2).equals(before)  # still the old file's mapping
    assert HammingLookup.load(path, {"generation": 2}).count == 10


# ---------------------------------------------------------------------------- planning, layout
def test_layout_and_plan_follow_the_cost_model():
    rng = np.random.default_rng(0)
    n = 200_000
    layout = lk.choose_layout(random_codes(rng, n, 30), 30)
    assert lk._layout_bytes(layout, 30, n, 4) <= 16
    assert [(t.lo, t.k) for t in layout] == [(0, 15), (15, 15)]  # two tables for random codes
    # 20 tight clusters: a 15-bit key lumps each into one bucket, so one longer key wins
    clustered = lk.choose_layout(clustered_codes(rng, n, 30, n_centres=20, p=0.02), 30)
    assert len(clustered) == 1 and clustered[0].k > 15
    tiny = HammingLookup.build(np.arange(30), np.arange(30), 30)
    assert tiny.plan(2).method == "scan"
    big = HammingLookup.build(np.arange(20000), random_codes(rng, 20000, 30), 30)
    assert big.plan(1).method == "probe" and big.plan(30).method == "scan"
    assert big.bytes_per_code <= 16


def test_import_stays_light():
    code = "import sys, semhash.index.lookup as l; print(sorted(m for m in ('tensorflow', 'numba', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_c_kernel_is_built():
    """pip install -e . compiles it (setup.py); only a machine without a C compiler may lack it."""
    if not lk.has_c_kernel():
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            pytest.skip("no C compiler here: the NumPy backend answers (and is tested above)")
        pytest.fail("the C kernel semhash.index._lookup is not built: run `pip install -e .`")


def test_benchmark_harness_runs_on_a_tiny_index(tmp_path):
    out = tmp_path / "lookup.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "lookup", "--sizes", "3000", "--radii", "1,2", "--queries", "300",
         "--max-seconds", "1", "--out", str(out)],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert {r["method"] for r in rows} == {"semhash", "semhash-numpy", "semhash-cold", "hash-probe", "faiss-hash",
                                           "faiss-flat"}  # fmt: skip
    assert {r["distribution"] for r in rows} == {"random", "clustered"}
    timed = [r for r in rows if r["method"] != "semhash-cold"]
    assert all(r["agrees"] for r in timed), [r for r in timed if not r["agrees"]]
    assert all(r["queries_per_s"] > 0 for r in rows)
    cold = [r for r in rows if r["method"] == "semhash-cold"]
    assert {r["radius"] for r in cold} == {1, 2} and all(r["load_ms"] > 0 and r["file_bytes"] > 0 for r in cold)
    assert payload["machine"]["load_average_1_5_15min"]
    tables = subprocess.run([sys.executable, "-m", "benchmarks", "lookup", "--report", str(out)],
                            cwd=REPO, check=True, capture_output=True, text=True, timeout=60).stdout
    assert "| random | 3,000 | 2 | <= 64 |" in tables and "| clustered | 3,000 | semhash |" in tables


def test_layout_experiment_runs_on_a_tiny_index(tmp_path):
    out = tmp_path / "layouts.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "lookup-layouts", "--sizes", "2000", "--radii", "2", "--queries", "100",
         "--max-seconds", "0.5", "--layouts", "auto;8;6,6", "--out", str(out)],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert {r["layout"] for r in rows} == {"auto", "8", "6,6"} and all(r["queries_per_s"] > 0 for r in rows)
    assert {r["keys"] for r in rows if r["layout"] == "6,6"} == {"6+6"}
