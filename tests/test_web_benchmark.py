"""The serve benchmark's own parts, on small inputs (the benchmark itself is run by hand:
`python -m benchmarks.serve`, see docs/BENCHMARKS.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package at the repo root

from benchmarks.serve import fill_index_with_random_codes, parse_wrk, random_weight_hasher, save_bench_model  # noqa: E402

from semhash.index import index_info, search_codes  # noqa: E402

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:40945
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   125.38ms   80.12ms 720.15ms   90.00%
    Req/Sec   123.45     20.00   150.00     70.00%
  Latency Distribution
     50%  125.38ms
     75%  140.32ms
     90%  166.88ms
     99%  720.15ms
  1228 requests in 10.05s, 1.23MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:    122.19
Transfer/sec:    125.00KB
"""


def test_parse_wrk():
    parsed = parse_wrk(WRK_OUTPUT)
    assert parsed == {"p50_ms": 125.38, "p75_ms": 140.32, "p90_ms": 166.88, "p99_ms": 720.15, "requests": 1228,
                      "requests_per_s": 122.2, "errors": 3, "socket_errors": 3}
    assert parse_wrk(WRK_OUTPUT.replace("50%  125.38ms", "50%  812.00us"))["p50_ms"] == 0.812


def test_random_code_index_is_a_real_searchable_index(tmp_path):
    hasher = random_weight_hasher(bits=30)
    assert hasher.hash(np.zeros((2, 28, 28, 1), dtype=np.float32)).shape == (2,)
    index = tmp_path / "index.sqlite"
    model = save_bench_model(tmp_path / "home", hasher)
    codes = fill_index_with_random_codes(index, tmp_path / "home", model, hasher.n_bits, 5000)
    info = index_info(index)
    assert info["count"] == 5000 and info["bits"] == 30 and info["lookup_current"]
    assert int(codes.max()) < 1 << 30
    found = search_codes(index, codes[:5], radius=0)
    assert all(any(m.code == int(c) and m.distance == 0 for m in ms) for c, ms in zip(codes[:5], found))
