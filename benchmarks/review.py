"""Review: the duplicates review page's API at 10^5 groups (issue 21's targets).

An index of 2 x ``--groups`` images filled by ``semhash import`` (random near codes, each
image paired with a copy 4 bits away; ten folders), served in-process with
``create_app(review=True)``, which starts grouping in the background at once: how long that
takes, the first page once it is done, the first page asked for at the very start (it waits
for the grouping), a page warm (the groups computed once per index state, only the decisions
read afresh) and of one folder, ``--decisions`` decisions recorded one request at a time
(median and 95th percentile), and "keep the suggestion" for every group of one folder in one
request.  Server time, measured around the ASGI calls by the test client.

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
        folders = np.char.add("/semhash-benchmark/review/f", (np.arange(n) % 10).astype(str))
        paths = np.char.add(np.char.add(folders, np.char.add("/", np.char.zfill(np.arange(n).astype(str), 8))), ".jpg")
        table = pa.table({"path": pa.array(paths), "code": pa.array(rng.integers(0, 1 << 30, n, dtype=np.uint64)),
                          "near_code": pa.array([row.tobytes() for row in codes], pa.binary()),
                          "near_quality": pa.array(np.full(n, 100, np.int32)), "size": pa.array(np.full(n, 2_000_000)),
                          "width": pa.array(np.full(n, 4000)), "height": pa.array(np.full(n, 3000))})  # fmt: skip
        pq.write_table(table, Path(tmp) / "codes.parquet")
        index = Path(tmp) / "index.sqlite"
        subprocess.run([sys.executable, "-m", "semhash", "import", str(Path(tmp) / "codes.parquet"), "--model", model,
                        "--index", str(index), "--home", str(home), "--quiet"], check=True, capture_output=True, timeout=3600)  # fmt: skip
        with TestClient(create_app(index, Workspace(home), review=True), base_url="http://127.0.0.1") as client:
            started = time.perf_counter()  # asked for at once: it waits for the background grouping
            at_start = client.get("/api/duplicates", params={"limit": 20})
            at_start_s = time.perf_counter() - started
            assert at_start.status_code == 200, at_start.text
        app = create_app(index, Workspace(home), review=True)
        reader = app.state.reader
        started = time.perf_counter()
        while not any(isinstance(k, tuple) and k[:1] == ("duplicates",) for k in reader._state.derived):
            time.sleep(0.01)
        grouping_s = time.perf_counter() - started
        with TestClient(app, base_url="http://127.0.0.1") as client:
            started = time.perf_counter()
            first = client.get("/api/duplicates", params={"limit": 20})
            first_s = time.perf_counter() - started
            assert first.status_code == 200, first.text
            warm = []
            for _ in range(20):
                started = time.perf_counter()
                page = client.get("/api/duplicates", params={"limit": 20, "offset": 20})
                warm.append(time.perf_counter() - started)
            assert page.status_code == 200
            started = time.perf_counter()
            folder_page = client.get("/api/duplicates", params={"limit": 20, "folder": "/semhash-benchmark/review/f3"})
            folder_s = time.perf_counter() - started
            assert folder_page.status_code == 200
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
            started = time.perf_counter()
            accepted = client.post("/api/duplicates/accept", params={"folder": "/semhash-benchmark/review/f7"})
            accept_s = time.perf_counter() - started
            assert accepted.status_code == 200, accepted.text
    decided_ms = np.array(decided) * 1000
    result = {
        "machine": machine_info(),
        "images": n,
        "groups": groups,
        "grouping_in_background_s": round(grouping_s, 2),
        "first_page_ms": round(first_s * 1000, 1),
        "first_page_asked_at_start_ms": round(at_start_s * 1000, 1),
        "page_warm_median_ms": round(float(np.median(warm)) * 1000, 1),
        "folder_page_ms": round(folder_s * 1000, 1),
        "folder_groups": folder_page.json()["totals"]["groups"],
        "page_after_decisions_ms": round(after_s * 1000, 1),
        "decisions": len(decided),
        "decision_median_ms": round(float(np.median(decided_ms)), 2),
        "decision_p95_ms": round(float(np.percentile(decided_ms, 95)), 2),
        "accept_folder_groups": accepted.json()["decided"],
        "accept_folder_ms": round(accept_s * 1000, 1),
    }
    log(str(result))
    path = write_json("review", result, args.out)
    log(f"wrote {path}")
    return result
