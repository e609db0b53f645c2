"""Copies: does each hash find an edited copy of a real photograph, and nothing else?

Photos that installed packages ship (no download): scikit-image's ``skimage.data`` photos,
matplotlib's sample photo, scikit-learn's two sample photos, cut into distinct
non-overlapping square tiles.  The tiles of scikit-learn's and matplotlib's photos are held out as
unrelated queries; the rest form the database.  A seeded sample of database tiles is copied
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
"""

from __future__ import annotations

import io
import time

import numpy as np

from benchmarks.common import log, machine_info, table, write_json

DESCRIPTION = __doc__
EDITS = ("jpeg_q50", "resize_half", "gamma", "crop_5pct", "rotate_4deg", "flip", "pad_10pct", "overlay", "blur")
DEFAULT_THRESHOLD = {"semhash near (PDQ, dihedral)": 31, "PDQ": 31, "pHash": 10, "dHash": 10}


def add_arguments(parser) -> None:
    parser.add_argument("--tile", type=int, default=96, help="tile side in pixels")
    parser.add_argument("--copies", type=int, default=200, help="database tiles copied per edit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="1000000,10000000", help="codes for the query-rate measurement")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale measurements")
    parser.add_argument("--out", default=None)


def _photos():
    """-> (database sources, held-out sources) as lists of RGB uint8 arrays."""
    import matplotlib.cbook as cbook
    import skimage.data as data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
             "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket"]  # fmt: skip
    database = []
    for name in names:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a photo this scikit-image cannot load offline is left out
            continue
        if image.dtype == bool:
            continue
        image = image.astype(np.uint8) if image.dtype == np.uint8 else (255 * (image / max(1, image.max()))).astype(np.uint8)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        database.append(image[..., :3])
    held_out = list(load_sample_images().images)
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        held_out.append(np.asarray(Image.open(fh).convert("RGB")))
    return database, held_out


def _tiles(images, side: int):
    out = []
    for image in images:
        h, w = image.shape[:2]
        for y in range(0, h - side + 1, side):
            for x in range(0, w - side + 1, side):
                out.append(np.ascontiguousarray(image[y : y + side, x : x + side]))
    return out


def _distinct(tiles):
    """Tiles with detail (PDQ quality >= 50: plain sky or black space is no photo to find
    copies of) and distinct from each other: a tile within 40 PDQ bits or 10 pHash bits of
    one kept before is left out, so that the only right match of a copy is its original."""
    import imagehash
    from PIL import Image

    from semhash.perceptual import MIN_QUALITY, NEAR_SIDE, near_code

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


