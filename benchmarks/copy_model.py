"""Copy model: does the learned ``copy`` kind find the copies PDQ misses (issue 22)?

The photo tiles of the copies benchmark (:mod:`benchmarks.copies`: the same database tiles,
unrelated tiles and seeded copies per edit).  ``semhash train --model copy`` is trained on the
database tiles only (the copies and the unrelated photos are never seen in training), its
NumPy hasher hashes every tile and copy through ``semhash.data.decode_image`` (what
``semhash index`` does with a file), and per edit: the recall at the loosest threshold whose
precision is >= 99% (as the copies benchmark reports PDQ), and the recall at one threshold
for all edits, the loosest at which <= 0.5% of the unrelated photos match anything.  Also how
far apart the database photos' own codes are (the nearest other one: what limits precision),
the training's CPU seconds and the CPU ms to hash a 320x320 JPEG, decode included.

    python -m benchmarks copy-model                          # docs/benchmarks/copy_model.json
    python -m benchmarks copy-model --set koleo=0 --name no-koleo   # one ablation row
"""

from __future__ import annotations

import io
import json
import shlex
import sys
import time

import numpy as np

from benchmarks.common import log, machine_info, write_json

DESCRIPTION = __doc__
MAX_UNRELATED = 0.005  # the share of unrelated photos a threshold may match


def add_arguments(parser) -> None:
    parser.add_argument("--copies", type=int, default=200, help="database tiles copied per edit (as the copies benchmark)")
    parser.add_argument("--seed", type=int, default=0, help="the copies' seed (as the copies benchmark)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a hyperparameter of the copy kind (JSON value), e.g. koleo=0, train_steps=600, filters=[16,32,64,128]")  # fmt: skip
    parser.add_argument("--name", default="default", help="the row's name in the JSON")
    parser.add_argument("--out", default=None, help="JSON to add the row to [docs/benchmarks/copy_model.json]")
    parser.add_argument("--mark-default", default=None, metavar="ROW",
                        help="train nothing: mark ROW as the one measured with the copy kind's current defaults "
                             "(checked: its parameters must be them); the README's copies table shows it")  # fmt: skip


def _model_input(images, shape) -> np.ndarray:
    """RGB uint8 arrays -> the model's input, through the library's decoder (PNG bytes)."""
    from PIL import Image

    from semhash.data import decode_image

    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        out.append(decode_image("tile.png", shape, data=buffer.getvalue()))
    return np.stack(out)


