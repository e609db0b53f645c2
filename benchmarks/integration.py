"""The lookup behind the real commands (issue 10's integration measures): at each index size N,
fill an index with `semhash import` from generated Parquet, then time `semhash status` and
cold `semhash query --code` processes, exactly as a user runs them.

    nice -n 10 python -m benchmarks integration                          # 10^4 .. 10^7
    python -m benchmarks integration --sizes 1e4,1e5 --cold-runs 3       # a minute

Per N (clustered 30-bit codes like a trained model's: 4,096 centres, each bit flipped with
p = 0.05, benchmarks.common.clustered_codes; paths /semhash-benchmark/<N>/<i // 1000>/<i>.png,
labels i mod 10):

* the Parquet file is written once per N into --work (its time is recorded, not counted);
* ``semhash import FILE --model M --index ... --json``: one process, timed end to end
  (rows/s), with the import's own figure (the library call, lookup refresh included) and the
  process's peak resident memory (a new index file: the bulk load);
* ``semhash status --index ... --json``: --status-runs processes, median wall time;
* the index and lookup sizes are taken, then N/10 more rows (new paths) are imported into
  the index that is there (the upsert path, not the new-file bulk load): rows/s;
* ``semhash query --code C --radius 2 --limit 100 --json``: --cold-runs fresh processes, a
  different indexed code each, median and min wall time (Python start-up and imports
  included: what a user waits for).

The check: median cold query at the largest N <= 1.5x the median at the smallest.  The
machine's load average is recorded before and after each N: on a shared machine wall times
are noisy, so rerun on a quiet machine before quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

DESCRIPTION = __doc__
RADIUS, LIMIT = 2, 100
COLD_RATIO_TARGET = 1.5
IMPORT_TARGET_ROWS_PER_S = 200_000
STATUS_TARGET_S = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="index sizes N (default 1e4,1e5,1e6,1e7)")
    p.add_argument("--bits", type=int, default=30)
    p.add_argument("--cold-runs", type=int, default=7, help="cold `semhash query --code` processes per N")
    p.add_argument("--status-runs", type=int, default=3, help="`semhash status` processes per N")
    p.add_argument("--work", default="/tmp/semhash-bench/integration", help="Parquet files and indexes (reused)")
    p.add_argument("--keep", action="store_true", help="keep the indexes (they are deleted after each N)")
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/integration.json)")


def semhash(*args: str, timeout: float = 3600) -> tuple[float, str, float, float]:
    """Run one semhash process; (wall seconds, stdout, CPU seconds, peak resident MB) of that
    process (CPU seconds: what other jobs on the machine disturb least)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "semhash", *args], stdout=out, stderr=err)
        deadline = started + timeout
        while True:  # wait4: this child's own rusage (CPU time, peak memory)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                raise RuntimeError(f"semhash {' '.join(args)} ran past {timeout} s")
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"semhash {' '.join(args)} failed: {stdout}{stderr}")
    return seconds, stdout, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def write_parquet(path: Path, n: int, bits: int, chunk: int = 1 << 20, prefix: str | None = None, seed: int = 0) -> np.ndarray:
    """The N-row file (written once; reused when it is there) and its codes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    codes = common.clustered_codes(n, bits, seed=seed)
    prefix = prefix if prefix is not None else f"/semhash-benchmark/{n}/"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == n:
        return codes
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("path", pa.string()), ("code", pa.uint64()), ("label", pa.string())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, n, chunk):
            numbers = np.arange(start, min(n, start + chunk), dtype=np.int64)
            i = pa.array(numbers)
            folder = pc.cast(pa.array(numbers // 1000), pa.string())
            paths = pc.binary_join_element_wise(prefix, folder, "/", pc.cast(i, pa.string()), ".png", "")
            labels = pc.take(pa.array([str(d) for d in range(10)]), pa.array(numbers % 10))
            writer.write_table(pa.table({"path": paths, "code": pa.array(codes[start : start + len(i)]),
                                         "label": labels}, schema=schema))  # fmt: skip
    tmp.rename(path)
    return codes


def measure(n: int, args: argparse.Namespace, home: Path, model: str) -> dict[str, Any]:
    work = Path(args.work)
    parquet = work / f"codes-{n}.parquet"
    started = time.perf_counter()
    codes = write_parquet(parquet, n, args.bits)
    generate_s = time.perf_counter() - started
    index = work / f"index-{n}.sqlite"
    for old in work.glob(f"index-{n}.*"):
        old.unlink()
    load = common.load_average()
    common.log(f"[integration] N={n:,}: semhash import ...")
    import_s, out, import_cpu_s, import_mb = semhash("import", str(parquet), "--model", model, "--index", str(index), "--home", str(home),
                            "--json", "--quiet")  # fmt: skip
    imported = json.loads(out)
    common.log(f"[integration]   import {import_s:.1f} s ({n / import_s:,.0f} rows/s); status ...")
    status_times, status = [], {}
    for _ in range(args.status_runs):
        seconds, out, _, _ = semhash("status", "--index", str(index), "--home", str(home), "--json")
        status_times.append(seconds)
        status = json.loads(out)
    rng = np.random.default_rng(n)
    picks = [int(c) for c in codes[rng.integers(0, n, args.cold_runs)]]
    cold, cold_cpu, totals = [], [], []
    for code in picks:
        seconds, out, cpu, _ = semhash("query", "--code", str(code), "--radius", str(RADIUS), "--limit", str(LIMIT),
                               "--index", str(index), "--home", str(home), "--json")  # fmt: skip
        cold.append(seconds)
        cold_cpu.append(cpu)
        totals.append(json.loads(out)[0]["total"])
    index_bytes, lookup_bytes = index.stat().st_size, index.with_suffix(".lookup").stat().st_size
    # then a tenth more rows, new paths, into the index that is there: the upsert path
    extra = max(1, n // 10)
    more = work / f"codes-{n}-more-{extra}.parquet"
    write_parquet(more, extra, args.bits, prefix=f"/semhash-benchmark/{n}-more/", seed=1)
    common.log(f"[integration]   semhash import of {extra:,} more rows into it ...")
    append_s, out, append_cpu_s, append_mb = semhash("import", str(more), "--model", model, "--index", str(index),
                                                     "--home", str(home), "--json", "--quiet")  # fmt: skip
    appended = json.loads(out)
    assert appended["added"] == extra and appended["total"] == n + extra, appended
    row = {
        "n": n,
        "parquet_generate_s": round(generate_s, 1),
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(n / import_s),
        "import_cpu_s": round(import_cpu_s, 2),
        "import_rows_per_cpu_s": round(n / import_cpu_s),
        "import_library_s": imported["seconds"],
        "import_library_rows_per_s": imported["rows_per_s"],
        "import_peak_mb": round(import_mb),
        "status_median_s": round(statistics.median(status_times), 3),
        "status_count": status.get("count"),
        "lookup_current": status.get("lookup_current"),
        "cold_query_median_s": round(statistics.median(cold), 3),
        "cold_query_min_s": round(min(cold), 3),
        "cold_query_median_cpu_s": round(statistics.median(cold_cpu), 3),
        "cold_query_mean_total": round(float(np.mean(totals)), 1),
        "append_rows": extra,
        "append_s": round(append_s, 2),
        "append_rows_per_s": round(extra / append_s),
        "append_cpu_s": round(append_cpu_s, 2),
        "append_peak_mb": round(append_mb),
        "index_bytes": index_bytes,
        "lookup_bytes": lookup_bytes,
        "load_average_at_start": load,
        "load_average_at_end": common.load_average(),
    }
    common.log(f"[integration]   {json.dumps(row)}")
    if not args.keep:
        for old in work.glob(f"index-{n}.*"):
            old.unlink()
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.serve import random_weight_hasher, save_bench_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    model = save_bench_model(home, random_weight_hasher(bits=args.bits))
    load_before = common.load_average()
    rows = [measure(n, args, home, model) for n in common.parse_sizes(args.sizes)]
    first, last = rows[0], rows[-1]
    ratio = last["cold_query_median_s"] / first["cold_query_median_s"]
    checks = {
        f"cold query at N={last['n']:,} / at N={first['n']:,}": round(ratio, 2),
        f"cold ratio <= {COLD_RATIO_TARGET}": ratio <= COLD_RATIO_TARGET,
        f"import >= {IMPORT_TARGET_ROWS_PER_S:,} rows/s at N={last['n']:,}": last["import_rows_per_s"] >= IMPORT_TARGET_ROWS_PER_S,
        f"status < {STATUS_TARGET_S} s at N={last['n']:,}": last["status_median_s"] < STATUS_TARGET_S,
    }
    payload = {
        **common.run_header("integration", load_before),
        "codes": f"clustered, {args.bits} bits (4,096 centres, p = 0.05)",
        "query": {"radius": RADIUS, "limit": LIMIT},
        "rows": rows,
        "checks": checks,
    }
    path = common.write_json("integration", payload, args.out)
    print(common.table(rows, ["n", "import_s", "import_rows_per_s", "import_rows_per_cpu_s", "import_peak_mb",
                              "append_rows", "append_rows_per_s", "status_median_s",
                              "cold_query_median_s", "cold_query_min_s", "cold_query_median_cpu_s",
                              "cold_query_mean_total", "load_average_at_start"]))  # fmt: skip
    print(f"\n{json.dumps(checks)}\nload average before {load_before}, after {payload['load_average_after']}; wrote {path}")
    return payload