def _edit(tile: np.ndarray, edit: str, rng):
    from PIL import Image, ImageDraw, ImageFilter, ImageOps

    img = Image.fromarray(tile)
    w, h = img.size
    if edit == "jpeg_q50":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=50)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if edit == "resize_half":
        return img.resize((w // 2, h // 2), Image.Resampling.BICUBIC)
    if edit == "gamma":
        return Image.eval(img, lambda v: int(255 * (v / 255) ** 0.7))
    if edit == "crop_5pct":
        d = max(1, round(w * 0.05))
        return img.crop((d, d, w, h))
    if edit == "rotate_4deg":
        return img.rotate(4, resample=Image.Resampling.BICUBIC)
    if edit == "flip":
        return ImageOps.mirror(img)
    if edit == "pad_10pct":
        return ImageOps.expand(img, border=max(1, round(w * 0.05)), fill=(0, 0, 0))
    if edit == "overlay":
        img = img.copy()
        draw = ImageDraw.Draw(img)
        draw.rectangle((w * 0.6, h * 0.75, w * 0.95, h * 0.92), fill=(255, 255, 255))
        draw.text((w * 0.05, h * 0.05), "(c) semhash", fill=(255, 0, 0))
        return img
    if edit == "blur":
        return img.filter(ImageFilter.GaussianBlur(1.5))
    raise ValueError(edit)


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


def _distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """(Q, V, B) x (N, B) -> (Q, N): the smallest distance over each query's variants."""
    x = np.bitwise_xor(queries[:, :, None, :], database[None, None, :, :])
    return np.bitwise_count(x).sum(axis=-1).min(axis=1)


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
    from PIL import Image  # noqa: F401

    rng = np.random.default_rng(args.seed)
    database_images, held_out_images = _photos()
    database = _distinct(_tiles(database_images, args.tile))
    unrelated = _distinct(_tiles(held_out_images, args.tile))
    chosen = np.sort(rng.choice(len(database), min(args.copies, len(database)), replace=False))
    log(f"{len(database)} database tiles, {len(unrelated)} unrelated, {len(chosen)} copied per edit")
    hashers = _hashers()
    results, costs, false_matches, thresholds_used = {}, {}, {}, {}
    copies = {edit: [np.asarray(_edit(database[i], edit, rng).convert("RGB")) for i in chosen] for edit in EDITS}
    for name, hasher in hashers.items():
        started = time.process_time()
        db_codes = np.stack([hasher(t)[0] for t in database])
        costs[name] = 1000 * (time.process_time() - started) / len(database)
        max_t = db_codes.shape[1] * 8 // 2
        results[name] = {}
        for edit in EDITS:
            queries = np.stack([hasher(c) for c in copies[edit]])
            recall, t, precision = _best_recall(_distances(queries, db_codes), chosen, max_t)
            results[name][edit] = {"recall": round(recall, 3), "threshold": t, "precision": round(precision, 3)}
        exact = np.stack([hasher(database[i]) for i in chosen])
        recall, t, precision = _best_recall(_distances(exact, db_codes), chosen, max_t)
        results[name]["exact_copy"] = {"recall": round(recall, 3), "threshold": t, "precision": round(precision, 3)}
        unrelated_codes = np.stack([hasher(u) for u in unrelated])
        d = _distances(unrelated_codes, db_codes)
        thresholds_used[name] = DEFAULT_THRESHOLD[name]
        false_matches[name] = round(float((d.min(axis=1) <= DEFAULT_THRESHOLD[name]).mean()), 4)
        log(f"{name}: {costs[name]:.2f} ms/image; " + ", ".join(f"{e} {results[name][e]['recall']}" for e in EDITS))
    rows = [{"hash": name, **{e: results[name][e]["recall"] for e in ("exact_copy", *EDITS)},
             "unrelated_with_a_match": false_matches[name], "cpu_ms_per_image": round(costs[name], 2)} for name in hashers]  # fmt: skip
    print(table(rows, ["hash", "exact_copy", *EDITS, "unrelated_with_a_match", "cpu_ms_per_image"]))
    scale = {} if args.no_scale else _scale([int(x) for x in args.scale.split(",")], args.seed)
    payload = {
        "machine": machine_info(),
        "tile": args.tile,
        "database_tiles": len(database),
        "unrelated_tiles": len(unrelated),
        "copies_per_edit": int(len(chosen)),
        "recall_at_99_precision": results,
        "unrelated_with_a_match_at_default_threshold": false_matches,
        "default_thresholds": thresholds_used,
        "cpu_ms_per_image": {k: round(v, 3) for k, v in costs.items()},
        "scale": scale,
    }
    path = write_json("copies", payload, args.out)
    log(f"wrote {path}")
    return payload


def _scale(sizes: list[int], seed: int) -> dict:
    """The near lookup's query rate (one core) and its all-pairs join, on random codes with
    1% planted copies (a few bits flipped)."""
    from semhash.index.near_lookup import NearLookup

    rng = np.random.default_rng(seed)
    out = {"queries_per_s": {}, "all_pairs_s": {}}
    for n in sorted({*sizes, 100_000}):
        codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        planted = rng.integers(0, n, n // 100)
        codes[rng.integers(0, n, n // 100)] = codes[planted]
        lookup = NearLookup(np.arange(n), codes)
        queries = codes[rng.integers(0, n, 2000)].copy()
        queries[:, :2] ^= 0x11  # 4 bits flipped
        started = time.perf_counter()
        lookup.search(queries, 31)
        if n in sizes:
            out["queries_per_s"][n] = round(len(queries) / (time.perf_counter() - started))
        if n <= 1_000_000:
            started = time.perf_counter()
            lookup.pairs(31)
            out["all_pairs_s"][n] = round(time.perf_counter() - started, 2)
        log(f"scale {n}: {out}")
        del lookup, codes
    return out
