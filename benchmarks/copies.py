"""Copies: does each hash find an edited copy of a real photograph, and nothing else?

Photos that installed packages ship (no download): scikit-image's ``skimage.data`` photos
and its 200 small face photos, matplotlib's sample photo, scikit-learn's two sample photos,
cut into non-overlapping 64 px tiles enlarged 2x (Lanczos) to 128 px; a tile is kept when
PDQ can hash it (quality >= 50) and it is distinct from every tile kept before (> 40 PDQ bits
and > 10 pHash bits apart), so that a copy's only right match is its own original.  The
tiles of scikit-learn's and matplotlib's photos are held out as unrelated queries; the rest
form the database.  A seeded sample of database tiles is copied
with each edit (JPEG q50, resize x0.5, gamma 0.7, 5% crop, 4 degree rotation, horizontal flip,
10% padding, a text/logo overlay, blur) and each copy is a query.

Per hash and edit: the recall at the loosest threshold whose precision is >= 99% (a match is
right only when it is the copy's own original), and that threshold; per hash: the share of
unrelated photos with any match at the hash's default threshold, and CPU ms per image.
Hashes: semhash's near tier (PDQ, the query expanded to its 8 dihedral codes, as `semhash
query` does), PDQ without the dihedral codes, imagehash's pHash and dHash (64 bits).

Scale: the near lookup's query rate at 10^6 and 10^7 codes and its all-pairs join (what
`semhash duplicates` runs) at 10^5 and 10^6, on random codes with planted copies.

    python -m benchmarks copies                 # docs/benchmarks/copies.json
    python -m benchmarks copies --only-duplicates --duplicates-at 10000000
                                                # docs/benchmarks/copies_duplicates.json
"""

from __future__ import annotations

import io
import time

import numpy as np

from benchmarks.common import log, machine_info, shipped_photos, table, write_json

DESCRIPTION = __doc__
DEFAULT_THRESHOLD = {"semhash near (PDQ, dihedral)": 31, "PDQ": 31, "pHash": 10, "dHash": 10}


