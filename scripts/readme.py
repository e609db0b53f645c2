"""Generate README.md's example output and headline table, so that they cannot go stale.

    nice -n 10 python scripts/readme.py        # run the README's commands for real, record, rewrite README.md
    python scripts/readme.py --render          # re-render README.md from the recorded transcript (seconds)
    python scripts/readme.py --check           # exit 1 when README.md differs from what --render writes

The full run works in an empty scratch folder (--workdir, /tmp/semhash-readme by default),
exactly as a user would: `semhash demo`, then `semhash export-dataset`, `train`, `index`,
`query` and `evaluate`, each as a subprocess with ``--json`` appended.  It trains the default
model four times (the demo three times, for its timing ranges, and `train --name ae30`): about
eight minutes on 2 CPU cores.

What each command printed as JSON is recorded in docs/readme/transcript.json, beside the text
the command prints for it (the CLI's own formatting function applied to that JSON: each
command's table is made from its --json document, and the commands that can be run twice
(query, evaluate, export-dataset) are also run without --json here and must print exactly
that text).  README.md's blocks between ``<!-- readme:NAME -->`` and ``<!-- /readme:NAME -->``
are rendered from the transcript; the "How good it is" table only from
docs/benchmarks/quality.json, and the "How big and how fast" lines from
docs/benchmarks/lookup*.json and integration.json.  tests/test_readme.py
fails when any of them drifts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TRANSCRIPT = ROOT / "docs" / "readme" / "transcript.json"
QUALITY = ROOT / "docs" / "benchmarks" / "quality.json"
COPIES = ROOT / "docs" / "benchmarks" / "copies.json"
COPY_MODEL = ROOT / "docs" / "benchmarks" / "copy_model.json"
REVIEW = ROOT / "docs" / "benchmarks" / "review.json"
PHOTOS = ROOT / "docs" / "benchmarks" / "photos.json"
PHOTOS_LARGER = ROOT / "docs" / "benchmarks" / "photos_jpeg1000.json"  # the same benchmark on 1,000 JPEGs
COPY_VIEWS = {name: ROOT / "docs" / "benchmarks" / f"contrastive_copy_views_{name}.json" for name in ("mnist", "fashion")}
# the "How big and how fast" lines: the lookup benchmark (10^5-10^7, and 10^8) and the real commands at each N
SCALE = {name: ROOT / "docs" / "benchmarks" / f"{name}.json"
         for name in ("lookup", "lookup_1e8", "lookup_quiet_1e7", "lookup_quiet_1e8", "integration")}
DEFAULT_WORKDIR = Path("/tmp/semhash-readme")
WORKDIR_MARKER = ".semhash-readme"  # the scratch folder is emptied only when it carries this

# The README's examples, in the order a user types them.  "repeat": also run without --json
# and require the same text (only for commands that do not change anything when run twice).
DEMO = {"id": "demo", "argv": ["semhash", "demo"], "repeat": False}
DEMO_RUNS = 3  # the demo's time, memory and scores are given as ranges over this many runs
EVERYDAY = [
    {"id": "export-database", "argv": ["semhash", "export-dataset", "mnist-5k", "images/", "--part", "database"], "repeat": True},
    {"id": "export-queries", "argv": ["semhash", "export-dataset", "mnist-5k", "queries/", "--part", "query"], "repeat": True},
    {"id": "train", "argv": ["semhash", "train", "--name", "ae30"], "repeat": False},
    {"id": "index", "argv": ["semhash", "index", "images/"], "repeat": False},
    {"id": "query", "argv": ["semhash", "query", "queries/7/mnist-5k-03746.png", "--radius", "2", "--limit", "8"], "repeat": True},
    {"id": "evaluate", "argv": ["semhash", "evaluate"], "repeat": True},
    {"id": "evaluate-index", "argv": ["semhash", "evaluate", "--index", "semhash-workspace/index/index.sqlite"], "repeat": True},
]
QUERY_JSON = {"id": "query-json", "argv": ["semhash", "query", "queries/3/mnist-5k-01503.png", "--limit", "2"], "repeat": False}
# the README's `tune` example: only how long it takes is shown (its line in README.md is checked)
TUNE = ["semhash", "tune", "mnist-5k", "--param", "noise=4,8,16", "--param", "epochs=20", "--limit", "2000",
        "--folds", "3", "-o", "best.json"]
DATASET_NAMES = {"mnist-5k": "mnist-5k", "fashion-mnist": "Fashion-MNIST"}


# --------------------------------------------------------------------------- formatting
def formatter(argv: list[str]):
    """The CLI's function that turns a command's --json document into its text output."""
    from semhash.cli.cmd_data import format_export
    from semhash.cli.cmd_demo import format_demo
    from semhash.cli.cmd_evaluate import format_evaluation
    from semhash.cli.cmd_index import format_index, format_query
    from semhash.cli.cmd_train import format_train

    return {
        "demo": format_demo,
        "export-dataset": format_export,
        "train": format_train,
        "index": format_index,
        "query": format_query,
        "evaluate": format_evaluation,
    }[argv[1]]


def command_line(argv: list[str]) -> str:
    return " ".join(argv)


def _console(entries: list[dict]) -> str:
    blocks = [f"$ {command_line(e['argv'])}\n{e['text']}" for e in entries]
    return "```console\n" + "\n\n".join(blocks) + "\n```"


def _demo_block(entry: dict) -> str:
    from semhash.cli.cmd_demo import format_demo_summary

    n = len(entry["json"]["queries"])
    return (
        "```console\n"
        f"$ {command_line(entry['argv'])}\n"
        f"[... {n} query tables, as `semhash query` prints them ...]\n\n"
        f"{format_demo_summary(entry['json'])}\n```"
    )


def _span(values, fmt: str = "{:.0f}", unit: str = "") -> str:
    """``95-110 s`` over several runs, ``102 s`` when they agree."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return (low if low == high else f"{low}-{high}") + unit


