"""Radius search at scale (issue 10): semhash's lookup side by side with faiss
IndexBinaryFlat, faiss IndexBinaryHash and a bare C hash-table probe of the same neighbour
codes, one thread, in one run.

For each code distribution (random; clustered like a trained model's: 4,096 centres, each
bit flipped with p = 0.05), each index size N and each radius it reports queries/s, the
mean answer size, build time and bytes per code in memory.  Queries are split by answer
size: "small" (at most --small-answer rows, the issue's "few dozen") and "large", each
timed separately.  Random queries are indexed codes; clustered queries are new draws from
the same centres.  Every timed loop is bounded by --queries and --max-seconds.

    python -m benchmarks lookup                                  # 10^5, 10^6, 10^7: ~15 min
    python -m benchmarks lookup --sizes 1e8 --out docs/benchmarks/lookup_1e8.json
    python -m benchmarks lookup --sizes 1e5 --radii 2 --queries 500   # seconds
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks import common

DESCRIPTION = __doc__
METHODS = ("semhash", "semhash-numpy", "semhash-cold", "hash-probe", "faiss-hash", "faiss-flat")
FAISS_HASH_BYTES_PER_CODE = 90  # resident growth measured at 10^7 (82): the guard before building it

# The same lookup behind the real commands (`semhash import`, `status`, a cold `semhash query
# --code` process at each N) is measured by benchmarks/integration.py (`python -m benchmarks
# integration`).


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1e5,1e6,1e7", help="index sizes N (default 1e5,1e6,1e7; 1e8 needs ~10 GB)")
    p.add_argument("--radii", default="0,1,2,3")
    p.add_argument("--bits", type=int, default=30)
    p.add_argument("--distributions", default="random,clustered")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument("--queries", type=int, default=20_000, help="at most this many queries per timing")
    p.add_argument("--max-seconds", type=float, default=4.0, help="at most this long per timing (after 1 batch)")
    p.add_argument("--flat-max-n", type=float, default=1e7, help="skip faiss IndexBinaryFlat above this N")
    p.add_argument("--small-answer", type=int, default=64, help="answers up to this many rows count as small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/lookup.json)")
    p.add_argument("--report", nargs="+", metavar="JSON", default=None,
                   help="print the docs tables from results already written (runs nothing)")


# ---------------------------------------------------------------------------- the contenders
class HashProbe:
    """The bare baseline (benchmarks/hashprobe.c): distinct code -> run of ids, open
    addressing; probes the C(bits, <= r) neighbour codes of each query, copies the hits' ids."""

    _lib: ctypes.CDLL | None = None

    @classmethod
    def library(cls) -> ctypes.CDLL:
        if cls._lib is None:
            src = Path(__file__).with_name("hashprobe.c")
            out = Path(tempfile.mkdtemp(prefix="semhash-bench-")) / "hashprobe.so"
            subprocess.run(["cc", "-O3", "-shared", "-fPIC", str(src), "-o", str(out)], check=True)
            lib = ctypes.CDLL(str(out))
            p = ctypes.c_void_p
            lib.hp_build.argtypes = [p, ctypes.c_int64, p, p, ctypes.c_int]
            lib.hp_probe.argtypes = [p, p, ctypes.c_int, p, p, p, ctypes.c_int64, p, ctypes.c_int64, p, ctypes.c_int64, p]
            lib.hp_probe.restype = ctypes.c_int64
            cls._lib = lib
        return cls._lib

    def __init__(self, ids: np.ndarray, codes: np.ndarray):
        lib = self.library()
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        self.ids = ids[order].astype(np.uint32)
        distinct, starts = np.unique(sorted_codes, return_index=True)
        self.starts = np.append(starts, len(codes)).astype(np.int64)
        self.log2 = max(1, int(np.ceil(np.log2(max(2 * len(distinct), 2)))))
        self.keys = np.full(1 << self.log2, np.iinfo(np.uint64).max, dtype=np.uint64)
        self.vals = np.zeros(1 << self.log2, dtype=np.uint32)
        distinct = np.ascontiguousarray(distinct, dtype=np.uint64)
        lib.hp_build(distinct.ctypes.data, len(distinct), self.keys.ctypes.data, self.vals.ctypes.data, self.log2)
        self.out = np.zeros(1 << 20, dtype=np.uint32)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.vals.nbytes + self.starts.nbytes + self.ids.nbytes

    def probe(self, queries: np.ndarray, masks: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        counts = np.zeros(len(queries), dtype=np.int64)
        while True:
            n = self.library().hp_probe(
                self.keys.ctypes.data, self.vals.ctypes.data, self.log2, self.starts.ctypes.data,
                self.ids.ctypes.data, queries.ctypes.data, len(queries), masks.ctypes.data, len(masks),
                self.out.ctypes.data, len(self.out), counts.ctypes.data,
            )  # fmt: skip
            if n >= 0:
                return counts
            self.out = np.zeros(2 * len(self.out), dtype=np.uint32)


def _pack(codes: np.ndarray, n_bits: int) -> np.ndarray:
    n_bytes = (n_bits + 7) // 8
    return np.ascontiguousarray(codes.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :n_bytes])


