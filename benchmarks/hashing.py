"""Hashing throughput: the local single-process path against Ray Data with 1 and 2 workers,
side by side in one run, on the same N small PNGs and the same model, plus Ray's start-up.

    nice -n 10 python -m benchmarks.hashing --home /tmp/pgray-home --model ae-default \\
        --images /tmp/pgray-bench/png100k --n 100000

Every configuration does the same work per file (semhash.index.ray_engine.hash_one_batch:
stat, read, sha256, decode_image, Hasher.hash, in batches of --batch-size), so the numbers
compare engines, not code paths; the SQLite insert of a real `semhash index` run is not in
them.  Configurations:

* ``local``            one process, NumPy's BLAS with its default threads
* ``local-1-thread``   one process, BLAS limited to one thread (threadpoolctl): one core's worth
* ``photos``           one process, one BLAS thread, on --photos synthetic 12-megapixel JPEGs
  (4000x3000, written once): what decoding real photos costs next to 28x28 PNGs
* ``ray-1``, ``ray-2`` a fresh local Ray (ray.init with 2 CPUs), 1 or 2 hashing actors; the
  driver receives the codes and writes the Parquet shards, as ``hash_files`` always does

CPU time is recorded beside wall time, because on a shared machine wall time measures the
share of the CPU a run got as much as the engine: ``hashing_cpu_s`` is the CPU time spent in
the per-file work (the local process's, or the Ray workers' summed, as ray_engine reports it),
``images_per_cpu_s`` what one dedicated core achieves, ``driver_cpu_s`` the Ray driver's own.

Ray's cost of starting: ``ray_init_s`` (ray.init) and ``first_batch_s`` (pipeline start to the
first hashed batch reaching the driver: actor start-up, model load, one batch).  Images/s are
over the whole run (start-up included, ray.init not) and steady (from the arrival times of the
batches at the driver, between 10% and 90% of the files).  The Ray codes are compared
with the local run's, file by file.  The machine's load average is recorded before and after:
on a shared machine the figures are noisy, so rerun the command on a quiet one.

Images: written once into --images (Fashion-MNIST + mnist-5k, repeated with a one-pixel change
per copy, as scripts/benchmark_index.py writes them) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks"


# --------------------------------------------------------------------------- shared helpers
def environment() -> dict:
    """Where and how a benchmark ran: enough to judge its noise."""
    import numpy

    return {
        "command": shlex.join([Path(sys.executable).name, "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "nice": os.nice(0),
        "loadavg_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def save_result(name: str, result: dict, out: str | Path | None = None) -> Path:
    result.setdefault("environment", {})["loadavg_end"] = list(os.getloadavg())
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- the images
def ensure_images(folder: Path, n: int) -> list[tuple[Path, str | None]]:
    """N PNGs in ``folder`` (written once, then reused), as the indexer's walk lists them."""
    from semhash.data import iter_image_files

    marker = folder / f".complete-{n}"
    if not marker.exists():
        sys.path.insert(0, str(ROOT / "scripts"))
        from benchmark_index import write_images

        print(f"writing {n} PNGs into {folder} (once)", file=sys.stderr)
        write_images(folder, n)
        marker.touch()
    files = list(iter_image_files(folder))
    if len(files) != n:
        raise SystemExit(f"{folder}: {len(files)} image files, expected {n}: delete the folder to rewrite it")
    return files


