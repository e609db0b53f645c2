"""Review: the duplicates review page's API at 10^5 groups (issue 21's targets).

An index of 2 x ``--groups`` images filled by ``semhash import`` (random near codes, each
image paired with a copy 4 bits away), served in-process with ``create_app(review=True)``:
the first page of groups (cold: the groups are computed; warm: computed once per index
state, only the decisions read afresh), and ``--decisions`` decisions recorded one request
at a time, each timed (median and 95th percentile).  Server time, measured around the ASGI
calls by the test client.

    python -m benchmarks review                 # docs/benchmarks/review.json
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import log, machine_info, write_json

DESCRIPTION = __doc__


def add_arguments(parser) -> None:
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)


def run(args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fastapi.testclient import TestClient

    from benchmarks.serve import random_weight_hasher, save_bench_model
    from semhash.web.app import create_app
    from semhash.workspace import Workspace

    rng = np.random.default_rng(args.seed)
    n = 2 * args.groups
    with tempfile.TemporaryDirectory(prefix="semhash-bench-review-") as tmp:
        home = Path(tmp) / "home"
        model = save_bench_model(home, random_weight_hasher(30))
        near = rng.integers(0, 256, (args.groups, 32), dtype=np.uint8)
        copies = near.copy()
        copies[:, 0] ^= np.uint8(0x0F)
        codes = np.concatenate([near, copies])
        paths = np.char.add(np.char.add("/semhash-benchmark/review/", np.char.zfill(np.arange(n).astype(str), 8)), ".jpg")
        table = pa.table({"path": pa.array(paths), "code": pa.array(rng.integers(0, 1 << 30, n, dtype=np.uint64)),
                          "near_code": pa.array([row.tobytes() for row in codes], pa.binary()),
                          "near_quality": pa.array(np.full(n, 100, np.int32)), "size": pa.array(np.full(n, 2_000_000)),
                          "width": pa.array(np.full(n, 4000)), "height": pa.array(np.full(n, 3000))})  # fmt: skip
        pq.write_table(table, Path(tmp) / "codes.parquet")
        index = Path(tmp) / "index.sqlite"
        subprocess.run([sys.executable, "-m", "semhash", "import", str(Path(tmp) / "codes.parquet"), "--model", model,
                        "--index", str(index), "--home", str(home), "--quiet"], check=True, capture_output=True, timeout=3600)  # fmt: skip
        app = create_app(index, Workspace(home), review=True)
        with TestClient(app, base_url="http://127.0.0.1") as client:
            started = time.perf_counter()
            first = client.get("/api/duplicates", params={"limit": 20})
            cold = time.perf_counter() - started
            assert first.status_code == 200, first.text
            warm = []
            for _ in range(20):
                started = time.perf_counter()
                page = client.get("/api/duplicates", params={"limit": 20, "offset": 20})
                warm.append(time.perf_counter() - started)
            assert page.status_code == 200
            groups = first.json()["totals"]["groups"]
            keys = [g["key"] for g in client.get("/api/duplicates", params={"limit": 1000}).json()["groups"]]
            decided = []
            for key in keys[: args.decisions]:
                started = time.perf_counter()
                response = client.post("/api/duplicates/decisions", json={"key": key, "decision": "skip"})
                decided.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            started = time.perf_counter()
            after = client.get("/api/duplicates", params={"limit": 20})
            after_s = time.perf_counter() - started
            assert after.status_code == 200
    decided_ms = np.array(decided) * 1000
    result = {
        "machine": machine_info(),
        "images": n,
        "groups": groups,
        "first_page_cold_ms": round(cold * 1000, 1),
        "page_warm_median_ms": round(float(np.median(warm)) * 1000, 1),
        "page_after_decisions_ms": round(after_s * 1000, 1),
        "decisions": len(decided),
        "decision_median_ms": round(float(np.median(decided_ms)), 2),
        "decision_p95_ms": round(float(np.percentile(decided_ms, 95)), 2),
    }
    log(str(result))
    path = write_json("review", result, args.out)
    log(f"wrote {path}")
    return result