def _faiss_bits(n_bits: int) -> int:
    return 8 * ((n_bits + 7) // 8)


# ---------------------------------------------------------------------------- cold start
COLD_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from semhash.index.lookup import HammingLookup
t1 = time.perf_counter()
index = HammingLookup.load(sys.argv[1], {"bench": 1})
t2 = time.perf_counter()
out = {"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_query_ms": {}}
for r, code in zip(json.loads(sys.argv[2]), json.loads(sys.argv[3])):
    t = time.perf_counter()
    found = len(index.search([code], r).ids)
    out["first_query_ms"][str(r)] = [(time.perf_counter() - t) * 1e3, found]
print(json.dumps(out))
"""


def _cold(lookup, distribution: str, n: int, queries: np.ndarray, radii: list[int]) -> list[dict[str, Any]]:
    """Save the lookup, then in a fresh process: import, memory-map it, and answer one query
    per radius (each a different code, so no answer is cached): what a cold `semhash query`
    pays for the lookup itself (the page cache is warm: the file was just written)."""
    import json
    import sys

    with tempfile.TemporaryDirectory(prefix="semhash-bench-") as work:
        path = Path(work) / "index.lookup"
        with common.Stopwatch() as sw:
            lookup.save(path, {"bench": 1})
        codes = [int(q) for q in queries[1 : 1 + len(radii)]]
        out = subprocess.run([sys.executable, "-c", COLD_PROCESS, str(path), json.dumps(radii), json.dumps(codes)],
                             capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
        cold = json.loads(out.stdout)
        size = path.stat().st_size
    common.log(f"[lookup]   semhash-cold  save {sw.seconds:.1f}s ({size / 2**20:.0f} MiB); fresh process: "
               f"import {cold['import_ms']:.0f} ms, load {cold['load_ms']:.1f} ms, first queries "
               + ", ".join(f"r={r}: {ms:.1f} ms" for r, (ms, _) in cold["first_query_ms"].items()))  # fmt: skip
    return [{
        "distribution": distribution, "n": n, "radius": int(r), "method": "semhash-cold", "answers": "one query",
        "queries": 1, "queries_per_s": 1e3 / ms, "mean_answer": found, "file_bytes": size, "save_s": sw.seconds,
        "import_ms": cold["import_ms"], "load_ms": cold["load_ms"], "first_query_ms": ms, "agrees": None,
        "build_s": None, "build_cpu_s": None, "bytes_per_code": None, "rss_bytes_per_code": None, "stopped_by": "done",
        "queries_per_cpu_s": None, "note": "fresh process: import + mmap load + this query",
    } for r, (ms, found) in cold["first_query_ms"].items()]  # fmt: skip


# ---------------------------------------------------------------------------- the run
def _time(run: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, args, batch: int) -> tuple[common.Timing, int]:
    """Time ``run`` (returns answer counts) over ``queries``; returns timing and total matches."""
    found = [0]

    def step(a: int, b: int) -> None:
        found[0] += int(run(queries[a:b]).sum())

    run(queries[: min(len(queries), 8)])  # warm: first-touch page faults, lazy setup
    timing = common.timed_batches(step, len(queries), batch=batch, max_seconds=args.max_seconds)
    return timing, found[0]


def _measure_size(distribution: str, n: int, args, methods: list[str], radii: list[int]) -> list[dict[str, Any]]:
    import faiss

    from semhash.index.lookup import HammingLookup, has_c_kernel

    bits = args.bits
    common.log(f"[lookup] {distribution} N={n:,}: generating codes")
    if distribution == "random":
        codes = common.random_codes(n, bits, seed=args.seed)
        rng = np.random.default_rng(args.seed + 7)
        queries = codes[rng.integers(0, n, args.queries)] if n else common.random_codes(args.queries, bits, seed=9)
    else:
        codes = common.clustered_codes(n, bits, seed=args.seed)
        queries = common.clustered_codes(args.queries, bits, seed=args.seed, sample_seed=args.seed + 99)
    ids = np.arange(1, n + 1, dtype=np.int64)  # row ids as the record hands them out

    # the reference answer sizes (semhash's lookup is checked against brute force by the tests)
    rss0 = common.rss_bytes()
    with common.Stopwatch() as sw:
        lookup = HammingLookup.build(ids, codes, bits)
    built = {"semhash": (sw, lookup.nbytes, common.rss_bytes() - rss0)}
    common.log(f"[lookup]   semhash build {sw.seconds:.2f}s ({sw.cpu_seconds:.2f} cpu-s), {lookup!r}")
    sizes = {r: lookup.search(queries, r).counts() for r in radii}
    rows: list[dict[str, Any]] = []

    def record(method: str, r: int, group: str, qs: np.ndarray, expected: int, timing, found, note: str = ""):
        build, nbytes, rss = built.get(method, (None, None, None))
        rows.append({
            "distribution": distribution, "n": n, "radius": r, "method": method, "answers": group,
            "queries": timing.items if timing else 0, "queries_per_s": timing.per_second if timing else None,
            "queries_per_cpu_s": timing.per_cpu_second if timing else None,
            "mean_answer": (found / timing.items) if timing and timing.items else None,
            "build_s": build.seconds if build else None, "build_cpu_s": build.cpu_seconds if build else None,
            "bytes_per_code": (nbytes / n) if nbytes and n else None,
            "rss_bytes_per_code": (rss / n) if rss and n else None,
            "stopped_by": timing.stopped_by if timing else None,
            "agrees": None if timing is None else found == expected_for(r, group, timing.items),
            "note": note,
        })  # fmt: skip

    groups: dict[int, dict[str, np.ndarray]] = {}
    for r in radii:
        small = sizes[r] <= args.small_answer
        groups[r] = {f"<= {args.small_answer}": np.flatnonzero(small), f"> {args.small_answer}": np.flatnonzero(~small)}

    def expected_for(r: int, group: str, n_timed: int) -> int:
        return int(sizes[r][groups[r][group][:n_timed]].sum())

    def contend(method: str, make: Callable[[int], Callable[[np.ndarray], np.ndarray]], batch: int) -> None:
        for r in radii:
            run = make(r)
            for group, which in groups[r].items():
                if len(which) == 0:
                    continue
                timing, found = _time(run, queries[which], args, batch)
                record(method, r, group, queries[which], 0, timing, found)
                common.log(f"[lookup]   {method:13s} r={r} answers {group}: {timing.per_second:12,.0f} q/s "
                           f"{timing.per_cpu_second:12,.0f} q/cpu-s "
                           f"({timing.items} queries, mean answer {found / timing.items:.1f})")

    if "semhash" in methods:
        contend("semhash", lambda r: (lambda q: lookup.search(q, r).counts()), 1000)
    if "semhash-numpy" in methods:
        built["semhash-numpy"] = built["semhash"]
        contend("semhash-numpy", lambda r: (lambda q: lookup.search(q, r, backend="numpy").counts()), 1000)
    if "semhash-cold" in methods:
        rows.extend(_cold(lookup, distribution, n, queries, radii))
    rows_note = "" if has_c_kernel() else "C kernel missing: semhash ran its NumPy backend"
    del lookup

    if "hash-probe" in methods:
        rss0 = common.rss_bytes()
        with common.Stopwatch() as sw:
            probe = HashProbe(ids, codes)
        built["hash-probe"] = (sw, probe.nbytes, common.rss_bytes() - rss0)
        common.log(f"[lookup]   hash-probe build {sw.seconds:.2f}s ({sw.cpu_seconds:.2f} cpu-s)")
        contend("hash-probe", lambda r: (lambda q, m=common.flip_masks(bits, r): probe.probe(q, m)), 1000)
        del probe

    packed = _pack(codes, bits)
    available = common.available_memory_bytes()
    if "faiss-hash" in methods and available and FAISS_HASH_BYTES_PER_CODE * n * 1.5 > available:
        for r in radii:
            for group in groups[r]:
                record("faiss-hash", r, group, queries[:0], 0, None, 0,
                       note=f"skipped: needs ~{FAISS_HASH_BYTES_PER_CODE * n / 2**30:.0f} GiB, "
                            f"{available / 2**30:.0f} GiB available")  # fmt: skip
        methods = [m for m in methods if m != "faiss-hash"]
    if "faiss-hash" in methods:
        b = int(min(bits, max(1, round(np.log2(max(n, 2))))))
        rss0 = common.rss_bytes()
        with common.Stopwatch() as sw:
            index = faiss.IndexBinaryHash(_faiss_bits(bits), b)
            index.add(packed)
        built["faiss-hash"] = (sw, None, common.rss_bytes() - rss0)
        common.log(f"[lookup]   faiss-hash (b={b}) build {sw.seconds:.2f}s ({sw.cpu_seconds:.2f} cpu-s)")

        def faiss_hash(r: int) -> Callable[[np.ndarray], np.ndarray]:
            index.nflip = r  # probe every hash key within r: exact for radius r

            def run(q: np.ndarray) -> np.ndarray:
                lims, _, _ = index.range_search(_pack(q, bits), r + 1)
                return np.diff(lims)

            return run

        contend("faiss-hash", faiss_hash, 1000)
        del index

    if "faiss-flat" in methods:
        if n > args.flat_max_n:
            for r in radii:
                for group in groups[r]:
                    record("faiss-flat", r, group, queries[:0], 0, None, 0,
                           note=f"skipped above N={args.flat_max_n:.0e}: a linear scan, ~1/N of 10^7's rate")
        else:
            rss0 = common.rss_bytes()
            with common.Stopwatch() as sw:
                flat = faiss.IndexBinaryFlat(_faiss_bits(bits))
                flat.add(packed)
            built["faiss-flat"] = (sw, flat.ntotal * flat.code_size, common.rss_bytes() - rss0)

            def faiss_flat(r: int) -> Callable[[np.ndarray], np.ndarray]:
                def run(q: np.ndarray) -> np.ndarray:
                    lims, _, _ = flat.range_search(_pack(q, bits), r + 1)
                    return np.diff(lims)

                return run

            contend("faiss-flat", faiss_flat, 20)
            del flat
    for row in rows:
        if row["method"] == "semhash" and rows_note:
            row["note"] = rows_note
    return rows


def _size(n: int) -> str:
    k = round(np.log10(n)) if n > 0 else 0
    return f"10^{k}" if n > 0 and 10**k == n else f"{n:,}"


def report(paths: list[str]) -> str:
    """The tables of docs/BENCHMARKS.md from result files: queries per CPU-second (wall
    queries/s in brackets) by method, then build time and memory."""
    import json

    rows = [row for path in paths for row in json.loads(Path(path).read_text())["rows"]]
    cold = [r for r in rows if r["method"] == "semhash-cold"]
    rows = [r for r in rows if r["method"] != "semhash-cold"]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    keys = sorted({(r["distribution"], r["n"], r["radius"], r["answers"]) for r in rows},
                  key=lambda k: (k[0] != "random", k[1], k[2], k[3].startswith(">")))  # fmt: skip
    speed = []
    for dist, n, radius, answers in keys:
        line: dict[str, Any] = {"codes": dist, "N": _size(n), "r": radius,
                                "answers": answers}  # fmt: skip
        for m in methods:
            hit = [r for r in rows if (r["distribution"], r["n"], r["radius"], r["answers"], r["method"])
                   == (dist, n, radius, answers, m)]  # fmt: skip
            if not hit or hit[0]["queries_per_s"] is None:
                line[m] = "skipped" if hit else "–"
                continue
            r = hit[0]
            line[m] = f"{common.fmt(r.get('queries_per_cpu_s'))} ({common.fmt(r['queries_per_s'])})"
            line["mean answer"] = common.fmt(r["mean_answer"]) if m == methods[0] else line.get("mean answer")
        if any(line.get(m) not in ("skipped", "–") for m in methods):  # a group no method timed: leave out
            speed.append(line)
    builds = []
    for dist, n in sorted({(r["distribution"], r["n"]) for r in rows}, key=lambda k: (k[0] != "random", k[1])):
        for m in methods:
            if m == "semhash-numpy":
                continue  # the same build as semhash
            hit = [r for r in rows if (r["distribution"], r["n"], r["method"]) == (dist, n, m) and r["build_s"]]
            if hit:
                r = hit[0]
                builds.append({"codes": dist, "N": _size(n), "method": m,
                               "build CPU-s (wall s)": f"{common.fmt(r.get('build_cpu_s'))} ({common.fmt(r['build_s'])})",
                               "bytes/code": r["bytes_per_code"] or (f"~{common.fmt(r['rss_bytes_per_code'])} (RSS growth)"
                                                                    if r["rss_bytes_per_code"] else None)})  # fmt: skip
    tables = []
    if speed:
        tables.append(common.table(speed, ["codes", "N", "r", "answers", "mean answer"] + methods))
    if builds:
        tables.append(common.table(builds, ["codes", "N", "method", "build CPU-s (wall s)", "bytes/code"]))
    if cold:
        lines = []
        for dist, n in sorted({(r["distribution"], r["n"]) for r in cold}, key=lambda k: (k[0] != "random", k[1])):
            here = {r["radius"]: r for r in cold if (r["distribution"], r["n"]) == (dist, n)}
            first = next(iter(here.values()))
            line = {"codes": dist, "N": _size(n), "file MiB": first["file_bytes"] / 2**20,
                    "import ms": first["import_ms"], "load ms": first["load_ms"]}  # fmt: skip
            for r, row in sorted(here.items()):
                line[f"first query r={r} ms"] = row["first_query_ms"]
            lines.append(line)
        tables.append(common.table(lines, list(lines[0])))
    return "\n\n".join(tables)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.report:
        print(report(args.report))
        return {}
    common.single_thread()
    import faiss

    faiss.omp_set_num_threads(1)
    from semhash.index.lookup import has_c_kernel

    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}: choose from {','.join(METHODS)}")
    radii = common.parse_ints(args.radii)
    payload: dict[str, Any] = {
        "experiment": "lookup",
        "command": "python -m benchmarks lookup " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("experiment", "out")
        ),
        "machine": common.machine_info(),
        "c_kernel": has_c_kernel(),
        "baseline": HashProbe.__doc__.strip(),
        "rows": [],
    }
    for distribution in args.distributions.split(","):
        for n in common.parse_sizes(args.sizes):
            payload["rows"] += _measure_size(distribution, n, args, methods, radii)
            payload["machine"]["load_average_end"] = common.load_average()
            path = common.write_json("lookup", payload, args.out)  # after every size: a long run keeps its rows
    columns = ["distribution", "n", "radius", "method", "answers", "queries_per_s", "queries_per_cpu_s", "mean_answer",
               "build_s", "build_cpu_s", "bytes_per_code", "queries", "agrees"]  # fmt: skip
    print(common.table(payload["rows"], columns))
    common.log(f"[lookup] wrote {path}")
    return payload
