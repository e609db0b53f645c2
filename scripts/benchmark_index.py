#!/usr/bin/env python
"""Index scale: write N small PNGs, index them with a trained model, re-index (all
unchanged), and time radius-2 searches with both methods, side by side in one run.

    python scripts/benchmark_index.py --n 100000 --model-home /tmp/ws   # about 5-8 minutes

Needs a trained 28x28x1 model in --model-home (e.g. `semhash train --home /tmp/ws`); if
there is none, a 3-second ITQ model is fitted there (the index does not care which kind made
the codes). Images come from Fashion-MNIST (if installed) and mnist-5k, repeated with a
one-pixel change per copy so every file and content hash differs. Reports wall time, images/s
and the peak resident memory of the indexing process (ru_maxrss), and median query latency
for the lookup cache vs SQL enumeration of the 466 neighbour codes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int) -> None:
    from PIL import Image

    from semhash.data import load_builtin

    sources = []
    try:
        fm = load_builtin("fashion-mnist")
        sources.append((fm.images, fm.labels, fm.class_names))
    except Exception:
        pass
    m5 = load_builtin("mnist-5k")
    sources.append((m5.images, m5.labels, [f"digit-{c}" for c in m5.class_names]))
    pool = [(img, names[label]) for images, labels, names in sources for img, label in zip(images, labels)]
    for i in range(n):
        img, label = pool[i % len(pool)]
        arr = (img[..., 0] * 255).astype(np.uint8)
        copy = i // len(pool)
        if copy:
            arr = arr.copy()
            arr[copy % 28, (copy // 28) % 28] ^= 1  # distinct bytes, same picture
        target = folder / label
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(target / f"img-{i:06d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--model-home", default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default="docs/benchmarks/index_scale.json")
    args = parser.parse_args()

    from semhash.index import index_folder, search_codes
    from semhash.workspace import Workspace

    work = Path(args.workdir or tempfile.mkdtemp(prefix="semhash-index-bench-"))
    workspace = Workspace(args.model_home or work / "ws")
    try:
        model = workspace.model(None)
    except Exception:
        from semhash.train import train

        model = train("mnist-5k", "itq", {}, name="bench-itq", workspace=workspace, verbose=0).model
    folder = work / "images"
    started = time.time()
    if not folder.exists():
        write_images(folder, args.n)
    write_seconds = time.time() - started

    index_path = work / "index.sqlite"
    started = time.time()
    first = index_folder(folder, model, index_path, rebuild=True, progress=False)
    first_seconds = time.time() - started
    started = time.time()
    second = index_folder(folder, model, index_path, progress=False)
    second_seconds = time.time() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from semhash.index import load_index_codes

    codes = load_index_codes(index_path).codes
    rng = np.random.default_rng(0)
    sample = codes[rng.choice(len(codes), args.queries, replace=False)]
    timings = {}
    found = {}
    for method in ("lookup", "sql"):
        search_codes(index_path, sample[:2], 2, method=method)  # warm up (loads the lookup cache)
        per_query = []
        hits = 0
        for code in sample:
            t = time.perf_counter()
            result = search_codes(index_path, np.array([code], dtype=np.uint64), 2, method=method)
            per_query.append(time.perf_counter() - t)
            hits += len(result[0])
        timings[method] = statistics.median(per_query) * 1000
        found[method] = hits
    row = {
        "n_images": first.total,
        "model": model.name,
        "bits": model.bits,
        "write_pngs_seconds": round(write_seconds, 1),
        "index_seconds": round(first_seconds, 1),
        "index_images_per_second": round(first.added / first_seconds, 1),
        "reindex_unchanged_seconds": round(second_seconds, 1),
        "reindex_unchanged": second.unchanged,
        "peak_rss_mb": round(peak_mb),
        "query_r2_median_ms": {k: round(v, 2) for k, v in timings.items()},
        "lookup_over_sql_speed": round(timings["sql"] / timings["lookup"], 2),
        "mean_matches_r2": found["lookup"] / args.queries,
        "methods_agree": found["lookup"] == found["sql"],
    }
    print(json.dumps(row, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    sys.exit(main())
