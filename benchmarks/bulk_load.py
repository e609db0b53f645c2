"""How the bulk load into a new SQLite index was chosen (issue 10): the same N rows, sorted by
path, written into the `images` table as semhash's importer does it, varying one thing at a
time, CPU seconds per step.

    python -m benchmarks bulk-load --rows 2e6              # ~1 minute
    python -m benchmarks bulk-load --rows 1e7              # ~5 minutes

Variants (all: a new file, journal_mode=OFF, synchronous=OFF, 256 MiB page cache, one
transaction, the UNIQUE path index maintained while the rows go in, the code index created
after them):

* ``4k-all-bound``: 4 KiB pages (SQLite's default), all eight columns bound per row (id,
  path, content_hash, size, mtime, label, code, indexed_at) through ``executemany``;
* ``4k-few-bound``: only the columns a Parquet file of path, code, label has are bound; the
  others are literals in the statement and ids are the rowids SQLite assigns;
* ``16k-few-bound``: the same with 16 KiB pages (what the importer uses);
* ``16k-few-bound-threads``: and ``PRAGMA threads=2`` for the code index's sort.

Rows: paths /semhash-benchmark/<N>/<i // 1000>/<i>.png (sorted as text), labels i mod 10,
random 30-bit codes.  Per variant: insert, code index and commit CPU seconds, wall seconds and
rows/s of the whole.  A driver-overhead line times ``executemany`` of the same three columns
into an in-memory table with no index (what binding costs by itself).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

DESCRIPTION = __doc__
VARIANTS = ("4k-all-bound", "4k-few-bound", "16k-few-bound", "16k-few-bound-threads")
BATCH = 1 << 16
_TABLE = (
    "CREATE TABLE images (id INTEGER NOT NULL, path TEXT NOT NULL, content_hash TEXT NOT NULL, size INTEGER NOT NULL, "
    "mtime FLOAT NOT NULL, label TEXT, code INTEGER NOT NULL, indexed_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (path))"
)
_NOW = "2026-12-03 00:00:00.000000"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", default="2e6", help="rows N (default 2e6)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--work", default=None, help="folder for the database files (default: a temporary one)")
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/bulk_load.json)")


def make_rows(n: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = pa.array(np.arange(n, dtype=np.int64))
    folder = pc.cast(pa.array(np.arange(n, dtype=np.int64) // 1000), pa.string())
    paths = pc.binary_join_element_wise(f"/semhash-benchmark/{n}/", folder, "/", pc.cast(numbers, pa.string()), ".png", "")
    order = pc.sort_indices(paths)
    labels = pc.take(pa.array([str(d) for d in range(10)]), pa.array(np.arange(n) % 10))
    codes = np.random.default_rng(0).integers(0, 1 << 30, n)
    return paths.take(order), labels.take(order), codes


def load(path: Path, variant: str, paths, labels, codes) -> dict[str, Any]:
    page = 16384 if variant.startswith("16k") else 4096
    n = len(codes)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA page_size={page}")
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    if variant.endswith("threads"):
        con.execute("PRAGMA threads=2")
    con.execute(_TABLE)
    wall, cpu = time.perf_counter(), time.process_time()
    con.execute("BEGIN")
    for start in range(0, n, BATCH):
        stop = min(start + BATCH, n)
        p, lab, c = paths.slice(start, stop - start).to_pylist(), labels.slice(start, stop - start).to_pylist(), codes[start:stop].tolist()
        if "all-bound" in variant:
            m = stop - start
            con.executemany("INSERT INTO images (id, path, content_hash, size, mtime, label, code, indexed_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            zip(range(start + 1, stop + 1), p, [""] * m, [0] * m, [0.0] * m, lab, c, [_NOW] * m))  # fmt: skip
        else:
            con.executemany(f"INSERT INTO images (path, label, code, content_hash, size, mtime, indexed_at) "
                            f"VALUES (?, ?, ?, '', 0, 0.0, '{_NOW}')", zip(p, lab, c))  # fmt: skip
    inserted = time.process_time()
    con.execute("CREATE INDEX ix_images_code ON images (code)")
    indexed = time.process_time()
    con.execute("COMMIT")
    done_cpu, done_wall = time.process_time(), time.perf_counter()
    stored, last_id = con.execute("SELECT count(*), max(id) FROM images").fetchone()
    con.close()
    return {
        "variant": variant,
        "rows": n,
        "page_size": page,
        "insert_cpu_s": round(inserted - cpu, 2),
        "code_index_cpu_s": round(indexed - inserted, 2),
        "commit_cpu_s": round(done_cpu - indexed, 2),
        "total_s": round(done_wall - wall, 2),
        "rows_per_s": round(n / (done_wall - wall)),
        "file_mb": round(path.stat().st_size / 1e6),
        "stored": stored,
        "last_id": last_id,
    }


def driver_overhead(paths, labels, codes) -> dict[str, Any]:
    """executemany of three columns into an in-memory table without indexes: the sqlite3
    module's cost per row, nearly without any B-tree work."""
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (a, b, c)")
    cpu = time.process_time()
    n = len(codes)
    for start in range(0, n, BATCH):
        stop = min(start + BATCH, n)
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", zip(paths.slice(start, stop - start).to_pylist(),
                        labels.slice(start, stop - start).to_pylist(), codes[start:stop].tolist()))  # fmt: skip
    seconds = time.process_time() - cpu
    con.close()
    return {"variant": "in-memory, no index (driver only)", "rows": n, "insert_cpu_s": round(seconds, 2),
            "us_per_row": round(seconds / n * 1e6, 2)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = common.parse_sizes(args.rows)[0]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
    paths, labels, codes = make_rows(n)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for variant in variants:
            path = Path(work) / f"{variant}.sqlite"
            common.log(f"[bulk-load] {variant}: {n:,} rows ...")
            row = load(path, variant, paths, labels, codes)
            common.log(f"[bulk-load]   {row}")
            rows.append(row)
            os.unlink(path)
    overhead = driver_overhead(paths, labels, codes)
    payload = {
        "experiment": "bulk-load",
        "command": "python -m benchmarks bulk-load " + " ".join(sys.argv[2:]),
        "machine": common.machine_info(),
        "load_average_after": common.load_average(),
        "sqlite": sqlite3.sqlite_version,
        "rows": rows,
        "driver_overhead": overhead,
    }
    out = common.write_json("bulk_load", payload, args.out)
    print(common.table(rows, ["variant", "page_size", "insert_cpu_s", "code_index_cpu_s", "commit_cpu_s", "total_s",
                              "rows_per_s", "file_mb"]))  # fmt: skip
    print(f"\ndriver only: {overhead['us_per_row']} us per row ({overhead['insert_cpu_s']} CPU-s); wrote {out}")
    return payload