def ensure_photos(folder: Path, n: int) -> list[tuple[Path, str | None]]:
    """N synthetic 4000x3000 RGB JPEGs (smooth gradients + noise, quality 90), written once."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = folder / f"photo-{i:03d}.jpg"
        if not path.exists():
            y, x = np.mgrid[0:3000, 0:4000].astype(np.float32)
            base = np.stack([x / 4000, y / 3000, (x + y) / 7000], axis=-1) * 200
            noise = rng.normal(0, 12, (3000, 4000, 3)).astype(np.float32)
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        files.append((path, None))
    return files


# --------------------------------------------------------------------------- the runs
class Arrivals:
    """When each batch's results reached the caller: the steady rate is taken between 10% and
    90% of the files, away from start-up and the last stragglers."""

    def __init__(self):
        self.start = time.perf_counter()
        self.points: list[tuple[float, int]] = []  # (seconds since start, files done)

    def __call__(self, n: int) -> None:
        done = self.points[-1][1] + n if self.points else n
        self.points.append((time.perf_counter() - self.start, done))

    def steady_rate(self) -> float | None:
        if len(self.points) < 3:
            return None
        total = self.points[-1][1]
        lo = next(p for p in self.points if p[1] >= 0.1 * total)
        hi = next(p for p in self.points if p[1] >= 0.9 * total)
        return (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else None


def run_local(files, hasher, batch_size: int, threads: int | None) -> dict:
    from threadpoolctl import threadpool_limits

    from semhash.index.ray_engine import hash_one_batch

    codes: dict[str, int] = {}
    errors = 0
    raw = [os.fsencode(p) for p, _ in files]
    labels = [None if label is None else os.fsencode(label) for _, label in files]
    with threadpool_limits(limits=threads):
        arrivals = Arrivals()
        started = arrivals.start
        cpu_started = time.process_time()
        for s in range(0, len(raw), batch_size):
            out = hash_one_batch(hasher, raw[s : s + batch_size], labels[s : s + batch_size])
            arrivals(len(out["path"]))
            for path, code, error in zip(out["path"], out["code"], out["error"]):
                if error is None:
                    codes[path] = code
                else:
                    errors += 1
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    return {
        "seconds": seconds,
        "hashing_cpu_s": cpu,
        "driver_cpu_s": 0.0,
        "first_batch_s": arrivals.points[0][0],
        "steady_images_per_s": arrivals.steady_rate(),
        "errors": errors,
        "codes": codes,
    }


def run_ray(files, hasher_path: Path, workers: int, batch_size: int, shard_dir: Path) -> dict:
    import shutil

    import pyarrow.parquet as pq

    from semhash.index import ray_engine

    shutil.rmtree(shard_dir, ignore_errors=True)
    init_s = ray_engine.start_ray(num_cpus=2)
    arrivals = Arrivals()
    cpu_started = time.process_time()
    try:
        run = ray_engine.hash_files(
            files, hasher_path, shard_dir, num_workers=workers, batch_size=batch_size, on_batch=arrivals
        )
        driver_cpu = time.process_time() - cpu_started
    finally:
        ray_engine.stop_ray()
    table = pq.read_table(run.shards, columns=["path", "code"])
    codes = dict(zip(table.column("path").to_pylist(), table.column("code").to_pylist()))
    return {
        "seconds": run.seconds,
        "hashing_cpu_s": run.worker_cpu_seconds,
        "driver_cpu_s": driver_cpu,
        "first_batch_s": run.first_batch_seconds,
        "steady_images_per_s": arrivals.steady_rate(),
        "ray_init_s": init_s,
        "errors": len(run.errors),
        "shards": len(run.shards),
        "codes": codes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hashing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", required=True, help="workspace holding the model")
    parser.add_argument("--model", default=None, help="model name [default: the latest in --home]")
    parser.add_argument("--images", default="/tmp/semhash-bench/png100k", help="PNG folder (written once)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run")
    parser.add_argument("--configs", default="local,local-1-thread,photos,ray", help="what to run")
    parser.add_argument("--photos", type=int, default=20, help="synthetic 12-megapixel JPEGs for 'photos'")
    parser.add_argument("--out", default=None, help="JSON path [default: docs/benchmarks/hashing.json]")
    args = parser.parse_args(argv)

    from semhash.workspace import Workspace

    env = environment()
    ws = Workspace(args.home)
    model = ws.model(args.model)  # None: the latest
    hasher = model.load_hasher()
    files = ensure_images(Path(args.images), args.n)
    configs = args.configs.split(",")

    rows: list[dict] = []
    reference: dict[str, int] | None = None

    def record(name: str, result: dict, workers: int | None = None) -> None:
        nonlocal reference
        codes = result.pop("codes")
        n_ok = len(codes)
        row = {
            "config": name,
            "workers": workers,
            "images": n_ok,
            "images_per_s": n_ok / result["seconds"],
            "images_per_cpu_s": n_ok / result["hashing_cpu_s"],
            **result,
            "loadavg_after": list(os.getloadavg()),
        }
        if reference is None:
            reference = codes
        else:
            row["codes_differing_from_first_config"] = sum(codes.get(p) != c for p, c in reference.items())
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    if "local" in configs:
        record("local", run_local(files, hasher, args.batch_size, threads=None))
    if "local-1-thread" in configs:
        record("local-1-thread", run_local(files, hasher, args.batch_size, threads=1))
    if "photos" in configs:
        photos = ensure_photos(Path(args.images).parent / "photos-12mp", args.photos)
        result = run_local(photos, hasher, args.batch_size, threads=1)
        codes = result.pop("codes")
        photo_row = {
            "config": "photos",
            "images": len(codes),
            "image_size": "4000x3000 RGB JPEG",
            "images_per_s": len(codes) / result["seconds"],
            "images_per_cpu_s": len(codes) / result["hashing_cpu_s"],
            **result,
            "loadavg_after": list(os.getloadavg()),
        }
        rows.append(photo_row)  # other images: not compared with the reference codes
        print(json.dumps(photo_row), file=sys.stderr)
    if "ray" in configs:
        for workers in (int(w) for w in args.workers.split(",")):
            shard_dir = Path(args.images).parent / f"shards-ray-{workers}"
            record(f"ray-{workers}", run_ray(files, model.hasher_path, workers, args.batch_size, shard_dir), workers)

    result = {
        "experiment": "hashing",
        "environment": env,
        "model": {"name": model.name, "kind": model.kind, "bits": hasher.n_bits, "input_shape": list(hasher.input_shape)},
        "images": {"folder": str(Path(args.images).resolve()), "n": args.n, "batch_size": args.batch_size},
        "rows": rows,
    }
    path = save_result("hashing", result, args.out)
    print(f"wrote {path}")
    for row in rows:
        print(
            f"{row['config']:>15}: {row['images_per_s']:8.4g} images/s end to end, "
            f"{row.get('steady_images_per_s') or float('nan'):.0f} steady (10-90% of the files), {row['seconds']:.1f} s; "
            f"{row['images_per_cpu_s']:.4g} images per CPU-second hashing, driver {row['driver_cpu_s']:.1f} CPU-s" + (f", ray.init {row['ray_init_s']:.1f} s, first batch "
            f"{row['first_batch_s']:.1f} s" if "ray_init_s" in row else "")
        )


if __name__ == "__main__":
    main()
