"""Index size per row at N rows in SQLite and PostgreSQL with the current schema, and the
speed of a radius-2 lookup done in the database (the indexed code column probed with the 466
neighbour codes of a 30-bit code in one statement).

    nice -n 10 python -m benchmarks.index_storage --rows 10000000 --workdir /tmp/semhash-bench/storage

The tables are created from semhash.index.db's SQLAlchemy metadata (``ImageRow``, exactly as
`semhash index` creates them), in a scratch SQLite file and in a scratch PostgreSQL server
started the way the tests start theirs (tests/postgres_server.py: initdb + pg_ctl in /tmp, as
the ``postgres`` user under root).  PostgreSQL is measured twice: with the schema as it is
(``current``) and with id, size and code forced to BIGINT (``bigint``), which 64-bit codes and
files over 2 GiB need.  The committed figures were measured when the schema still declared
them INTEGER (4 bytes); since issue 12 phase 2 the schema itself is BIGINT (and ``path`` and
``label`` COLLATE "C"), so the two variants now create the same table.

Rows are synthetic but shaped like a photo library: absolute paths of ~70 bytes sorted the way
the indexer walks them (inserted in that order, in 100,000-row transactions, as an indexer
commits batches), the label a first-level folder name, a sha256 hex, a size, an mtime, a
uniformly random 30-bit code and the timestamp.  Sizes are measured after the load and a
VACUUM ANALYZE (PostgreSQL) / as the file stands (SQLite).

Lookups: random 30-bit query codes, their 466 neighbour codes bound as one parameter,
``code = ANY(%s)`` in PostgreSQL (through psycopg, and through an SQLAlchemy connection as
the index code would issue it), ``code IN (?, ..., ?)`` in SQLite (semhash's ``sql`` search
method); single connection, one query at a time, warm caches, --queries queries each
(bounded by --max-seconds).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from benchmarks.hashing import ROOT, environment, save_result

CHUNK = 100_000
PG_LOOKUPS = {  # two ways to probe the code index with the neighbour codes in one statement
    "any": "SELECT path, label, code FROM images WHERE code = ANY(%s)",
    "unnest_join": "SELECT i.path, i.label, i.code FROM unnest(%s::int8[]) AS q(code) JOIN images i ON i.code = q.code",
}
CAMERAS = sorted(["canon-eos-5d", "iphone-12", "pixel-7", "nikon-d750", "scans", "whatsapp", "screenshots", "gopro"])


def synthetic_rows(n: int, seed: int = 0):
    """Chunks of (path, content_hash, size, mtime, label, code, indexed_at) tuples, in path order."""
    import binascii
    from itertools import repeat

    import numpy as np

    rng = np.random.default_rng(seed)
    now = datetime(2025, 1, 1, 12, 0, 0)
    per_camera = -(-n // len(CAMERAS))
    per_day = 2000
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        count = stop - start
        paths, labels = [], []
        i = start
        while i < stop:  # runs of rows sharing one camera and one day
            camera, j = CAMERAS[i // per_camera], i % per_camera
            day = j // per_day
            y, m, d = 2015 + day // 336, 1 + (day // 28) % 12, 1 + day % 28
            prefix = f"/mnt/photos/{camera}/{y}/{m:02d}/{d:02d}/IMG_{y}{m:02d}{d:02d}_"
            end = min(stop, i + per_day - j % per_day, (i // per_camera + 1) * per_camera)
            paths += [f"{prefix}{jj % per_day:04d}_{ii:08d}.jpg" for ii, jj in zip(range(i, end), range(j, j + end - i))]
            labels += [camera] * (end - i)
            i = end
        hexes = binascii.hexlify(rng.bytes(32 * count)).decode()
        digests = [hexes[k : k + 64] for k in range(0, 64 * count, 64)]
        sizes = rng.integers(20_000, 8_000_000, count).tolist()
        mtimes = (1.6e9 + np.arange(start, stop) * 0.37).tolist()
        codes = rng.integers(0, 1 << 30, count).tolist()
        yield list(zip(paths, digests, sizes, mtimes, labels, codes, repeat(now)))


def neighbour_lists(n_queries: int, seed: int = 1) -> list[list[int]]:
    from semhash.hashing import neighbour_codes, to_signed64

    rng = random.Random(seed)
    return [[to_signed64(c) for c, _ in neighbour_codes(rng.getrandbits(30), 30, 2)] for _ in range(n_queries)]


def _short(line: str, width: int = 160) -> str:
    """A plan line without the 466 literal codes."""
    return line if len(line) <= width else line[:width] + "...)"


def time_queries(run_one, queries: list[list[int]], max_seconds: float) -> dict:
    for q in queries[:50]:  # warm the caches and the prepared statement
        run_one(q)
    latencies, answers = [], []
    deadline = time.perf_counter() + max_seconds
    started = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        answers.append(run_one(q))
        latencies.append(time.perf_counter() - t)
        if t > deadline:
            break
    total = time.perf_counter() - started
    return {
        "queries": len(latencies),
        "queries_per_s": len(latencies) / total,
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1e3,
        "mean_answer_rows": statistics.fmean(answers),
        "neighbour_codes_per_query": len(queries[0]),
    }


# --------------------------------------------------------------------------- SQLite
def measure_sqlite(path: Path, n: int, queries, max_seconds: float) -> dict:
    from sqlalchemy import create_engine

    from semhash.index.db import Base, ImageRow

    path.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")  # a scratch file: durability is not measured
    cols = "path, content_hash, size, mtime, label, code, indexed_at"
    sql = f"INSERT INTO {ImageRow.__tablename__} ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    started = time.perf_counter()
    path_bytes = 0
    for chunk in synthetic_rows(n):
        path_bytes += sum(len(r[0]) for r in chunk)
        con.execute("BEGIN")
        stamp = str(chunk[0][6])  # DateTime as SQLAlchemy stores it in SQLite (one value for all rows)
        con.executemany(sql, (r[:6] + (stamp,) for r in chunk))
        con.execute("COMMIT")
    load_s = time.perf_counter() - started
    size = path.stat().st_size
    parts = {}
    try:
        parts = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    except sqlite3.Error:
        pass
    plan = con.execute(
        f"EXPLAIN QUERY PLAN SELECT path, label, code FROM images WHERE code IN ({', '.join('?' * 466)})",
        queries[0],
    ).fetchall()

    def run_one(codes: list[int]) -> int:
        stmt = f"SELECT path, label, code FROM images WHERE code IN ({', '.join('?' * len(codes))})"
        return len(con.execute(stmt, codes).fetchall())

    lookup = time_queries(run_one, queries, max_seconds)
    con.close()
    return {
        "engine": "sqlite",
        "sqlite_version": sqlite3.sqlite_version,
        "rows": n,
        "mean_path_bytes": path_bytes / n,
        "load_s": load_s,
        "load_rows_per_s": n / load_s,
        "file_bytes": size,
        "bytes_per_row": size / n,
        "parts_bytes": parts,
        "plan": [str(p) for p in plan],
        "radius2_lookup": lookup,
    }


# --------------------------------------------------------------------------- PostgreSQL
def _bigint_metadata():
    """The current ``images``/``meta`` tables with id, size and code as BIGINT."""
    from sqlalchemy import BigInteger, MetaData

    from semhash.index.db import Base

    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        copy = table.to_metadata(metadata)
        if copy.name == "images":
            for name in ("id", "size", "code"):
                copy.c[name].type = BigInteger()
    return metadata


def measure_postgres(server, variant: str, n: int, queries, max_seconds: float) -> dict:
    import psycopg
    from sqlalchemy import create_engine

    from semhash.index.db import Base

    dbname = server.create_database(f"storage_{variant}", collation=None)  # bytewise "C", as paths need
    engine = create_engine(server.url(dbname))
    metadata = Base.metadata if variant == "current" else _bigint_metadata()
    metadata.create_all(engine)
    with engine.connect() as conn:
        columns = dict(
            conn.exec_driver_sql(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'images'"
            ).all()
        )
    started = time.perf_counter()
    with psycopg.connect(server.conninfo(dbname)) as con:
        for chunk in synthetic_rows(n):
            with con.cursor() as cur, cur.copy(
                "COPY images (path, content_hash, size, mtime, label, code, indexed_at) FROM STDIN"
            ) as copy:
                for row in chunk:
                    copy.write_row(row)
            con.commit()
        load_s = time.perf_counter() - started
        con.autocommit = True
        con.execute("VACUUM ANALYZE images")
        sizes = con.execute(
            "SELECT pg_total_relation_size('images'), pg_relation_size('images'), pg_indexes_size('images'), "
            "pg_total_relation_size('images') - pg_relation_size('images') - pg_indexes_size('images'), "
            "pg_database_size(current_database())"
        ).fetchone()
        indexes = dict(
            con.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'images'::regclass"
            ).fetchall()
        )
        plans, direct = {}, {}
        for form, sql in PG_LOOKUPS.items():
            plans[form] = [_short(r[0]) for r in con.execute("EXPLAIN " + sql, (queries[0],)).fetchall()]
            direct[form] = time_queries(
                lambda codes, sql=sql: len(con.execute(sql, (codes,), prepare=True).fetchall()), queries, max_seconds
            )
    with engine.connect() as conn:
        via_sqlalchemy = time_queries(
            lambda codes: len(conn.exec_driver_sql(PG_LOOKUPS["any"], (codes,)).fetchall()), queries, max_seconds
        )
    engine.dispose()
    server.drop_database(dbname)
    total = sizes[0]
    return {
        "engine": "postgresql",
        "variant": variant,
        "server_version": server.install.version,
        "column_types": columns,
        "rows": n,
        "load_s": load_s,
        "load_rows_per_s": n / load_s,
        "total_relation_bytes": total,
        "bytes_per_row": total / n,
        "heap_bytes": sizes[1],
        "indexes_bytes": sizes[2],
        "toast_fsm_vm_bytes": sizes[3],
        "database_bytes": sizes[4],
        "index_bytes": indexes,
        "plans": plans,
        "radius2_lookup_psycopg": direct,
        "radius2_lookup_sqlalchemy": via_sqlalchemy,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.index_storage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", default="/tmp/semhash-bench/storage")
    parser.add_argument("--engines", default="sqlite,postgres-current,postgres-bigint")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per lookup measurement")
    parser.add_argument("--out", default=None, help="JSON path [default: docs/benchmarks/index_storage.json]")
    args = parser.parse_args(argv)

    env = environment()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    queries = neighbour_lists(args.queries)
    engines = args.engines.split(",")
    results = []
    if "sqlite" in engines:
        results.append(measure_sqlite(workdir / "images.sqlite", args.rows, queries, args.max_seconds))
        print(results[-1], file=sys.stderr)
        (workdir / "images.sqlite").unlink()
    pg_variants = [e.split("-", 1)[1] for e in engines if e.startswith("postgres-")]
    if pg_variants:
        sys.path.insert(0, str(ROOT / "tests"))
        from postgres_server import PostgresServer, find_postgres

        install, reason = find_postgres()
        if install is None:
            raise SystemExit(reason)
        settings = {
            "shared_buffers": "256MB",
            "maintenance_work_mem": "256MB",
            "max_wal_size": "8GB",
            "checkpoint_timeout": "30min",
            "autovacuum": "off",  # VACUUM ANALYZE runs explicitly after the load
        }
        with PostgresServer(install, settings=settings) as server:
            for variant in pg_variants:
                results.append(measure_postgres(server, variant, args.rows, queries, args.max_seconds))
                print(results[-1], file=sys.stderr)
    path = save_result("index_storage", {"experiment": "index_storage", "environment": env, "results": results}, args.out)
    print(f"wrote {path}")
    for r in results:
        lookups = {"in": r["radius2_lookup"]} if "radius2_lookup" in r else r["radius2_lookup_psycopg"]
        print(
            f"{r['engine']:>10} {r.get('variant', ''):>8}: {r['bytes_per_row']:.1f} bytes/row at {r['rows']:,} rows, "
            f"load {r['load_rows_per_s']:,.0f} rows/s, radius-2 lookup "
            + ", ".join(
                f"{form} {lk['queries_per_s']:,.0f} queries/s (median {lk['median_ms']:.2f} ms, "
                f"{lk['mean_answer_rows']:.1f} rows)"
                for form, lk in lookups.items()
            )
        )


if __name__ == "__main__":
    main()