def _near_path_codes(hasher, images) -> np.ndarray:
    """The codes the near tier stores and searches with this model (``semhash index
    --near-model``): each image through ``decode_views``' 256 px near image, then
    :class:`semhash.near_codes.ModelNearCoder`; -> (N, bytes) packed like :func:`_hamming` wants."""
    from PIL import Image

    from semhash.data import decode_views
    from semhash.near_codes import ModelNearCoder, NearScheme

    coder = ModelNearCoder(NearScheme.for_model("bench", hasher), hasher)
    near = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        near.append(decode_views("tile.png", (8, 8, 3), data=buffer.getvalue()).near)
    codes = np.concatenate([c for c, _ in coder.codes(near)])
    return codes[:, : (int(hasher.n_bits) + 7) // 8] if int(hasher.n_bits) % 8 == 0 else codes


def _hamming(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(queries[:, None, :], database[None, :, :])).sum(axis=-1)


def _cost_320_jpeg(hasher, shape) -> float:
    """CPU ms to decode a 320x320 JPEG to the model's input and hash it (median of 200)."""
    from PIL import Image

    from semhash.data import decode_image

    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).resize((320, 320), Image.Resampling.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    times = []
    for _ in range(200):
        started = time.process_time()
        hasher.hash_bits(decode_image("photo.jpg", shape, data=data)[None])
        times.append(time.process_time() - started)
    return round(1000 * float(np.median(times)), 2)


def mark_default(args) -> dict:
    """Point ``default_row`` at a row whose parameters are the copy kind's defaults now."""
    from benchmarks.common import RESULTS
    from semhash.models import build_model

    path = RESULTS / "copy_model.json" if args.out is None else args.out
    payload = json.loads(open(path).read())
    row = payload["rows"].get(args.mark_default)
    if row is None:
        raise SystemExit(f"{path}: no row {args.mark_default!r} (rows: {', '.join(payload['rows'])})")
    model = build_model("copy", {})
    defaults = json.loads(json.dumps(model.get_params() | {"input_shape": list(model.input_shape)}))
    differ = sorted(k for k in defaults if row["params"].get(k) != defaults[k])
    if differ:
        raise SystemExit(f"row {args.mark_default!r} differs from the defaults in: {', '.join(differ)}")
    payload["default_row"] = args.mark_default
    payload["default_row_command"] = f"python -m benchmarks copy-model --mark-default {shlex.quote(args.mark_default)}"
    log(f"wrote {write_json('copy_model', payload, path)}")
    return payload


def run(args) -> dict:
    if args.mark_default:
        return mark_default(args)
    from PIL import Image

    from benchmarks.common import shipped_photos
    from benchmarks.copies import _best_recall, _copy, _distinct, _tiles
    from semhash.edits import EDITS
    from semhash.models import build_model
    from semhash.near_codes import MODEL_THRESHOLD_SHARE

    params = {}
    for item in args.set:
        name, _, value = item.partition("=")
        params[name] = json.loads(value)
    rng = np.random.default_rng(args.seed)
    database_images, held_out_images, faces = shipped_photos()
    side = 128
    face_tiles = [np.asarray(Image.fromarray(f).resize((side, side), Image.Resampling.LANCZOS)) for f in faces]
    database = _distinct(_tiles(database_images, 64, 2) + face_tiles)
    face_keys = {f.tobytes() for f in face_tiles}
    is_face = np.array([t.tobytes() in face_keys for t in database])
    unrelated = _distinct(_tiles(held_out_images, 64, 2))
    chosen = np.sort(rng.choice(len(database), min(args.copies, len(database)), replace=False))
    log(f"{len(database)} database tiles, {len(unrelated)} unrelated, {len(chosen)} copied per edit")
    model = build_model("copy", params)
    shape = tuple(model.input_shape)
    train = _model_input(database, shape)
    cpu, wall = time.process_time(), time.time()
    model.fit(train)
    train_cpu, train_wall = time.process_time() - cpu, time.time() - wall
    hasher = model.export_hasher()
    db_codes = np.packbits(hasher.hash_bits(train), axis=1)
    bits = int(model.bits)
    among = _hamming(db_codes, db_codes) + np.eye(len(db_codes), dtype=int) * (bits + 1)
    nearest_other = among.min(axis=1)  # how far apart the codes of distinct photos are
    d_unrelated = _hamming(np.packbits(hasher.hash_bits(_model_input(unrelated, shape)), axis=1), db_codes).min(axis=1)
    # one threshold for every edit: the loosest at which <= 0.5% of the unrelated photos match
    threshold = max([t for t in range(bits + 1) if (d_unrelated <= t).mean() <= MAX_UNRELATED], default=-1)
    results, made = {}, {}
    for edit in ("exact_copy", *EDITS):
        copies = made[edit] = [database[i] for i in chosen] if edit == "exact_copy" else [_copy(database[i], edit) for i in chosen]
        d = _hamming(np.packbits(hasher.hash_bits(_model_input(copies, shape)), axis=1), db_codes)
        recall, t, precision = _best_recall(d, chosen, bits // 2)
        own = d[np.arange(len(chosen)), chosen]
        results[edit] = {"recall": round(recall, 3), "threshold": t, "precision": round(precision, 3),
                         "recall_at_threshold": round(float((own <= threshold).mean()), 3)}  # fmt: skip
    # the same, through the path the near tier takes (decode_views' 256 px image, then the
    # model's input): what `semhash index --near-model` stores and `query` searches with
    near_db = _near_path_codes(hasher, database)
    near_unrelated = _hamming(_near_path_codes(hasher, unrelated), near_db).min(axis=1)
    near_threshold = max([t for t in range(bits + 1) if (near_unrelated <= t).mean() <= MAX_UNRELATED], default=-1)
    default_threshold = max(1, round(bits * MODEL_THRESHOLD_SHARE))
    near_path = {"threshold": near_threshold, "default_threshold": default_threshold, "recall_at_99_precision": {},
                 "recall_at_threshold": {}, "recall_at_default": {},
                 "unrelated_with_a_match_at_default": round(float((near_unrelated <= default_threshold).mean()), 4)}  # fmt: skip
    for edit, copies in made.items():
        d = _hamming(_near_path_codes(hasher, copies), near_db)
        own = d[np.arange(len(chosen)), chosen]
        near_path["recall_at_99_precision"][edit] = round(_best_recall(d, chosen, bits // 2)[0], 3)
        near_path["recall_at_threshold"][edit] = round(float((own <= near_threshold).mean()), 3)
        near_path["recall_at_default"][edit] = round(float((own <= near_path["default_threshold"]).mean()), 3)
    row = {
        "params": model.get_params() | {"input_shape": list(shape)},
        "near_tier_path": near_path,
        "recall_at_99_precision": {e: r["recall"] for e, r in results.items()},
        "threshold": threshold,
        "recall_at_threshold": {e: r["recall_at_threshold"] for e, r in results.items()},
        "unrelated_with_a_match_at_threshold": round(float((d_unrelated <= threshold).mean()), 4),
        "per_edit": results,
        "database_nearest_other_bits": {"median": float(np.median(nearest_other)), "p5": float(np.percentile(nearest_other, 5)),
                                        "share_within_threshold": round(float((nearest_other <= max(threshold, 0)).mean()), 4),
                                        # the 200 small face photos are alike: are they the ones that collide?
                                        "faces": int(is_face.sum()),
                                        "share_within_threshold_faces": round(float((nearest_other[is_face] <= max(threshold, 0)).mean()), 4),
                                        "share_within_threshold_other": round(float((nearest_other[~is_face] <= max(threshold, 0)).mean()), 4)},
        "database_unique_codes": int(len(np.unique(db_codes, axis=0))),
        "train_cpu_s": round(train_cpu, 1),
        "train_wall_s": round(train_wall, 1),
        "epochs": model.metrics_.get("epochs"),
        "selected_epoch": model.metrics_.get("selected_epoch"),
        "hash_320_jpeg_cpu_ms": _cost_320_jpeg(hasher, shape),
    }
    log(f"{args.name}: " + json.dumps({k: row[k] for k in ("recall_at_99_precision", "threshold", "unrelated_with_a_match_at_threshold",
                                                           "train_cpu_s", "hash_320_jpeg_cpu_ms")}))  # fmt: skip
    from benchmarks.common import RESULTS

    path = RESULTS / "copy_model.json" if args.out is None else args.out
    try:
        payload = json.loads(open(path).read())
    except (OSError, ValueError):
        payload = {"description": __doc__.split("\n\n")[0], "database_tiles": len(database), "unrelated_tiles": len(unrelated),
                   "copies_per_edit": int(len(chosen)), "rows": {}}  # fmt: skip
    payload["rows"][args.name] = {"machine": machine_info(), **row}
    payload.setdefault("commands", {})[args.name] = "python -m benchmarks copy-model " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    written = write_json("copy_model", payload, path)
    log(f"wrote {written}")
    return payload