def _demo_timing(transcript: dict) -> str:
    """How long the demo takes and what it scores, as ranges over the runs scripts/readme.py
    made (the README's output below is the first run's)."""
    runs = transcript.get("demo_runs") or [_demo_run(transcript["commands"]["demo"])]
    env = transcript["environment"]
    busy = max(r["load_average"] for r in runs)
    shared = f"; the machine's load average reached {busy:.1f}" if busy >= 1.5 else ""
    times = (
        f"It took {_duration(max(r['wall_seconds'] for r in runs))} on {env['cpus']} CPU cores: "
        f"{_span([r['wall_seconds'] for r in runs], unit=' s')} over {len(runs)} run{'s' if len(runs) > 1 else ''} "
        f"of `python scripts/readme.py` ({_span([r['train_seconds'] for r in runs], unit=' s')} of it training, "
        f"{_span([r['peak_rss_mb'] / 1024 for r in runs], '{:.1f}', ' GB')} peak memory{shared})."
    )
    scores = [(r["map"], r["precision_r2"]) for r in runs]
    if len(runs) == 1:
        return times + " Timings vary from machine to machine and run to run."
    if len(set(scores)) == 1:
        return times + (f" Training is seeded: every run scored the same (mAP {scores[0][0]:.3f}, P@r2 "
                        f"{scores[0][1]:.3f}); the times vary with the machine and what else runs on it.")
    return times + (f" The scores vary a little from run to run (mAP {_span([m for m, _ in scores], '{:.3f}')}, "
                    f"P@r2 {_span([p for _, p in scores], '{:.3f}')}: the same seed, but multithreaded sums "
                    f"are not added in the same order every time); so do the times.")


