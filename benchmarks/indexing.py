"""`semhash index` throughput (issue 10): images/s with 1 and with 2 hashing processes, side by
side in one run, on the same small PNGs and the same model, each into a fresh index.

    nice -n 10 python -m benchmarks indexing                       # 100,000 PNGs, workers 1,2
    python -m benchmarks indexing --n 2000 --workers 1,2           # a minute

What is timed is the whole library call a `semhash index` makes (walk, stat, read, sha256,
decode, hash, SQLite upserts one transaction per batch, the lookup cache at the end):
``index_folder(..., workers=W)``.  W = 1 hashes in the calling process, as before issue 10;
W > 1 runs a process pool, the SQLite writer staying in the calling process.  The model is a
random-weight encoder of the default autoencoder's shape (784-1000-500-30, what the time per
image depends on), one BLAS thread per process.

The PNGs (Fashion-MNIST and mnist-5k 28x28 images, repeated with a one-pixel change per copy)
are written once into --images and reused; how long writing them took is recorded beside them.
CPU time (this process and its pool) is recorded beside wall time, with the CPU count and the
load average before and after: on a shared machine wall time measures the share of the CPU a
run got as much as the code, so rerun the command on a quiet machine before quoting a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=100_000, help="PNG files (default 100,000)")
    p.add_argument("--workers", default="1,2", help="hashing processes, one run each, in this order (default 1,2)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", default="/tmp/semhash-bench/png-indexing", help="PNG folder (written once, reused)")
    p.add_argument("--work", default="/tmp/semhash-bench/indexing", help="scratch folder for the model and indexes")
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/indexing.json)")


def ensure_images(folder: Path, n: int) -> dict[str, Any]:
    """``n`` PNGs in ``folder``, written once; returns how and when they were made."""
    stamp = folder / f".complete-{n}.json"
    if stamp.exists():
        return {**json.loads(stamp.read_text()), "reused": True}
    sys.path.insert(0, str(common.REPO / "scripts"))
    from benchmark_index import write_images

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    common.log(f"[indexing] writing {n:,} PNGs into {folder} (once) ...")
    started, cpu = time.perf_counter(), time.process_time()
    write_images(folder, n)
    made = {"n": n, "generate_s": round(time.perf_counter() - started, 1),
            "generate_cpu_s": round(time.process_time() - cpu, 1), "load_average": common.load_average()}  # fmt: skip
    stamp.write_text(json.dumps(made))
    common.log(f"[indexing]   {made['generate_s']} s")
    return {**made, "reused": False}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from benchmarks.serve import random_weight_hasher, save_bench_model
    from semhash.index import index_folder
    from semhash.workspace import Workspace

    threadpool_limits(1)  # one BLAS thread in this process too: W processes use W cores
    images = ensure_images(Path(args.images), args.n)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    model = Workspace(home).model(save_bench_model(home, random_weight_hasher()))
    rows = []
    load_before = common.load_average()
    for workers in common.parse_ints(args.workers):
        index_path = work / f"index-w{workers}.sqlite"
        for old in work.glob(f"index-w{workers}.*"):
            old.unlink()
        common.log(f"[indexing] workers={workers}: indexing {args.n:,} PNGs ...")
        load = common.load_average()
        started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu_s()
        summary = index_folder(args.images, model, index_path, batch_size=args.batch_size, workers=workers,
                               progress=False)  # fmt: skip
        seconds = time.perf_counter() - started
        row = {
            "workers": workers,
            "images": summary.added,
            "skipped": summary.skipped,
            "seconds": round(seconds, 2),
            "images_per_s": round(summary.added / seconds, 1),
            "main_cpu_s": round(time.process_time() - cpu, 2),
            "pool_cpu_s": round(_children_cpu_s() - children, 2),
            "load_average_at_start": load,
        }
        row["images_per_cpu_s"] = round(summary.added / (row["main_cpu_s"] + row["pool_cpu_s"]), 1)
        rows.append(row)
        common.log(f"[indexing]   {json.dumps(row)}")
    base = next((r for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["speedup_vs_1"] = round(r["images_per_s"] / base["images_per_s"], 2) if base else None
    payload = {
        **common.run_header("indexing", load_before),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "images": {"folder": str(Path(args.images).resolve()), **images},
        "batch_size": args.batch_size,
        "model": "random-weight 784-1000-500-30 encoder (benchmarks.serve.random_weight_hasher)",
        "rows": rows,
        "target": "2 processes >= 1.8x one process (issue 10)",
    }
    path = common.write_json("indexing", payload, args.out)
    print(common.table(rows, ["workers", "images", "seconds", "images_per_s", "speedup_vs_1", "main_cpu_s",
                              "pool_cpu_s", "images_per_cpu_s", "load_average_at_start"]))  # fmt: skip
    print(f"\nPNGs: {images}; load average before {load_before}, after {payload['load_average_after']}, "
          f"{payload['cpus_usable']} CPUs; wrote {path}")
    return payload
