"""A photo library's formats at the decoder's speed (issue 23): per format, in one run, the
CPU per file of the floor, a full decode, semhash's decode and semhash's whole per-file work;
`semhash index` with 1 and 2 workers (photos/s, CPU, peak memory); `--watch` latency.

    nice -n 10 python -m benchmarks photos                          # ~10 min, files made once
    python -m benchmarks photos --n jpeg=20,heic=4,webp=8,png=8 --watch-files 20   # a quick look

Files: synthetic photo-sized images made from the photos installed packages ship
(scikit-image's ``skimage.data``, scikit-learn's and matplotlib's sample photos: no
download), each a random 4:3 crop, maybe mirrored, upscaled (bicubic), its brightness
changed and sensor-like noise added (sigma 2) so that every file differs: 4000x3000 JPEG q90,
HEIC q90 (pillow-heif; x265 preset ultrafast, which writes a file in 1.6 s instead of 12) and WebP
q90, 2000x1500 PNG.  Written once into --files and reused.

Per format, one core (one BLAS thread, libvips with one thread), the files' bytes already in
memory for the decodes, ms of CPU per file:

* ``floor``: the fastest reduced decode of the same bytes to the size semhash needs (both
  sides >= 256 px): Pillow's (JPEG: ``draft``, the DCT scaling by 1/2..1/8; the others have
  no reduced decode in Pillow, so a full decode) and pyvips' ``thumbnail_buffer`` (shrink on
  load where the format allows) where pyvips is installed and reads the format;
* ``full``: Pillow's full-size decode;
* ``semhash_decode``: ``semhash.data.decode_views`` (decode, EXIF orientation, both tiers'
  inputs);
* ``end_to_end``: ``semhash.index.indexer.hash_batch`` over the files on disk (read, sha256,
  decode, PDQ near code with its 7 variants, the semantic code of a random-weight
  784-1000-500-30 encoder: the default autoencoder's arithmetic): the per-file work of
  `semhash index`, the SQLite writes aside.  Target: <= 1.3x the floor.

`semhash index FOLDER --workers W --quiet` for W = 1, 2, each a fresh process and a fresh
index, as a user runs it, --repeat times (the median run is kept; on a 2-core machine the
speed-up moves by +-0.07 from run to run): wall time, CPU (the process and its pool), peak RSS (the main
process; the largest worker).  photos/s = files / (wall - the same command's time on the
folder already indexed: start-up, walk and stat, which do not grow with the photos' size);
cores_busy = CPU / that time (above 1 with one worker where the decoder runs threads of its
own, which leaves a second worker less to add).  Target: 2 workers >= 1.8x one.

``--watch``: `semhash index DIR --watch` running; a JPEG of the set written into DIR, then the
time until its row is readable by another process (a SQLite reader polling every 2 ms),
one file at a time; median and 90th percentile over --watch-files files; once with an index
of the folder alone, and once per --watch-rows with that many other rows put in first
(random codes and near codes, `semhash import`: each burst refreshes the lookups from the
whole record).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

DESCRIPTION = __doc__
FORMATS = {  # name -> (extension, size, Pillow format, save options)
    "jpeg": (".jpg", (4000, 3000), "JPEG", {"quality": 90}),
    "heic": (".heic", (4000, 3000), "HEIF", {"quality": 90, "enc_params": {"preset": "ultrafast"}}),  # x265 at its default preset: 12 s a file
    "webp": (".webp", (4000, 3000), "WEBP", {"quality": 90}),
    "png": (".png", (2000, 1500), "PNG", {}),
}
DEFAULT_N = "jpeg=200,heic=24,webp=40,png=40"
NEAR_MIN_SIDE = 256  # semhash decodes to at least this on both sides (the near code's input)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", default=DEFAULT_N, help=f"files per format (default {DEFAULT_N})")
    p.add_argument("--files", default="/tmp/semhash-bench/photos", help="where the files are written (once) and reused")
    p.add_argument("--work", default="/tmp/semhash-bench/photos-work", help="scratch folder: model, indexes, the watched folder")
    p.add_argument("--workers", default="1,2", help="`semhash index --workers` values, one run each")
    p.add_argument("--repeat", type=int, default=3, help="`semhash index` runs per worker count (the median is kept)")
    p.add_argument("--watch-files", type=int, default=100, help="files written into the watched folder, one at a time")
    p.add_argument("--watch-rows", default="0,100000", help="other rows in the watched index, one latency run each (default 0,100000)")
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/photos.json)")


# --------------------------------------------------------------------------- the files
def _variant(source: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    height, width = source.shape[:2]
    aspect = size[0] / size[1]
    crop_w = int(min(width, height * aspect) * rng.uniform(0.8, 1.0))
    crop_h = int(crop_w / aspect)
    x, y = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    img = Image.fromarray(source[y : y + crop_h, x : x + crop_w])
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    big = np.asarray(img.resize(size, Image.Resampling.BICUBIC), np.float32)
    big = big * rng.uniform(0.85, 1.15) + rng.normal(0, 2.0, big.shape).astype(np.float32)
    return np.clip(big, 0, 255).astype(np.uint8)


def ensure_files(folder: Path, counts: dict[str, int]) -> dict[str, list[Path]]:
    """``counts[fmt]`` files of each format under ``folder/<fmt>/``, written once."""
    from PIL import Image

    from semhash.formats import heif_available

    sources = [s for group in common.shipped_photos()[:2] for s in group if min(s.shape[:2]) >= 256]
    files = {}
    for name, n in counts.items():
        ext, size, pillow_format, options = FORMATS[name]
        if name == "heic" and not heif_available():
            raise SystemExit("HEIC needs pillow-heif: pip install 'semhash[photos]'")
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        paths = [sub / f"photo-{i:04d}{ext}" for i in range(n)]
        for extra in set(sub.glob(f"photo-*{ext}")) - set(paths):  # from a run with more: the index runs take the folder
            extra.unlink()
        todo = [p for p in paths if not p.exists()]
        if todo:
            common.log(f"[photos] writing {len(todo)} {name} files of {size[0]}x{size[1]} into {sub} (once) ...")
        for i, path in enumerate(paths):
            if path.exists():
                continue
            rng = np.random.default_rng(i)
            pixels = _variant(sources[i % len(sources)], size, rng)
            partial = path.with_name("." + path.name)
            Image.fromarray(pixels).save(partial, pillow_format, **options)
            partial.rename(path)
        files[name] = paths
    return files


# --------------------------------------------------------------------------- per-file CPU
def _cpu_ms_per_file(fn, items) -> float:
    fn(items[0])  # warm: the decoder's library loaded, caches filled
    started = time.process_time()
    for item in items:
        fn(item)
    return 1000 * (time.process_time() - started) / len(items)


def _pillow_floor(data: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.format in ("JPEG", "MPO"):
            img.draft("RGB", (NEAR_MIN_SIDE, NEAR_MIN_SIDE))
        img.load()


def _pillow_full(data: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()


def _vips_floor(data: bytes) -> None:
    import pyvips

    # both sides at least NEAR_MIN_SIDE, as semhash needs them (the files are landscape)
    pyvips.Image.thumbnail_buffer(data, 100_000, height=NEAR_MIN_SIDE).write_to_memory()


def _vips_reads(data: bytes) -> str | None:
    """None where pyvips can make the floor of ``data``, else why not."""
    try:
        import pyvips  # noqa: F401 - installed and its library loads
    except (ImportError, OSError) as exc:
        return f"pyvips not installed ({type(exc).__name__})"
    try:
        _vips_floor(data)
    except Exception as exc:  # noqa: BLE001 - pyvips-binary has no HEVC decoder, for one
        return " ".join(str(exc).split())[:160]
    return None


def decode_costs(paths: list[Path], hasher) -> dict[str, Any]:
    from semhash.data import decode_views
    from semhash.index.indexer import hash_batch

    blobs = [p.read_bytes() for p in paths]
    shape = hasher.input_shape
    row: dict[str, Any] = {"files": len(paths), "mb_per_file": round(sum(map(len, blobs)) / len(blobs) / 1e6, 2)}
    row["floor_pillow_ms"] = _cpu_ms_per_file(_pillow_floor, blobs)
    why = _vips_reads(blobs[0])
    row["floor_pyvips_ms"] = None if why else _cpu_ms_per_file(_vips_floor, blobs)
    row["pyvips_note"] = why
    row["floor_ms"] = min(v for v in (row["floor_pillow_ms"], row["floor_pyvips_ms"]) if v is not None)
    row["full_decode_ms"] = _cpu_ms_per_file(_pillow_full, blobs)
    row["semhash_decode_ms"] = _cpu_ms_per_file(lambda b: decode_views(paths[0], shape, data=b), blobs)
    batches = [[(p, None) for p in paths[i : i + 16]] for i in range(0, len(paths), 16)]
    hash_batch(hasher, batches[0][:1])
    started = time.process_time()
    for batch in batches:
        outcomes = hash_batch(hasher, batch)
        bad = [text for kind, text, *_ in outcomes if kind == "skip"]
        if bad:
            raise SystemExit(f"[photos] a file could not be hashed: {bad[0]}")
    row["end_to_end_ms"] = 1000 * (time.process_time() - started) / len(paths)
    row["end_to_end_vs_floor"] = row["end_to_end_ms"] / row["floor_ms"]
    row["semhash_decode_vs_floor"] = row["semhash_decode_ms"] / row["floor_ms"]
    return row


# --------------------------------------------------------------------------- semhash index
_RUN = """
import json, os, sys, threading, time
started = time.perf_counter()
# peak RSS from the kernel's high-water marks (VmHWM): this process's (its memory map is new
# since exec, unlike ru_maxrss, which exec keeps from the benchmark that started it) and its
# pool workers', sampled every 20 ms while they live
def hwm_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0
workers = {}
def sample():
    while True:
        for task in os.listdir("/proc/self/task"):
            try:
                kids = open(f"/proc/self/task/{task}/children").read().split()
            except OSError:
                continue
            for pid in kids:
                workers[pid] = max(workers.get(pid, 0.0), hwm_mb(pid))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
