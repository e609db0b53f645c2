#!/usr/bin/env python
"""Retrieval-quality benchmark: every model kind side by side, on the same splits.

For each dataset, each code length and each kind in the registry (the NumPy baselines lsh,
pcah and itq included), the script trains the kind on the dataset's database split through
the library (``build_model`` + ``fit`` + ``export_hasher``), hashes the database and the
query split with the exported NumPy Hasher, and scores the query split against the
database with ``semhash.evaluate.evaluate_codes``: mAP (tie-aware), precision within
Hamming radius 2 (queries with no neighbour count 0), the same over queries with a hit,
the hit rate, bucket purity and coverage, the near-duplicate rate (the share of 1,000
database images whose re-saved, resized or shifted copy is within Hamming radius 2 of the
original: :mod:`semhash.near_duplicates`; the table shows the lowest of its four
transformations), plus the training time and the Hasher's encoding speed (images/s).

Datasets: ``mnist-5k`` (4,000 database / 1,000 queries: the Dataset's fixed split) and
``fashion-mnist`` (the official 60,000 training images as database, 10,000 test images as
queries; IDX files from Debian's dataset-fashion-mnist or ``--data-dir``).

Kinds that reuse another trained model (``pretrained-classifier`` reuses an autoencoder)
get the autoencoder trained earlier in the same run, at the same code length, saved into
a workspace (``--home``, else a temporary folder).  A kind that cannot run (missing
dependency, no GPU-only feature, ...) is skipped with its reason logged and recorded.

    python scripts/benchmark_quality.py --quick          # smoke run: a few minutes on 2 CPU cores
    python scripts/benchmark_quality.py                  # the full run (see below)
    python scripts/benchmark_quality.py --datasets mnist-5k --bits 30 --kinds itq,lsh,pcah
    python scripts/benchmark_quality.py --datasets fashion-mnist --bits 30 --kinds classifier-hash \
        --param classifier-hash:flip=true        # a kind's hyperparameter, as `semhash train --param`

Expected duration of the full run (2 datasets x 3 code lengths x every kind, default
epochs): the baselines take seconds per row (PCA of 60,000 x 784 about 5-10 s); the
neural kinds dominate.  On a 2-core CPU, mnist-5k takes roughly 10-20 minutes for all
kinds and code lengths and full Fashion-MNIST (15x the images, up to 30 epochs each) several
hours (about 3-6 h); on one modern GPU the whole run takes well under an hour.  Results are
written after every row, so an interrupted run keeps what it finished.

Output: ``--out`` (default ``docs/benchmarks/quality.json``; ``--quick`` defaults to
``docs/benchmarks/quality-quick.json`` so a smoke run never overwrites the full results),
a markdown table on stdout, and the same markdown in ``--md`` when given.  Progress goes to
stderr.

Experiment logs: ``--tag NAME`` labels the run's rows (a configuration under test) and
``--append`` adds them to the rows already in ``--out`` instead of replacing the file, so
one JSON keeps every try with its command, e.g.

    python scripts/benchmark_quality.py --datasets mnist-5k --bits 30 --kinds contrastive \
        --param contrastive:temperature=0.5 --tag t0.5 --append --out docs/benchmarks/contrastive_experiments.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:  # runnable from a fresh clone without installing
    import semhash  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(ROOT))

from semhash.data import load_builtin  # noqa: E402
from semhash.errors import SemhashError  # noqa: E402
from semhash.models import KINDS, build_model, get_kind  # noqa: E402
from semhash.models.base import FitContext  # noqa: E402
from semhash.tune import release_backend  # noqa: E402

DATASETS = ("mnist-5k", "fashion-mnist")
BITS = (16, 30, 64)
BASELINES = ("lsh", "pcah", "itq")
QUICK_DATASETS = ("mnist-5k",)
QUICK_BITS = (16, 30)
QUICK_EPOCHS_SCALE = 0.1
#: constructor parameters through which a kind names another trained model to reuse
DEPENDENCY_PARAMS = ("encoder", "encoder_name", "encoder_model", "base_model", "autoencoder")
DEPENDENCY_KIND = "autoencoder"
#: fixed settings per kind (applied only where the kind takes the parameter)
OVERRIDES = {
    # its fit can also train a from-scratch twin for comparison: not part of this row's cost
    "pretrained-classifier": {"compare_baselines": False},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- models
def dependency_param(cls) -> str | None:
    names = cls.param_names()
    return next((p for p in DEPENDENCY_PARAMS if p in names), None)


def order_kinds(kinds: list[str]) -> list[str]:
    """Registry order, but kinds that reuse another model after the ones they reuse."""
    def reuses(kind):
        try:
            return dependency_param(get_kind(kind)) is not None
        except Exception:  # a kind that cannot even be imported fails (and is skipped) later
            return False

    plain = [k for k in kinds if not reuses(k)]
    dependent = [k for k in kinds if k not in plain]
    return plain + dependent


def kind_params(cls, image_shape, bits: int, epochs_scale: float, seed: int, overrides: dict | None = None) -> dict:
    """Defaults of the kind, with the code length, input shape, seed and scaled epochs, then
    ``overrides`` (``{kind: {name: value}}``, from ``--param``)."""
    overrides = overrides or {}
    signature = inspect.signature(cls.__init__)
    params = {}
    for name, p in signature.parameters.items():
        if name == "self":
            continue
        if name == "input_shape":
            params[name] = tuple(image_shape)
        elif name == "bits":
            params[name] = int(bits)
        elif name == "seed":
            params[name] = int(seed)
        elif (name in ("epochs", "train_steps") or name.endswith("_epochs")) and isinstance(p.default, int) and epochs_scale != 1:
            params[name] = max(1, int(round(p.default * epochs_scale)))
    for name, value in OVERRIDES.get(cls.kind, {}).items():
        if name in signature.parameters:
            params[name] = value
    params.update(overrides.get(cls.kind, {}))
    return params


def parse_overrides(parser, items: list[str]) -> dict[str, dict]:
    """``["classifier-hash:filters=32x64x128", ...]`` -> ``{"classifier-hash": {"filters": (32, 64, 128)}}``
    (values parsed and checked against the kind like `semhash tune --param`)."""
    from semhash.errors import SemhashError
    from semhash.tune import parse_param_grid

    out: dict[str, dict] = {}
    for item in items:
        kind, sep, setting = item.partition(":")
        if not sep or kind not in KINDS:
            parser.error(f"--param {item!r}: use KIND:KEY=VALUE with KIND one of {', '.join(KINDS)}")
        try:
            grid = parse_param_grid([setting], kind)
        except SemhashError as exc:
            parser.error(f"--param {item!r}: {exc}")
        for name, values in grid.items():
            if len(values) != 1:
                parser.error(f"--param {item!r}: one value per parameter")
            out.setdefault(kind, {})[name] = values[0]
    return out


def save_for_reuse(model, hasher, workspace, name: str, dataset: str, image_shape) -> None:
    """Write a fitted model in the layout `semhash train` uses, so other kinds can load it."""
    directory = workspace.model_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    hasher.save(directory / "hasher.npz")
    model.save(directory)
    meta = {
        "name": name,
        "kind": model.kind,
        "bits": hasher.n_bits,
        "input_shape": list(image_shape),
        "dataset": dataset,
        "params": model.get_params(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": hasher.fingerprint,
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _clean(value):
    """JSON-safe copy: nan/inf -> None, NumPy -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_row(kind, dataset, db, queries, bits, args, workspace, reuse_names) -> dict:
    """Train one kind at one code length and evaluate it; returns the result row."""
    from semhash.evaluate import evaluate_codes

    cls = get_kind(kind)
    db_x, db_y = db
    q_x, q_y = queries
    params = kind_params(cls, dataset.image_shape, bits, args.epochs_scale, args.seed, args.overrides)
    dep = dependency_param(cls)
    if dep is not None:
        key = (dataset.name, bits)
        if key not in reuse_names:
            raise SkipRow(f"needs an {args.encoder_kind} trained in this run at {bits} bits (add {args.encoder_kind} to --kinds)")
        params[dep] = reuse_names[key]
    model = build_model(kind, params)
    context = FitContext(
        workspace=workspace,
        verbose=0,
        class_names=dataset.class_names,
        log=lambda m: log(f"  {kind}: {m}"),
        test_images=q_x,
        test_labels=q_y,
    )
    started = time.perf_counter()
    model.fit(db_x, db_y, context=context)
    train_seconds = time.perf_counter() - started
    hasher = model.export_hasher()

    both = np.concatenate([db_x, q_x])
    hasher.hash(both[:256])  # warm-up
    started = time.perf_counter()
    codes = hasher.hash(both)
    encode_seconds = time.perf_counter() - started
    db_codes, q_codes = codes[: len(db_x)], codes[len(db_x) :]

    result = evaluate_codes(db_codes, db_y, q_codes, q_y, hasher.n_bits)
    near_dup = None
    if args.near_duplicates:
        from semhash.near_duplicates import near_duplicate_rates

        near_dup = near_duplicate_rates(hasher, db_x, radius=2, sample=args.near_duplicates, seed=0)
    if kind == args.encoder_kind:
        name = f"bench-{dataset.name}-{kind}-{bits}"
        save_for_reuse(model, hasher, workspace, name, dataset.name, dataset.image_shape)
        reuse_names[(dataset.name, bits)] = name
    buckets = result["buckets"]
    neighbourhood2 = result["neighbourhoods"].get("2", {})
    try:
        summary = model.summary_metrics()
    except Exception as exc:  # a summary is a nicety, never a reason to lose the row
        summary = {"error": str(exc)}
    return _clean({
        "dataset": dataset.name,
        "tag": args.tag,
        "n_database": int(len(db_x)),
        "n_queries": int(len(q_x)),
        "bits": int(hasher.n_bits),
        "kind": kind,
        "baseline": kind in BASELINES,
        "params": params,
        "map": result["map"],
        "precision_r2": result["precision_r2"],
        "precision_r2_hits": result["precision_r2_hits"],
        "hit_rate_r2": result["hit_rate_r2"],
        "purity_r2": neighbourhood2.get("purity"),
        "bucket_purity": buckets["purity"],
        "bucket_coverage": buckets["coverage"],
        "bucket_purity_shared": buckets.get("purity_shared"),
        "n_buckets": buckets["n_buckets"],
        "largest_bucket": buckets["largest_bucket"],
        "constant_bits": result.get("constant_bits"),
        "near_duplicates": near_dup,
        "near_duplicate_rate_r2": None if near_dup is None else near_dup["min_rate"],
        # issue 22's probe: a copy resized 2x, brightness x0.92-1.1, JPEG q75 (and brightness alone)
        "copy_edit_rate_r2": None if near_dup is None else near_dup["transforms"]["resize_bright_jpeg"]["rate"],
        "brightness_mean_bits": None if near_dup is None else near_dup["transforms"]["brightness"]["mean_distance"],
        "train_seconds": round(train_seconds, 3),
        "encode_images_per_s": round(len(both) / max(encode_seconds, 1e-9), 1),
        "device": getattr(model, "device_", "CPU"),
        "epochs_run": _epochs_run(model),
        "epoch_seconds": getattr(model, "epoch_seconds_", None),
        "history": _history(model),
        "summary_metrics": summary,
    })