def add_arguments(parser) -> None:
    parser.add_argument("--tile", type=int, default=64, help="tile side in the photos' own pixels")
    parser.add_argument("--upscale", type=int, default=2, help="each tile enlarged this many times (Lanczos) before it is used")
    parser.add_argument("--copies", type=int, default=200, help="database tiles copied per edit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="1000000,10000000", help="codes for the query-rate measurement")
    parser.add_argument("--duplicates-at", default="100000,1000000", help="indexed images for the whole `semhash duplicates` run")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale measurements")
    parser.add_argument("--only-duplicates", action="store_true",
                        help="only the whole `semhash duplicates` runs (at --duplicates-at), into their own JSON")
    parser.add_argument("--out", default=None)


def _tiles(images, side: int, upscale: int = 1):
    from PIL import Image

    out = []
    for image in images:
        h, w = image.shape[:2]
        for y in range(0, h - side + 1, side):
            for x in range(0, w - side + 1, side):
                tile = np.ascontiguousarray(image[y : y + side, x : x + side])
                if upscale > 1:
                    tile = np.asarray(Image.fromarray(tile).resize((side * upscale, side * upscale), Image.Resampling.LANCZOS))
                out.append(tile)
    return out


def _distinct(tiles):
    """Tiles with detail (PDQ quality >= 50: plain sky or black space is no photo to find
    copies of) and distinct from each other: a tile within 40 PDQ bits or 10 pHash bits of
    one kept before is left out, so that the only right match of a copy is its original."""
    import imagehash
    from PIL import Image

    from semhash.perceptual import NEAR_SIDE, near_code
    from semhash.tiers import MIN_QUALITY

    kept, pdq, phash = [], [], []
    for tile in tiles:
        code, quality = near_code(np.asarray(Image.fromarray(tile).resize((NEAR_SIDE, NEAR_SIDE), Image.Resampling.LANCZOS)))
        ph = np.packbits(np.asarray(imagehash.phash(Image.fromarray(tile)).hash, np.uint8).reshape(-1))
        if quality < MIN_QUALITY:
            continue
        if pdq and (np.bitwise_count(np.bitwise_xor(np.array(pdq), code)).sum(1).min() <= 40
                    or np.bitwise_count(np.bitwise_xor(np.array(phash), ph)).sum(1).min() <= 10):  # fmt: skip
            continue
        kept.append(tile)
        pdq.append(code)
        phash.append(ph)
    return kept


def _copy(tile: np.ndarray, edit: str) -> np.ndarray:
    """The copy an edit of :mod:`semhash.edits` makes, saved and decoded back (RGB)."""
    from PIL import Image

    from semhash.edits import edited_bytes

    with Image.open(io.BytesIO(edited_bytes(Image.fromarray(tile), edit))) as img:
        return np.asarray(img.convert("RGB"))


def _hashers():
    """name -> image (RGB uint8 array) -> ((V, bytes) uint8 codes, first is the image's own)."""
    import imagehash
    from PIL import Image

    from semhash.perceptual import NEAR_SIDE, near_code, near_codes

    def near_input(image):
        return np.asarray(Image.fromarray(image).resize((NEAR_SIDE, NEAR_SIDE), Image.Resampling.LANCZOS))

    def packed(h):
        return np.packbits(np.asarray(h.hash, dtype=np.uint8).reshape(-1))[None, :]

    return {
        "semhash near (PDQ, dihedral)": lambda im: near_codes(near_input(im))[0],
        "PDQ": lambda im: near_code(near_input(im))[0][None, :],
        "pHash": lambda im: packed(imagehash.phash(Image.fromarray(im))),
        "dHash": lambda im: packed(imagehash.dhash(Image.fromarray(im))),
    }


def _distances(queries: np.ndarray, database: np.ndarray, bound: int | None = -1) -> np.ndarray:
    """(Q, V, B) x (N, B) -> (Q, N): the query's own code's distance, or a variant's (its
    rotations and mirrors) when that is smaller and within ``bound`` (default DIHEDRAL_MAX,
    as the near tier counts them: :class:`semhash.index.tiers.NearIndex`; None: unbounded)."""
    from semhash.tiers import DIHEDRAL_MAX

    bound = DIHEDRAL_MAX if bound == -1 else bound
    d = np.bitwise_count(np.bitwise_xor(queries[:, :, None, :], database[None, None, :, :])).sum(axis=-1)
    own = d[:, 0, :]
    if d.shape[1] == 1:
        return own
    variants = d[:, 1:, :].min(axis=1)
    if bound is None:
        return np.minimum(own, variants)
    return np.minimum(own, np.where(variants <= bound, variants, np.iinfo(d.dtype).max))


#: bounds on a rotated or mirrored match tried by the sweep (None: none)
DIHEDRAL_BOUNDS = (31, 36, 40, 44, 48, 56, None)
NEAR = "semhash near (PDQ, dihedral)"


def _at(d: np.ndarray, truth: np.ndarray, t: int) -> tuple[float, float]:
    """(recall, precision) at threshold ``t``."""
    hits = d[np.arange(len(truth)), truth]
    predicted, correct = int((d <= t).sum()), int((hits <= t).sum())
    return correct / len(truth), correct / predicted if predicted else 1.0


def _best_recall(d: np.ndarray, truth: np.ndarray, max_t: int) -> tuple[float, int, float]:
    """(recall, threshold, precision) at the loosest threshold with precision >= 0.99."""
    best = (0.0, -1, 1.0)
    hits = d[np.arange(len(truth)), truth]
    for t in range(0, max_t + 1):
        predicted = int((d <= t).sum())
        correct = int((hits <= t).sum())
        precision = correct / predicted if predicted else 1.0
        if precision >= 0.99:
            best = (correct / len(truth), t, precision)
    return best


def run(args) -> dict:
    from PIL import Image

    if args.only_duplicates:
        sizes = [int(x) for x in args.duplicates_at.split(",")]
        payload = {"machine": machine_info(), "duplicates_command": {n: _duplicates_run(n, args.seed) for n in sizes}}
        path = write_json("copies_duplicates", payload, args.out)
        log(f"wrote {path}")
        return payload

    from semhash.edits import EDITS

    rng = np.random.default_rng(args.seed)
    database_images, held_out_images, faces = shipped_photos()
    side = args.tile * args.upscale
    face_tiles = [np.asarray(Image.fromarray(f).resize((side, side), Image.Resampling.LANCZOS)) for f in faces]
    database = _distinct(_tiles(database_images, args.tile, args.upscale) + face_tiles)
    unrelated = _distinct(_tiles(held_out_images, args.tile, args.upscale))
    chosen = np.sort(rng.choice(len(database), min(args.copies, len(database)), replace=False))
    log(f"{len(database)} database tiles, {len(unrelated)} unrelated, {len(chosen)} copied per edit")
    hashers = _hashers()
    results, costs, false_matches, thresholds_used = {}, {}, {}, {}
    near_queries: dict[str, np.ndarray] = {}
    near_db = None
    copies = {edit: [_copy(database[i], edit) for i in chosen] for edit in EDITS}
    for name, hasher in hashers.items():
        started = time.process_time()
        db_codes = np.stack([hasher(t)[0] for t in database])
        costs[name] = 1000 * (time.process_time() - started) / len(database)
        max_t = db_codes.shape[1] * 8 // 2
        results[name] = {}
        for edit in EDITS:
            queries = np.stack([hasher(c) for c in copies[edit]])
            if name == NEAR:
                near_queries[edit], near_db = queries, db_codes
            d = _distances(queries, db_codes)
            recall, t, precision = _best_recall(d, chosen, max_t)
            at_default = _at(d, chosen, DEFAULT_THRESHOLD[name])
            results[name][edit] = {"recall": round(recall, 3), "threshold": t, "precision": round(precision, 3),
                                   "recall_at_default": round(at_default[0], 3), "precision_at_default": round(at_default[1], 3)}  # fmt: skip
        exact = np.stack([hasher(database[i]) for i in chosen])
        d = _distances(exact, db_codes)
        recall, t, precision = _best_recall(d, chosen, max_t)
        at_default = _at(d, chosen, DEFAULT_THRESHOLD[name])
        results[name]["exact_copy"] = {"recall": round(recall, 3), "threshold": t, "precision": round(precision, 3),
                                       "recall_at_default": round(at_default[0], 3), "precision_at_default": round(at_default[1], 3)}  # fmt: skip
        unrelated_codes = np.stack([hasher(u) for u in unrelated])
        d = _distances(unrelated_codes, db_codes)
        thresholds_used[name] = DEFAULT_THRESHOLD[name]
        false_matches[name] = round(float((d.min(axis=1) <= DEFAULT_THRESHOLD[name]).mean()), 4)
        log(f"{name}: {costs[name]:.2f} ms/image; " + ", ".join(f"{e} {results[name][e]['recall']}" for e in EDITS))
    # the bound on rotated and mirrored matches: recall at >= 99% precision for each
    sweep = {}
    for bound in DIHEDRAL_BOUNDS:
        sweep["none" if bound is None else str(bound)] = {
            edit: round(_best_recall(_distances(near_queries[edit], near_db, bound), chosen, 128)[0], 3) for edit in EDITS
        }
    log(f"dihedral bound sweep: {sweep}")
    rows = [{"hash": name, **{e: results[name][e]["recall"] for e in ("exact_copy", *EDITS)},
             "unrelated_with_a_match": false_matches[name], "cpu_ms_per_image": round(costs[name], 2)} for name in hashers]  # fmt: skip
    print(table(rows, ["hash", "exact_copy", *EDITS, "unrelated_with_a_match", "cpu_ms_per_image"]))
    at_default = [{"hash": name, **{e: results[name][e]["recall_at_default"] for e in ("exact_copy", *EDITS)}} for name in hashers]
    print("recall at each hash's default threshold:")
    print(table(at_default, ["hash", "exact_copy", *EDITS]))
    cost_320 = _near_cost_320(database_images, args.seed)
    scale = {} if args.no_scale else _scale([int(x) for x in args.scale.split(",")], args.seed)
    if not args.no_scale:
        scale["duplicates_command"] = {n: _duplicates_run(n, args.seed) for n in (int(x) for x in args.duplicates_at.split(","))}
        scale["imagededup"] = _imagededup_note()
    payload = {
        "machine": machine_info(),
        "tile": args.tile,
        "upscale": args.upscale,
        "database_tiles": len(database),
        "unrelated_tiles": len(unrelated),
        "copies_per_edit": int(len(chosen)),
        "recall_at_99_precision": results,
        "unrelated_with_a_match_at_default_threshold": false_matches,
        "default_thresholds": thresholds_used,
        "dihedral_bound_sweep": sweep,
        "cpu_ms_per_image": {k: round(v, 3) for k, v in costs.items()},
        "near_cost_320_jpeg": cost_320,
        "scale": scale,
    }
    path = write_json("copies", payload, args.out)
    log(f"wrote {path}")
    return payload


def _scale(sizes: list[int], seed: int) -> dict:
    """The near lookup's query rate (one core, 2,000 queries 4 bits from an indexed code,
    threshold 31) with each word layout, and its all-pairs join (what `semhash duplicates`
    runs) up to 10^6 codes, on random codes with 1% planted copies (a few bits flipped)."""
    from semhash.index.near_lookup import NARROW, WIDE, WIDER, NearLookup, layout_for

    names = {NARROW: "16x16 bits", WIDE: "12x21-22 bits", WIDER: "11x23-24 bits"}
    rng = np.random.default_rng(seed)
    out = {"queries_per_s": {}, "layout_used": {}, "all_pairs_s": {}, "build_s": {}}
    for n in sorted({*sizes, 100_000}):
        codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        planted = rng.integers(0, n, n // 100)
        codes[rng.integers(0, n, n // 100)] = codes[planted]
        queries = codes[rng.integers(0, n, 2000)].copy()
        queries[:, :2] ^= 0x11  # 4 bits flipped
        out["layout_used"][n] = names[layout_for(n)]
        for layout, name in names.items():
            if n not in sizes and layout != layout_for(n):
                continue
            started = time.perf_counter()
            lookup = NearLookup(np.arange(n), codes, layout)
            out["build_s"].setdefault(n, {})[name] = round(time.perf_counter() - started, 1)
            started = time.perf_counter()
            lookup.search(queries, 31)
            out["queries_per_s"].setdefault(n, {})[name] = round(len(queries) / (time.perf_counter() - started))
            if layout == layout_for(n) and n <= 1_000_000:
                started = time.perf_counter()
                lookup.pairs(31)
                out["all_pairs_s"][n] = round(time.perf_counter() - started, 2)
            del lookup
        log(f"scale {n}: {out}")
        del codes
    return out


# peak memory from VmHWM: getrusage's ru_maxrss of a child started by a large process
# reports the parent's peak (Linux keeps it across fork and exec); VmHWM is this process's own
_MEASURED = """
import sys, time
from semhash.cli import run
sys.argv = ["semhash", *sys.argv[1:]]
started, cpu = time.perf_counter(), time.process_time()
try:
    run()
except SystemExit as exc:
    code = exc.code
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(f"SEMHASH-MEASURE {time.perf_counter() - started} {time.process_time() - cpu} {peak}", file=sys.stderr)
"""


def _duplicates_run(n: int, seed: int) -> dict:
    """The whole `semhash duplicates --json` over an index of ``n`` rows whose near codes
    were imported (random PDQ-sized codes, 1% of them copies of another with a few bits
    flipped, so every planted pair is a group): wall and CPU seconds and peak memory of the
    command's process, as a user runs it."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.serve import random_weight_hasher, save_bench_model

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="semhash-bench-dups-") as tmp:
        home = Path(tmp) / "home"
        model = save_bench_model(home, random_weight_hasher(30))
        near = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        copies = rng.choice(n, n // 100, replace=False)
        near[copies] = near[rng.integers(0, n, len(copies))]
        near[copies, 0] ^= np.uint8(0x0F)  # 4 bits flipped
        paths = np.char.add(np.char.add("/semhash-benchmark/dups/", np.char.zfill(np.arange(n).astype(str), 8)), ".jpg")
        table = pa.table({"path": pa.array(paths), "code": pa.array(rng.integers(0, 1 << 30, n, dtype=np.uint64)),
                          "near_code": pa.array([row.tobytes() for row in near], pa.binary()),
                          "near_quality": pa.array(np.full(n, 100, np.int32)), "size": pa.array(np.full(n, 2_000_000))})  # fmt: skip
        source = Path(tmp) / "codes.parquet"
        pq.write_table(table, source)
        index = Path(tmp) / "index.sqlite"
        subprocess.run([sys.executable, "-m", "semhash", "import", str(source), "--model", model, "--index", str(index),
                        "--home", str(home), "--quiet"], check=True, capture_output=True, timeout=3600)  # fmt: skip
        out = subprocess.run([sys.executable, "-c", _MEASURED, "duplicates", "--json", "--index", str(index), "--home", str(home)],
                             capture_output=True, text=True, timeout=3600)  # fmt: skip
        line = next(x for x in out.stderr.splitlines() if x.startswith("SEMHASH-MEASURE"))
        wall, cpu, peak_kib = (float(x) for x in line.split()[1:])
        import json

        totals = json.loads(out.stdout)["totals"]
    result = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_mb": round(peak_kib / 1024), "groups": totals["groups"],
              "redundant_files": totals["redundant_files"]}  # fmt: skip
    log(f"duplicates at {n:,}: {result}")
    return result


def _imagededup_note() -> str:
    try:
        import imagededup  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"not compared: imagededup does not import here ({type(exc).__name__}: {exc}); it needs torch"
    return "installed but not yet compared"


def _near_cost_320(images, seed: int, n: int = 200) -> dict:
    """What the near tier adds to indexing or querying one 320x320 JPEG (quality 90), in CPU
    ms per file: the decode the model alone needs, the one decode that gives both views, the
    8 dihedral PDQ codes, and a near lookup among 10^5 codes."""
    from PIL import Image

    from semhash.data import decode_image, decode_views
    from semhash.index.near_lookup import NearLookup
    from semhash.perceptual import near_codes

    rng = np.random.default_rng(seed)
    files = []
    for _ in range(n):
        image = images[int(rng.integers(len(images)))]
        h, w = image.shape[:2]
        y, x = int(rng.integers(0, max(1, h - 320))), int(rng.integers(0, max(1, w - 320)))
        tile = Image.fromarray(image[y : y + 320, x : x + 320]).resize((320, 320))
        buffer = io.BytesIO()
        tile.save(buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    shape = (28, 28, 1)

    def cpu_ms(fn) -> float:
        started = time.process_time()
        out = [fn(data) for data in files]
        return round(1000 * (time.process_time() - started) / len(files), 3), out

    model_only, _ = cpu_ms(lambda data: decode_image("x.jpg", shape, data=data))
    both, decoded = cpu_ms(lambda data: decode_views("x.jpg", shape, data=data))
    started = time.process_time()
    codes = [near_codes(d.near)[0] for d in decoded]
    pdq = round(1000 * (time.process_time() - started) / len(files), 3)
    lookup = NearLookup(np.arange(100_000), rng.integers(0, 256, (100_000, 32), dtype=np.uint8))
    started = time.process_time()
    for c in codes:
        lookup.search(c, 31)
    search = round(1000 * (time.process_time() - started) / len(files), 3)
    result = {"decode_for_the_model_ms": model_only, "one_decode_for_both_ms": both, "pdq_8_codes_ms": pdq,
              "lookup_in_1e5_ms": search, "added_ms": round(both - model_only + pdq + search, 3)}  # fmt: skip
    log(f"near tier cost per 320x320 JPEG: {result}")
    return result