from semhash.cli import main
try:
    main(sys.argv[2:], prog_name="semhash", standalone_mode=False)
finally:
    import resource
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(sys.argv[1], "w") as out:
        json.dump({"inside_s": time.perf_counter() - started, "cpu_s": me.ru_utime + me.ru_stime,
                   "pool_cpu_s": kids.ru_utime + kids.ru_stime, "rss_mb": hwm_mb("self"),
                   "worker_rss_mb": max(workers.values(), default=None)}, out)
"""


def semhash_index(folder: Path, home: Path, index: Path, workers: int, work: Path) -> dict[str, Any]:
    """One `semhash index` in a fresh process: wall time and its own rusage."""
    report = work / "rusage.json"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _RUN, str(report), "index", str(folder), "--workers", str(workers), "--quiet",
                           "--json", "--home", str(home), "--index", str(index)], capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"[photos] semhash index failed: {done.stderr.strip()[-500:]}")
    return {"wall_s": wall, **json.loads(report.read_text()), "summary": json.loads(done.stdout)}


def index_runs(name: str, folder: Path, n: int, home: Path, work: Path, workers_list: list[int], repeat: int) -> list[dict[str, Any]]:
    """`semhash index` on the folder with each worker count, ``repeat`` times each (the run
    with the median photos/s is kept, every run's photos/s listed beside it)."""
    rows = []
    for workers in workers_list:
        index = work / f"index-{name}-w{workers}.sqlite"
        runs = []
        for _ in range(repeat):
            for old in work.glob(index.name + "*"):
                old.unlink()
            common.log(f"[photos] {name}: semhash index --workers {workers} ({n} files) ...")
            run = semhash_index(folder, home, index, workers, work)
            again = semhash_index(folder, home, index, workers, work)  # everything unchanged: the fixed cost
            if run["summary"]["added"] != n or again["summary"]["unchanged"] != n:
                raise SystemExit(f"[photos] {name}: expected {n} files indexed, got {run['summary']}")
            hashing_s = run["wall_s"] - again["wall_s"]
            cpu_s = run["cpu_s"] + run["pool_cpu_s"] - again["cpu_s"]
            runs.append({
                "format": name, "workers": workers, "files": n, "wall_s": round(run["wall_s"], 2),
                "fixed_s": round(again["wall_s"], 2), "photos_per_s": round(n / hashing_s, 2),
                "cpu_ms_per_file": round(1000 * cpu_s / n, 1),
                # cores kept busy while hashing: above 1 with one worker where the decoder has threads of its own
                "cores_busy": round(cpu_s / hashing_s, 2),
                "rss_mb": round(run["rss_mb"]), "worker_rss_mb": round(run["worker_rss_mb"]) if run["worker_rss_mb"] else None,
            })  # fmt: skip
            common.log(f"[photos]   {json.dumps(runs[-1])}")
        runs.sort(key=lambda r: r["photos_per_s"])
        rows.append({**runs[len(runs) // 2], "photos_per_s_runs": [r["photos_per_s"] for r in runs]})
    one = next((r for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["speedup_vs_1"] = round(r["photos_per_s"] / one["photos_per_s"], 2) if one else None
    return rows


# --------------------------------------------------------------------------- --watch
def _fill(index: Path, home: Path, rows: int, n_bits: int) -> None:
    """``rows`` rows elsewhere in the index (fake paths, random codes and near codes), put in
    with `semhash import`: a library the watched folder is a small part of."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.serve import BENCH_MODEL

    rng = np.random.default_rng(0)
    source = index.with_suffix(".parquet")
    pq.write_table(pa.table({
        "path": [f"/semhash-benchmark/library/{i:07d}.jpg" for i in range(rows)],
        "code": pa.array(rng.integers(0, 1 << n_bits, rows, dtype=np.uint64)),
        "near_code": pa.array([bytes(c) for c in rng.integers(0, 256, (rows, 32), dtype=np.uint8)], pa.binary()),
    }), source)  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "semhash", "import", str(source), "--model", BENCH_MODEL, "--index", str(index),
                           "--home", str(home), "--quiet"], capture_output=True, text=True)  # fmt: skip
    source.unlink()
    if done.returncode != 0:
        raise SystemExit(f"[photos] semhash import failed: {done.stderr.strip()[-500:]}")


def watch_latency(files: list[Path], home: Path, work: Path, n: int, rows: int = 0, n_bits: int = 30) -> dict[str, Any]:
    """Seconds from a file's creation in the watched folder to its row being readable, in an
    index holding ``rows`` other rows."""
    import shutil
    import sqlite3

    from semhash.index.pathkeys import path_key

    folder, index = work / "watched", work / "index-watch.sqlite"
    shutil.rmtree(folder, ignore_errors=True)
    for old in work.glob(index.name + "*"):
        old.unlink()
    folder.mkdir(parents=True)
    if rows:
        _fill(index, home, rows, n_bits)
    shutil.copy(files[0], folder / "first.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "semhash", "index", str(folder), "--watch", "--quiet", "--home", str(home),
                             "--index", str(index)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    latencies = []
    try:
        for line in proc.stderr:  # wait for the watch to start
            if line.startswith("watching"):
                break
        else:
            raise SystemExit("[photos] semhash index --watch ended before watching")
        con = sqlite3.connect(index)
        blobs = [p.read_bytes() for p in files]
        for i in range(n):
            target = folder / f"new-{i:04d}.jpg"
            key = path_key(target.resolve())
            created = time.perf_counter()
            with open(target, "wb") as out:
                out.write(blobs[i % len(blobs)])
            deadline = created + 60
            while con.execute("SELECT 1 FROM images WHERE path = ?", (key,)).fetchone() is None:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"[photos] {target.name}: no row after 60 s")
                time.sleep(0.002)
            latencies.append(time.perf_counter() - created)
        con.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    ms = sorted(1000 * s for s in latencies)
    return {"files": n, "index_rows": rows + n + 1, "median_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1), "exit_status_on_sigterm": proc.returncode}  # fmt: skip


# --------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("VIPS_CONCURRENCY", "1")  # one core's worth, as the Pillow decodes
    from threadpoolctl import threadpool_limits

    from benchmarks.serve import random_weight_hasher, save_bench_model
    from semhash.workspace import Workspace

    threadpool_limits(1)
    counts = {name: int(n) for name, n in (part.split("=") for part in args.n.split(","))}
    unknown = set(counts) - set(FORMATS)
    if unknown:
        raise SystemExit(f"unknown formats {sorted(unknown)}: use {', '.join(FORMATS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    model = Workspace(home).model(save_bench_model(home, random_weight_hasher()))
    hasher = model.load_hasher()
    files = ensure_files(Path(args.files), counts)
    load_before = common.load_average()

    decode_rows, index_rows = [], []
    for name, paths in files.items():
        common.log(f"[photos] {name}: per-file CPU of the floor, a full decode, semhash's ...")
        row = {"format": name, "size": "x".join(map(str, FORMATS[name][1])), **decode_costs(paths, hasher)}
        decode_rows.append(row)
        common.log(f"[photos]   {json.dumps(row)}")
    for name, paths in files.items():
        index_rows += index_runs(name, paths[0].parent, len(paths), home, work, common.parse_ints(args.workers), args.repeat)
    watch, watch_larger = None, []
    if args.watch_files and "jpeg" in files:
        for rows in common.parse_ints(args.watch_rows):
            common.log(f"[photos] --watch latency over {args.watch_files} JPEGs, {rows:,} other rows in the index ...")
            result = watch_latency(files["jpeg"], home, work, args.watch_files, rows, hasher.n_bits)
            common.log(f"[photos]   {json.dumps(result)}")
            if watch is None:
                watch = result  # the first (an index of the folder alone): the headline
            else:
                watch_larger.append(result)

    payload = {
        **common.run_header("photos", load_before),
        "model": "random-weight 784-1000-500-30 encoder (benchmarks.serve.random_weight_hasher), 28x28 grey input",
        "decode": decode_rows,
        "index": index_rows,
        "watch": watch,
        "watch_larger_index": watch_larger,
        "targets": {"end_to_end_vs_floor": "<= 1.3 per format", "two_workers_vs_one": ">= 1.8"},
    }
    path = common.write_json("photos", payload, args.out)
    print(common.table(decode_rows, ["format", "size", "mb_per_file", "floor_pillow_ms", "floor_pyvips_ms", "full_decode_ms",
                                     "semhash_decode_ms", "end_to_end_ms", "end_to_end_vs_floor"]))  # fmt: skip
    print()
    print(common.table(index_rows, ["format", "workers", "files", "photos_per_s", "photos_per_s_runs", "speedup_vs_1",
                                    "cpu_ms_per_file", "cores_busy", "rss_mb", "worker_rss_mb", "fixed_s"]))  # fmt: skip
    for w in [watch, *watch_larger] if watch else []:
        print(f"\n--watch: median {w['median_ms']} ms, p90 {w['p90_ms']} ms from creation to a readable row "
              f"({w['files']} files, {w['index_rows']:,} rows in the index at the end)")  # fmt: skip
    print(f"\nload average before {load_before}, after {payload['load_average_after']}; wrote {path}")
    return payload