def _epochs_run(model):
    history = getattr(model, "history_", None) or {}
    for key in ("loss", "val_loss"):
        if key in history:
            return len(history[key])
    return None


def _history(model) -> dict:
    """Per-epoch loss and validation scores (rounded), to see where training stood."""
    history = getattr(model, "history_", None) or {}
    return {k: [round(float(v), 5) for v in values] for k, values in history.items() if k in HISTORY_KEYS}


HISTORY_KEYS = ("loss", "val_loss", "val_map", "val_precision_r2", "contrast", "val_contrast")


class SkipRow(Exception):
    """A kind that cannot run here, with the reason."""


# --------------------------------------------------------------------------- output
def markdown(doc: dict) -> str:
    lines = [
        "# Retrieval quality benchmark",
        "",
        f"Generated {doc['created_at']} by `{doc['command']}` "
        f"({doc['environment']['machine']}; epochs scale {doc['settings']['epochs_scale']}).",
        "Query split against database split; relevant = same label. mAP is tie-aware; "
        "P@r2 counts queries with no neighbour within Hamming radius 2 as 0, P@r2 (hits) "
        "averages over queries with a neighbour only. Bucket purity is the size-weighted "
        "Gini purity of exact-code buckets (singletons count as pure), coverage the share of "
        "database images sharing their code with another. Encoding speed: the NumPy Hasher.",
        "",
    ]
    rows = doc["results"]
    for dataset in doc["settings"]["datasets"]:
        drows = [r for r in rows if r["dataset"] == dataset]
        if not drows:
            continue
        lines.append(f"## {dataset} ({drows[0]['n_database']:,} database / {drows[0]['n_queries']:,} queries)")
        lines.append("")
        tagged = any(r.get("tag") for r in drows)
        lines.append(
            "| bits | kind |" + (" tag |" if tagged else "")
            + " mAP | P@r2 | P@r2 (hits) | hit rate r2 | bucket purity | bucket coverage | near-dup r2 | train s | encode img/s |"
        )
        lines.append("|---:|---|" + ("---|" if tagged else "") + "---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(drows, key=lambda r: (r["bits"], -(r["map"] or 0))):
            kind = r["kind"] + (" (baseline)" if r["baseline"] else "")
            lines.append(
                f"| {r['bits']} | {kind} |" + (f" {r.get('tag') or ''} |" if tagged else "")
                + f" {_f(r['map'])} | {_f(r['precision_r2'])} | {_f(r['precision_r2_hits'])} "
                f"| {_f(r['hit_rate_r2'])} | {_f(r['bucket_purity'])} | {_f(r['bucket_coverage'])} "
                f"| {_f(r.get('near_duplicate_rate_r2'))} | {r['train_seconds']:.1f} | {r['encode_images_per_s']:,.0f} |"
            )
        lines.append("")
    if doc["skipped"]:
        lines.append("Skipped:")
        lines.append("")
        for s in doc["skipped"]:
            lines.append(f"- {s['dataset']} / {s['bits']} bits / {s['kind']}: {s['reason']}")
        lines.append("")
    return "\n".join(lines)


def merge_runs(paths: list[str], out: Path, md: str | None) -> int:
    """One document from several runs: results and skips concatenated, every command kept.
    A row measured again (same dataset, bits and kind) in a later file replaces the earlier
    one, so a re-run after a change of defaults supersedes the old figures (rows with
    different ``--tag`` are different rows)."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    latest: dict[tuple, dict] = {}
    for doc in docs:
        for row in doc["results"]:
            latest[(row["dataset"], row["bits"], row["kind"], row.get("tag"))] = row
    datasets: list[str] = []
    for doc in docs:
        datasets += [d for d in doc["settings"]["datasets"] if d not in datasets]
    merged = {
        **docs[0],
        "command": " ; ".join(doc["command"] for doc in docs),
        "merged_from": [str(p) for p in paths],
        "settings": {**docs[0]["settings"], "datasets": datasets},
        "results": list(latest.values()),
        "skipped": [row for doc in docs for row in doc["skipped"]],
        "seconds": sum(doc.get("seconds") or 0 for doc in docs),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    text = markdown(merged)
    print(text)
    if md:
        Path(md).write_text(text + "\n")
    return 0


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("numpy", "scikit-learn", "tensorflow", "keras"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "packages": versions,
    }


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=None, help=f"comma-separated [default: {','.join(DATASETS)}; --quick: {','.join(QUICK_DATASETS)}]")
    parser.add_argument("--bits", default=None, help=f"comma-separated code lengths [default: {','.join(map(str, BITS))}; --quick: {','.join(map(str, QUICK_BITS))}]")
    parser.add_argument("--kinds", default=None, help="comma-separated model kinds [default: every kind in the registry]")
    parser.add_argument("--epochs-scale", type=float, default=None, help=f"multiply every kind's default epochs (min 1) [default: 1; --quick: {QUICK_EPOCHS_SCALE}]")
    parser.add_argument("--quick", action="store_true", help="smoke run: mnist-5k, 16 and 30 bits, a tenth of the epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results [default: docs/benchmarks/quality.json; --quick: docs/benchmarks/quality-quick.json]")
    parser.add_argument("--md", default=None, help="also write the markdown table here")
    parser.add_argument("--home", default=None, help="workspace for models reused by other kinds [default: a temporary folder]")
    parser.add_argument("--data-dir", default=None, help="where the fashion-mnist IDX files live")
    parser.add_argument("--param", action="append", default=[], metavar="KIND:KEY=VALUE",
                        help="override one hyperparameter of one kind (repeatable), e.g. classifier-hash:filters=32x64x128")
    parser.add_argument("--encoder-kind", default=DEPENDENCY_KIND, metavar="KIND",
                        help=f"the kind whose model a reusing kind (pretrained-classifier, ...) builds on [default: {DEPENDENCY_KIND}]")
    parser.add_argument("--near-duplicates", type=int, default=1000, metavar="N",
                        help="database images sampled for the near-duplicate rate (0: skip it) [default: 1000]")
    parser.add_argument("--tag", default=None, help="label of this run's rows (an experiment's configuration)")
    parser.add_argument("--append", action="store_true", help="add this run's rows to those already in --out (an experiment log)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only combine the results of earlier runs (e.g. one per dataset) into --out and one table")
    args = parser.parse_args(argv)

    def csv(text, default):
        return [t.strip() for t in text.split(",") if t.strip()] if text else list(default)

    args.datasets = csv(args.datasets, QUICK_DATASETS if args.quick else DATASETS)
    try:
        args.bits = [int(b) for b in csv(args.bits, QUICK_BITS if args.quick else BITS)]
    except ValueError:
        parser.error("--bits takes comma-separated integers, e.g. 16,30,64")
    if any(not 1 <= b <= 64 for b in args.bits):
        parser.error("--bits must be between 1 and 64")
    args.kinds = csv(args.kinds, KINDS)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    if args.epochs_scale is None:
        args.epochs_scale = QUICK_EPOCHS_SCALE if args.quick else 1.0
    if args.epochs_scale <= 0:
        parser.error("--epochs-scale must be > 0")
    args.overrides = parse_overrides(parser, args.param)
    if args.out is None:
        args.out = str(ROOT / "docs" / "benchmarks" / ("quality-quick.json" if args.quick else "quality.json"))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge_runs(args.merge, Path(args.out), args.md)
    from semhash.workspace import Workspace

    tmp = None
    if args.home:
        home = Path(args.home)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="semhash-bench-")
        home = Path(tmp.name)
    workspace = Workspace(home)
    kinds = order_kinds(args.kinds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "quality",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "scripts/benchmark_quality.py", *(argv if argv is not None else sys.argv[1:])]),
        "environment": environment(),
        "settings": {
            "datasets": args.datasets,
            "bits": args.bits,
            "kinds": kinds,
            "epochs_scale": args.epochs_scale,
            "seed": args.seed,
            "quick": args.quick,
            "overrides": args.overrides,
        },
        "results": [],
        "skipped": [],
        "seconds": None,
    }
    earlier = {"results": [], "skipped": [], "commands": []}
    if args.append and out.exists():
        previous = json.loads(out.read_text())
        earlier = {
            "results": previous.get("results", []),
            "skipped": previous.get("skipped", []),
            "commands": previous.get("commands") or [previous.get("command")],
        }
    started = time.time()

    def save():
        doc["seconds"] = round(time.time() - started, 1)
        written = doc
        if args.append:  # the log: every earlier row, then this run's
            written = {
                **doc,
                "commands": [*earlier["commands"], doc["command"]],
                "results": [*earlier["results"], *doc["results"]],
                "skipped": [*earlier["skipped"], *doc["skipped"]],
            }
        out.write_text(json.dumps(written, indent=2) + "\n")

    log(f"datasets {args.datasets}, bits {args.bits}, kinds {kinds}, epochs x{args.epochs_scale}; writing {out}")
    reuse_names: dict = {}
    try:
        for dataset_name in args.datasets:
            try:
                dataset = load_builtin(dataset_name, args.data_dir)
            except Exception as exc:
                log(f"skipping dataset {dataset_name}: {exc}")
                doc["skipped"].append({"dataset": dataset_name, "bits": None, "kind": None, "reason": str(exc)})
                save()
                continue
            db, queries = dataset.part("database"), dataset.part("query")
            log(f"{dataset_name}: {len(db[0]):,} database / {len(queries[0]):,} query images {dataset.image_shape}")
            for bits in args.bits:
                for kind in kinds:
                    row_started = time.time()
                    log(f"{dataset_name} {bits} bits: {kind} ...")
                    try:
                        row = run_row(kind, dataset, db, queries, bits, args, workspace, reuse_names)
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # one kind's failure must not lose the others
                        reason = str(exc) if isinstance(exc, SkipRow) else f"{type(exc).__name__}: {exc}"
                        if not isinstance(exc, (SkipRow, SemhashError, ImportError)):
                            traceback.print_exc(file=sys.stderr)  # unexpected: show where
                        log(f"{dataset_name} {bits} bits: skipped {kind}: {reason}")
                        doc["skipped"].append({"dataset": dataset_name, "bits": bits, "kind": kind, "reason": reason})
                        save()
                        continue
                    finally:
                        release_backend()
                    doc["results"].append(row)
                    save()
                    log(
                        f"{dataset_name} {bits} bits: {kind}: mAP {_f(row['map'])}, P@r2 {_f(row['precision_r2'])}, "
                        f"hit rate {_f(row['hit_rate_r2'])}, near-dup {_f(row['near_duplicate_rate_r2'])}, "
                        f"bucket purity {_f(row['bucket_purity'])} / coverage "
                        f"{_f(row['bucket_coverage'])}; trained in {row['train_seconds']:.1f} s, "
                        f"encodes {row['encode_images_per_s']:,.0f} img/s ({time.time() - row_started:.0f} s)"
                    )
            del dataset, db, queries
    finally:
        save()
        if tmp is not None:
            tmp.cleanup()
    text = markdown(doc)
    print(text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text + "\n")
    log(f"done in {doc['seconds']:.0f} s: {len(doc['results'])} rows, {len(doc['skipped'])} skipped; wrote {out}"
        + (f" and {args.md}" if args.md else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