def _demo_run(entry: dict) -> dict:
    """What the timing line needs from one recorded demo run."""
    evaluation = entry["json"]["evaluation"]
    return {
        "wall_seconds": entry["wall_seconds"],
        "train_seconds": entry["json"]["train_seconds"],
        "peak_rss_mb": entry["peak_rss_mb"],
        "load_average": entry.get("load_average", 0.0),
        "map": round(evaluation["map"], 4),
        "precision_r2": round(evaluation["precision_r2"], 4),
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return "a minute and a half" if minutes < 1.75 else f"about {round(minutes)} minutes"


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def quality_block(quality: dict, bits: int = 30) -> str:
    """The headline table: every kind measured at ``bits`` bits, from quality.json alone."""
    from semhash.models import DEFAULT_KIND, KINDS

    rows = {}
    for r in quality["results"]:
        if r["bits"] == bits and r["dataset"] in DATASET_NAMES:
            rows.setdefault(r["kind"], {})[r["dataset"]] = r
    order = [k for k in KINDS if k in rows] + sorted(k for k in rows if k not in KINDS)
    header = ["model", "labels"]
    for name in DATASET_NAMES.values():
        header += [f"{name} mAP", f"{name} P@r2"]
    header.append(f"{list(DATASET_NAMES.values())[-1]} training")
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for kind in order:
        by_dataset = rows[kind]
        any_row = next(iter(by_dataset.values()))
        cells = [f"`{kind}`" + (" (default)" if kind == DEFAULT_KIND else " (baseline)" if any_row.get("baseline") else ""), _labels(any_row)]
        for dataset in DATASET_NAMES:
            r = by_dataset.get(dataset) or {}
            cells += [_fmt(r.get("map")), _fmt(r.get("precision_r2"))]
        last = by_dataset.get(list(DATASET_NAMES)[-1])
        cells.append(_train_time(last["train_seconds"]) if last else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(_comparison(rows, DEFAULT_KIND))
    return "\n".join(lines)


def _labels(row: dict) -> str:
    """What the kind used labels for, from what the benchmark recorded about its training."""
    metrics = row.get("summary_metrics") or {}
    if metrics.get("labeled_images"):
        share = metrics["labeled_images"] / row["n_database"]
        return "all" if share >= 0.999 else f"{share:.0%}"
    if metrics.get("selected_epoch") and metrics.get("val_map") is not None:
        return "to pick the checkpoint"
    return "none"


def _train_time(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _comparison(rows: dict, default: str) -> str:
    """One sentence: the default against the best baseline, per dataset, by mAP."""
    parts = []
    for dataset, name in DATASET_NAMES.items():
        ours = (rows.get(default) or {}).get(dataset)
        baselines = [by[dataset] for by in rows.values() if dataset in by and by[dataset].get("baseline")]
        if not ours or not baselines:
            continue
        best = max(baselines, key=lambda r: r["map"])
        parts.append(
            f"on {name} mAP {ours['map']:.3f} against {best['map']:.3f} for the best baseline (`{best['kind']}`), "
            f"P@r2 {ours['precision_r2']:.3f} against {best['precision_r2']:.3f}"
        )
    return f"The default `{default}` against the baselines: " + "; ".join(parts) + "." if parts else ""


def quality_intro(quality: dict) -> str:
    machine = (quality.get("environment") or {}).get("machine", "")
    return (
        f"At 30 bits, query split against database split, from "
        f"[docs/benchmarks/quality.json](docs/benchmarks/quality.json) (made by `python scripts/benchmark_quality.py`"
        f"{', ' + machine if machine else ''}; every bit width, kind and metric: [docs/BENCHMARKS.md](docs/BENCHMARKS.md)):"
    )


def render_blocks(transcript: dict, quality: dict) -> dict[str, str]:
    """Every generated README block, by marker name."""
    commands = transcript["commands"]
    workdir = transcript["workdir"]
    query_json = commands["query-json"]
    return {
        "demo": _demo_block(commands["demo"]),
        "demo-timing": _demo_timing(transcript),
        "everyday-intro": (
            f"Real output of `python scripts/readme.py`, which runs these commands in an empty folder "
            f"(`{workdir}`, with `$SEMHASH_HOME` unset, so the workspace is `./semhash-workspace`):"
        ),
        "everyday": _console([commands[e["id"]] for e in EVERYDAY]),
        "query-json": (
            f"```console\n$ {command_line(query_json['argv'])} --json\n"
            + json.dumps(query_json["json"], indent=2, ensure_ascii=False)
            + "\n```"
        ),
        "quality-intro": quality_intro(quality),
        "quality": quality_block(quality),
        "quality-vs-example": _table_vs_example(transcript, quality),
        "scale": scale_block({name: load(path) for name, path in SCALE.items()}),
        "copies": copies_block(load(COPIES), load(COPY_MODEL)),
        "review": review_block(load(REVIEW)),
        "photos": photos_block(load(PHOTOS), load(PHOTOS_LARGER)),
        "contrastive-now": contrastive_now_block({k: load(v) for k, v in COPY_VIEWS.items()}),
        "tune-timing": _tune_timing(transcript),
    }


def _tune_timing(transcript: dict) -> str:
    """The README's `tune` example: how long it took here."""
    tune = transcript.get("tune")
    if tune is None:
        return "`tune` trains one model per setting and fold."
    return (
        f"`{command_line(tune['argv'])}` fits {tune['fits']} small models: {_duration(tune['wall_seconds'])} on "
        f"{transcript['environment']['cpus']} CPU cores ({tune['wall_seconds']:.0f} s measured by `python scripts/readme.py`)."
    )


def _us_per_query(rows: list[dict], n: int, distribution: str = "random") -> float:
    """Radius 2, semhash's lookup, answers of a few dozen rows: wall microseconds per query
    on one thread of a quiet machine."""
    row = next(r for r in rows if (r["method"], r["radius"], r["n"], r["distribution"], r["answers"])
               == ("semhash", 2, n, distribution, "<= 64"))  # fmt: skip
    return 1e6 / row["queries_per_s"]


def scale_block(scale: dict[str, dict]) -> str:
    """How big an index gets and how fast it answers (two bullets), from the committed
    benchmark JSON."""
    lookup_rows = [r for name in ("lookup", "lookup_1e8") for r in scale[name]["rows"] if r["method"] == "semhash"]
    quiet_rows = [r for name in ("lookup_quiet_1e7", "lookup_quiet_1e8") for r in scale[name]["rows"] if r["method"] == "semhash"]
    per_code = [r["bytes_per_code"] for r in lookup_rows]
    largest = max(lookup_rows, key=lambda r: r["n"])
    commands = {r["n"]: r for r in scale["integration"]["rows"]}
    small, big = commands[min(commands)], commands[max(commands)]

    def power(n: int) -> str:
        return f"10^{len(str(n)) - 1}" if str(n).strip("0") == "1" else f"{n:,}"

    def wrap(text: str) -> str:
        return textwrap.fill(text, width=95, subsequent_indent="  ", break_on_hyphens=False)

    how_big = (
        f"- How big: the SQLite record takes {big['index_bytes'] / big['n']:.0f} bytes per image "
        f"({power(big['n'])} images: {big['index_bytes'] / 2**30:.1f} GiB) and the lookup beside it (`index.lookup`) "
        f"{min(per_code):.0f}-{max(per_code):.0f} bytes per code ({power(largest['n'])} codes: "
        f"{largest['bytes_per_code'] * largest['n'] / 1e6:,.0f} MB, built and searched on this 24 GB machine)."
    )
    how_fast = (
        f"- How fast: a radius-2 lookup takes ~{_us_per_query(quiet_rows, 10**7):.0f} µs on one thread at 10^7 codes "
        f"(~{_us_per_query(quiet_rows, largest['n']):.0f} µs at {power(largest['n'])}: it follows the neighbour keys "
        f"probed, not N); a whole `semhash query --code` process {small['cold_query_median_s']:.2f} s at "
        f"{power(small['n'])} codes and {big['cold_query_median_s']:.2f} s at {power(big['n'])} (medians; Python "
        f"start-up is most of it), `semhash status` {big['status_median_s']:.2f} s there; `semhash import` fills a new "
        f"index with {power(big['n'])} rows in {big['import_s']:.0f} s ({big['import_rows_per_s']:,} rows/s) and adds "
        f"{power(big['append_rows'])} more at {big['append_rows_per_s']:,} rows/s. From docs/benchmarks/lookup*.json "
        f"and integration.json: docs/BENCHMARKS.md, \"Lookup at scale\" and \"The lookup behind the commands\"."
    )
    return wrap(how_big) + "\n" + wrap(how_fast)


def _table_vs_example(transcript: dict, quality: dict) -> str:
    """Say where the table's numbers and the example's come from when they differ."""
    meta = transcript["commands"]["train"]["json"]["meta"]
    row = next(
        (r for r in quality["results"] if (r["dataset"], r["kind"], r["bits"]) == (meta["dataset"], meta["kind"], meta["bits"])),
        None,
    )
    if row is None:
        return ""
    head = meta["headline"]
    return (
        f"The table's `{row['kind']}` row on {row['dataset']} (mAP {row['map']:.4f}, P@r2 {row['precision_r2']:.4f}) "
        f"and `semhash train --name {meta['name']}` above (mAP {head['map']:.4f}, P@r2 {head['precision_r2']:.4f}) "
        f"are different training runs of the default model: the benchmark's of {quality['created_at'][:10]} and "
        f"scripts/readme.py's of {transcript['created_at'][:10]}."
    )


MARKER_RE = re.compile(r"^(<!-- readme:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)^(<!-- /readme:(?P=name) -->)$", re.S | re.M)


def apply_blocks(readme: str, blocks: dict[str, str]) -> str:
    """README text with every marked block replaced; a marker without a block, or a block
    without a marker, is an error (so that nothing is silently left stale)."""
    found = set()

    def replace(match):
        name = match.group("name")
        if name not in blocks:
            raise SystemExit(f"README.md has a block '{name}' that scripts/readme.py does not render")
        found.add(name)
        return match.group(1) + blocks[name] + "\n" + match.group(4)

    text = MARKER_RE.sub(replace, readme)
    missing = set(blocks) - found
    if missing:
        raise SystemExit(f"README.md lacks the markers for {', '.join(sorted(missing))}")
    return text


def reformat(transcript: dict) -> dict:
    """The transcript with every command's text re-made from its JSON by today's CLI."""
    for entry in transcript["commands"].values():
        entry["text"] = formatter(entry["argv"])(entry["json"])
    return transcript


def copies_block(copies: dict, copy_model: dict) -> str:
    """How well the near tier finds copies, from the committed copies benchmark, beside the
    learned ``copy`` kind as the near tier's code (its default row of copy_model.json)."""
    results = copies["recall_at_99_precision"]
    near, pdq, phash = (results[k] for k in ("semhash near (PDQ, dihedral)", "PDQ", "pHash"))
    model = copy_model["rows"][copy_model["default_row"]]["near_tier_path"]
    learned = model["recall_at_99_precision"]
    edits = {"jpeg_q50": "JPEG q50", "resize_half": "half size", "gamma": "brighter (gamma 0.7)", "blur": "blurred",
             "flip": "mirrored", "overlay": "text and a box drawn over", "rotate_4deg": "rotated 4°", "crop_5pct": "cropped 5%",
             "pad_10pct": "padded 10%"}  # fmt: skip
    rows = "\n".join(
        f"| {label} | {near[e]['recall']:.0%} | {pdq[e]['recall']:.0%} | {phash[e]['recall']:.0%} | {learned[e]:.0%} "
        f"| {model['recall_at_threshold'][e]:.0%} |"
        for e, label in edits.items()
    )
    unrelated = copies["unrelated_with_a_match_at_default_threshold"]["semhash near (PDQ, dihedral)"]
    added = copies["near_cost_320_jpeg"]["added_ms"]
    loose = sorted({near[e]["threshold"] for e in edits})
    hard = ", ".join(f"{edits[e]} {near[e]['recall_at_default']:.0%}" for e in ("crop_5pct", "rotate_4deg", "pad_10pct"))
    intro = (
        f"On {copies['database_tiles']} distinct photo tiles with {copies['copies_per_edit']} copies per edit (recall "
        f"at the loosest threshold with >= 99% precision; {unrelated:.0%} of {copies['unrelated_tiles']} unrelated "
        f"photos matched anything at the default threshold; the near tier adds {added:.1f} ms of CPU to a 320x320 "
        "JPEG), and the near tier's code from a `copy` model trained on the database tiles (`--near-model`), at >= "
        f"99% precision and at {model['threshold']} bits of 64 (the loosest threshold at which at most 0.5% of the "
        "unrelated photos match anything; the near tier's default for a 64-bit model):"
    )
    return (
        textwrap.fill(intro, width=95, break_on_hyphens=False) + "\n\n"
        "| copy | near tier | PDQ alone | pHash | `copy` model | `copy` model at its threshold |\n|---|---|---|---|---|---|\n"
        + rows + "\n\n"
        + textwrap.fill(
            f"Those thresholds are loose ({loose[0]}-{loose[-1]} PDQ bits of 256: {copies['database_tiles']} images leave "
            f"few wrong matches to hit). At the default of 31, which a library of millions needs, the near tier finds {hard}: "
            "crops, rotations and padding defeat the hashes made for copies, which is what a learned copy detector "
            "is for; the `copy` kind finds more of them at its own threshold, but not yet at PDQ's precision. From "
            "docs/benchmarks/copies.json (`python -m benchmarks copies`) and copy_model.json (`python -m benchmarks "
            "copy-model`): docs/BENCHMARKS.md, \"Copies\" and \"The learned copy kind\".",
            width=95, break_on_hyphens=False,
        )
    )


def contrastive_now_block(runs: dict) -> str:
    """The contrastive kind's figures with its current defaults (issue 22), which the quality
    table's row predates: the *-copy-views-itq and *-control rows of the experiment logs."""
    def row(name: str, tag: str) -> dict:
        return next(r for r in runs[name]["results"] if r["tag"] == tag)

    mnist, fashion = row("mnist", "mnist-copy-views-itq"), row("fashion", "fmnist-copy-views-itq")
    before = row("fashion", "fmnist-control")
    return textwrap.fill(
        "The `contrastive` row was measured before issue 22 added the copies' edits (brightness, gamma, "
        "resampling, JPEG) to its views and an ITQ rotation to its coding layer; with them (one run each, 30 bits): "
        f"mnist-5k mAP {mnist['map']:.3f}, P@r2 {mnist['precision_r2']:.3f}; Fashion-MNIST mAP {fashion['map']:.3f}, "
        f"P@r2 {fashion['precision_r2']:.3f}, and a copy resized 2x, brightened and re-encoded as JPEG keeps its code "
        f"within radius 2 for {fashion['copy_edit_rate_r2']:.1%} of Fashion-MNIST images ({before['copy_edit_rate_r2']:.1%} "
        "before): docs/benchmarks/contrastive_copy_views_*.json, docs/BENCHMARKS.md.",
        width=95, break_on_hyphens=False,
    )


def review_block(review: dict) -> str:
    """How fast the review page answers, from the committed review benchmark."""
    return textwrap.fill(
        f"The groups are computed when the server starts (and again after a re-index), in the background: at "
        f"{review['groups']:,} groups, {review['grouping_in_background_s']:.1f} s after the start the first page takes "
        f"{review['first_page_ms']:.0f} ms, a decision {review['decision_median_ms']:.0f} ms (median), \"keep the "
        f"suggestion\" for {review['accept_folder_groups']:,} groups of a folder {review['accept_folder_ms']:.0f} ms "
        "(docs/benchmarks/review.json, `python -m benchmarks review`: docs/BENCHMARKS.md, \"Reviewing duplicates\").",
        width=95, break_on_hyphens=False,
    )


def photos_block(photos: dict, larger: dict | None = None) -> str:
    """What indexing a photo library costs per format, from the committed photos benchmark
    (``larger``: the same on more JPEGs, for the two workers' figure on a bigger folder)."""
    labels = {"jpeg": "JPEG", "heic": "HEIC", "webp": "WebP", "png": "PNG"}
    speed = {(r["format"], r["workers"]): r for r in photos["index"]}
    rows = "\n".join(
        f"| {labels[r['format']]} {r['size'].replace('x', '×')} | {r['mb_per_file']:.1f} | {r['floor_ms']:.0f} | "
        f"{r['end_to_end_ms']:.0f} | {r['end_to_end_vs_floor']:.2f}× | {speed[(r['format'], 1)]['photos_per_s']:.3g} | "
        f"{speed[(r['format'], 2)]['photos_per_s']:.3g} ({speed[(r['format'], 2)]['speedup_vs_1']:.2f}×) |"
        for r in photos["decode"]
    )
    watch = photos["watch"]
    peak = max(max(r["rss_mb"], r["worker_rss_mb"] or 0) for r in photos["index"])
    bigger = "".join(f"; {w['median_ms']:.0f} ms in an index of {w['index_rows']:,} rows" for w in photos.get("watch_larger_index", []))
    more = ""
    if larger is not None:
        two = next(r for r in larger["index"] if r["workers"] == 2)
        more = (f"On {two['files']:,} JPEGs two workers give {two['photos_per_s']:.0f} photos/s, "
                f"{two['speedup_vs_1']:.2f}× one (the pool's start and its last batch weigh less). ")
    return (
        textwrap.fill(
            "What a library costs to index, per format, on this project's 2-core machine (synthetic photos made from "
            "the photos scikit-image, scikit-learn and matplotlib ship: ms of CPU per file, one core; the floor is the "
            "fastest reduced decode of the same bytes by Pillow or pyvips; semhash's work is read, sha256, decode, PDQ "
            "with its 7 variants and the semantic code):", width=95, break_on_hyphens=False)
        + "\n\n| format | MB | floor ms | semhash ms | ratio | `index` photos/s | 2 workers |\n|---|---|---|---|---|---|---|\n"
        + rows + "\n\n"
        + textwrap.fill(
            f"{more}No `semhash index` process grew past {peak:.0f} MB. With `--watch`, a new 12-megapixel JPEG is queryable "
            f"{watch['median_ms']:.0f} ms after it was written (median of {watch['files']}; 90th percentile "
            f"{watch['p90_ms']:.0f} ms{bigger}). From docs/benchmarks/photos.json (`python -m benchmarks photos`) and "
            "photos_jpeg1000.json: "
            "docs/BENCHMARKS.md, \"A photo library\".", width=95, break_on_hyphens=False)
    )


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def render_readme(transcript: dict, quality: dict, readme: str) -> str:
    return apply_blocks(readme, render_blocks(transcript, quality))


# --------------------------------------------------------------------------- running
def _semhash() -> list[str]:
    script = Path(sys.executable).with_name("semhash")
    return [str(script)] if script.exists() else [sys.executable, "-m", "semhash"]


def _run(argv: list[str], workdir: Path, env: dict, log) -> tuple[str, float, float]:
    """Run one command; (stdout, wall seconds, its peak resident memory in MB)."""
    started = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(_semhash() + argv[1:], cwd=workdir, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS, not the largest so far
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.time() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    (log / "stderr.log").open("a").write(f"$ {command_line(argv)}\n{stderr}\n")
    if proc.returncode != 0:
        raise SystemExit(f"{command_line(argv)} failed (exit {proc.returncode}):\n{stdout}\n{stderr[-3000:]}")
    return stdout, seconds, usage.ru_maxrss / 1024


def record(spec: dict, workdir: Path, env: dict) -> dict:
    """Run one example with --json; check the text of a plain run where it can be repeated."""
    out, seconds, peak_mb = _run(spec["argv"] + ["--json"], workdir, env, workdir)
    data = json.loads(out)
    text = formatter(spec["argv"])(data)
    entry = {"argv": spec["argv"], "json": data, "text": text, "wall_seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb)}
    if spec["repeat"]:
        plain, _, _ = _run(spec["argv"], workdir, env, workdir)
        if plain.rstrip("\n") != text:
            raise SystemExit(f"{command_line(spec['argv'])}: its text output is not the formatting of its --json output:\n{plain}\n---\n{text}")
        entry["text_checked"] = True
    print(f"  {command_line(spec['argv'])}: {seconds:.1f} s", flush=True)
    return entry


def prepare_workdir(workdir: Path) -> Path:
    workdir = workdir.absolute()
    if workdir.exists():
        if not (workdir / WORKDIR_MARKER).exists():
            raise SystemExit(f"{workdir}: exists and was not made by scripts/readme.py: give an absent folder with --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / WORKDIR_MARKER).write_text("made by scripts/readme.py; emptied on its next run\n")
    return workdir


def run_examples(workdir: Path, demo_runs: int = DEMO_RUNS) -> dict:
    workdir = prepare_workdir(workdir)
    env = {k: v for k, v in os.environ.items() if k != "SEMHASH_HOME"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.time()
    print(f"running the README's commands in {workdir}", flush=True)
    runs = []
    for _ in range(demo_runs):  # the demo again on its own workspace: it retrains and re-indexes
        load_before = os.getloadavg()[0]
        entry = record(DEMO, workdir, env)
        # other work on the machine slows the demo down: say how busy it was
        entry["load_average"] = round(max(load_before, os.getloadavg()[1]), 1)
        runs.append(entry)
    commands = {"demo": runs[0]}
    for spec in EVERYDAY + [QUERY_JSON]:
        commands[spec["id"]] = record(spec, workdir, env)
    out, seconds, _ = _run(TUNE + ["--json"], workdir, env, workdir)
    tuned = json.loads(out)
    tune = {"argv": TUNE, "wall_seconds": round(seconds, 1), "fits": len(tuned["trials"]) * tuned["folds"]}
    print(f"  {command_line(TUNE)}: {seconds:.1f} s", flush=True)
    import importlib.metadata

    return {
        "generated_by": "python scripts/readme.py",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workdir": str(workdir),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "packages": {p: importlib.metadata.version(p) for p in ("numpy", "tensorflow", "keras", "faiss-cpu")},
        },
        "seconds": round(time.time() - started, 1),
        "commands": commands,
        "demo_runs": [_demo_run(entry) for entry in runs],
        "tune": tune,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/readme.py", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--render", action="store_true", help="re-render from the recorded transcript (no commands run)")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md is not what --render would write")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"scratch folder for the full run [{DEFAULT_WORKDIR}]")
    parser.add_argument("--demo-runs", type=int, default=DEMO_RUNS, help=f"times the demo is run for its timing ranges [{DEMO_RUNS}]")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    quality = load(QUALITY)
    if args.check:
        transcript = load(TRANSCRIPT)
        expected = render_readme(reformat(json.loads(json.dumps(transcript))), quality, README.read_text())
        if expected != README.read_text() or reformat(json.loads(json.dumps(transcript))) != transcript:
            print("README.md or docs/readme/transcript.json is stale: run python scripts/readme.py --render", file=sys.stderr)
            return 1
        print("README.md is up to date")
        return 0
    transcript = reformat(load(TRANSCRIPT)) if args.render else run_examples(args.workdir, max(1, args.demo_runs))
    TRANSCRIPT.parent.mkdir(parents=True, exist_ok=True)
    TRANSCRIPT.write_text(json.dumps(transcript, indent=1, ensure_ascii=False) + "\n")
    README.write_text(render_readme(transcript, quality, README.read_text()))
    print(f"wrote {TRANSCRIPT.relative_to(ROOT)} and {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
