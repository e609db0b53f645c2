"""semhash index / query / status"""

from __future__ import annotations

import click

from semhash.cli.common import (
    echo_err,
    format_table,
    home_option,
    index_location,
    index_option,
    json_option,
    library_errors,
    print_json,
)
from semhash.tiers import MIN_QUALITY, NEAR_THRESHOLD, TIER_CHOICES


def _index_path(home, index_path):
    return index_location(home, index_path)


def format_index(data: dict) -> str:
    """The text `semhash index` prints, made from its --json document."""
    lines = [
        f"indexed {data['folder']} with model {data['model']}"
        + (f" (near codes: model {data['near_model']})" if data.get("near_model", "pdq") != "pdq" else "")
        + f": {data['added']} added, {data['updated']} updated, "
        f"{data['unchanged']} unchanged, {data['removed']} removed, {data['skipped']} skipped; "
        f"{data['total']} images in the index"
    ]
    left_out = [
        _count(data["hidden"], "hidden", "hidden"),
        _count(data["other_files"], "other file", "other files"),
        _count(data.get("videos", 0), "video", "videos"),
        _count(data["symlinked_folders"], "symlinked folder (not followed)", "symlinked folders (not followed)"),
        _count(data["unreadable_folders"], "unreadable folder (its images kept)", "unreadable folders (their images kept)"),
    ]
    if any(left_out):
        lines.append("not indexed: " + ", ".join(part for part in left_out if part))
    if data["labels_kept"]:
        lines.append(f"labels: {data['labels_kept']} kept their label from an earlier run (--relabel changes them)")
    if data["relabelled"]:
        lines.append(f"labels: {data['relabelled']} relabelled from {data['folder']}")
    lines.append(f"wrote:\n  {data['index']}\n  {data['lookup']}")
    return "\n".join(lines)


@click.command()
@click.argument("folder", type=click.Path(readable=False))  # an unreadable folder: the library's one line
@click.option("--model", "model_name", default=None, help="Model to hash with [default: the latest trained].")
@click.option("--rebuild", is_flag=True, help="Drop every indexed row and re-bind the index to this model (a damaged index file is kept aside as *.damaged).")
@click.option("--near-model", "near_model_name", default=None, metavar="NAME|pdq", help="Where the near tier's codes come from: a trained model (e.g. `semhash train --model copy`), or pdq [default: what the index has; PDQ for a new index]. Changing it needs --rebuild.")
@click.option("--relabel", is_flag=True, help="Give rows under FOLDER the label FOLDER gives them, even where they were first indexed with another.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help="Files per hashing task and per transaction.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes that read, decode and hash files [default: one per CPU]; 1 hashes in this process. With --engine ray: hashing actors [default: every CPU the cluster has].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--watch", is_flag=True, help="After indexing, keep the index following FOLDER: files added, changed, moved (ids, labels and decisions kept) or deleted, the folder unmounted and mounted again. Ctrl-C or SIGTERM stops it (pip install 'semhash[watch]').")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the new and changed files are hashed: on this machine (--workers processes), or on Ray (pip install 'semhash[distributed]').",
)
@click.option(
    "--address",
    default=None,
    metavar="ADDRESS",
    help="With --engine ray: the Ray cluster (ray://HOST:10001 or HOST:6379; every worker must read FOLDER at the same path) [default: a local Ray on this machine's cores].",
)
@index_option
@home_option
@json_option
@library_errors
def index(folder, model_name, rebuild, near_model_name, relabel, batch_size, workers, quiet, watch, engine, address, index_path, home,
          as_json):  # fmt: skip
    """Hash every image under FOLDER into the index (incremental: new files are added,
    changed ones rehashed, unchanged ones left alone, deleted ones removed).

    A file's label is the name of its first-level subfolder under FOLDER (none for files
    directly in FOLDER), set when the file is first indexed.  Indexing a subfolder or a
    parent later keeps the labels rows already have and says how many FOLDER would label
    differently; --relabel changes them.  Hidden files and folders, files without an image
    extension and links to folders are not indexed (counted in the summary); a folder that
    cannot be read is a warning and its rows stay.  To drop the rows of a folder that is
    gone or empty: semhash remove FOLDER.

    \b
    Examples:
      semhash index images/
      semhash index images/ --model ae30 --rebuild
      semhash index photos/ --near-model copy-1 --rebuild
      semhash index images/cats --relabel
      semhash index images/ --workers 1
      semhash index ~/Pictures --watch
      semhash index images/ --engine ray --address ray://head:10001
      semhash index images/ --index postgresql+psycopg://me@db.example/semhash
    """
    from semhash.index import index_folder

    if address is not None and engine != "ray":
        raise click.UsageError("--address is for --engine ray")
    if watch and engine != "local":
        raise click.UsageError("--watch hashes on this machine: leave out --engine ray")
    workspace, path = _index_path(home, index_path)
    near_model = None if near_model_name is None else "pdq" if near_model_name.lower() == "pdq" else workspace.model(near_model_name)
    if model_name is None and near_model is not None and near_model != "pdq":
        # the latest trained model other than the near one (a copy model hashes copies, not look-alikes)
        others = [m for m in workspace.list_models() if m.name != near_model.name]
        model = others[-1] if others else near_model
    else:
        model = workspace.model(model_name)
    warn = lambda message: echo_err(f"warning: {message}")  # noqa: E731
    options = dict(rebuild=rebuild, relabel=relabel, workers=workers, near_model=near_model)
    if watch:
        _index_and_watch(folder, model, path, options, quiet, as_json, warn)
        return
    summary = index_folder(folder, model, path, batch_size=batch_size, progress=not quiet, on_warning=warn, engine=engine,
                           address=address, **options)  # fmt: skip
    _report_index(folder, model, summary, as_json)


def _index_and_watch(folder, model, path, options: dict, quiet: bool, as_json: bool, warn) -> None:
    """`semhash index FOLDER --watch`: the run's summary as usual, then a line per burst of
    changes (stderr) until Ctrl-C or SIGTERM, then what the watch did (with --json, one
    document at the end: the run's summary with "watch" in it)."""
    from semhash.index import printable
    from semhash.index.watch import watch_folder

    first: dict = {}

    def indexed(summary) -> None:
        first.setdefault("data", _index_data(folder, model, summary))  # a catch-up after an unmount: printed, not kept
        if not as_json:
            click.echo(format_index(_index_data(folder, model, summary)))
        echo_err(f"watching {printable(str(folder))} for changes (Ctrl-C stops)")

    def nothing_yet(message: str) -> None:
        warn(message)
        if "no image files yet" in message:
            echo_err(f"watching {printable(str(folder))} for changes (Ctrl-C stops)")

    done = watch_folder(folder, model, path, progress=not quiet, on_indexed=indexed, on_change=echo_err, on_warning=nothing_yet,
                        **options)  # fmt: skip
    watched = {"added": done.added, "updated": done.updated, "moved": done.moved, "removed": done.removed, "skipped": done.skipped,
               "bursts": done.bursts, "away": done.away, "total": done.total}  # fmt: skip
    if as_json:
        print_json({**first.get("data", {}), "watch": watched})
    else:
        click.echo(f"stopped watching {printable(str(folder))}: {done.added} added, {done.updated} updated, {done.moved} moved, "
                   f"{done.removed} removed, {done.skipped} skipped; {done.total} images in the index")  # fmt: skip


def _index_data(folder, model, summary) -> dict:
    """The --json document of a run."""
    from semhash.index import printable

    shown = printable(str(folder))
    return {
        "folder": shown,
        "model": model.name,
        "near_model": summary.near_model,
        "added": summary.added,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "removed": summary.removed,
        "skipped": summary.skipped,
        "total": summary.total,
        "hidden": summary.hidden,
        "other_files": summary.other_files,
        "videos": summary.videos,
        "symlinked_folders": summary.symlinked_folders,
        "unreadable_folders": summary.unreadable_folders,
        "labels_kept": summary.labels_kept,
        "relabelled": summary.relabelled,
        "index": str(summary.index_path),
        "lookup": str(summary.lookup_path),
        "damaged_index_moved_to": str(summary.damaged_index_moved_to) if summary.damaged_index_moved_to else None,
    }


def _report_index(folder, model, summary, as_json: bool) -> None:
    from semhash.index import printable

    data = _index_data(folder, model, summary)
    shown = printable(str(folder))
    if as_json:
        print_json(data)
    else:
        click.echo(format_index(data))
    if summary.skipped and not (summary.added or summary.updated or summary.unchanged):
        # every file was unreadable: the run as a whole failed (the index is untouched)
        raise click.ClickException(f"{shown}: none of its {summary.skipped} image files could be read")


def _count(n: int, one: str, many: str) -> str:
    return "" if not n else f"{n} {one if n == 1 else many}"


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(readable=False))
@click.option("--missing", is_flag=True, help="Only rows whose file is gone, under PATHS or (without PATHS) anywhere in the index. Stats every row it looks at.")
@index_option
@home_option
@json_option
@library_errors
def remove(paths, missing, index_path, home, as_json):
    """Drop rows from the index: everything indexed under each PATH (a file or a folder,
    whether or not it still exists), or with --missing the rows whose file is gone.
    Files on disk are never touched.  A PATH with nothing indexed under it is an error,
    and then nothing is removed.

    \b
    Examples:
      semhash remove images/old-holiday/
      semhash remove images/3/img-0042.png
      semhash remove --missing
    """
    from semhash.index import printable, remove_paths

    if not paths and not missing:
        raise click.UsageError("give the PATHs to remove, or --missing")
    _, path = _index_path(home, index_path)
    result = remove_paths(path, list(paths), missing=missing)
    if as_json:
        print_json({"removed": result.removed, "total": result.total, "by_path": result.by_path, "index": str(result.index_path)})
        return
    detail = ", ".join(f"{key}: {n}" for key, n in result.by_path.items())
    click.echo(
        f"removed {result.removed} row{'s' if result.removed != 1 else ''}"
        + (f" ({printable(detail)})" if detail else "")
        + f"; {result.total} images in the index"
    )


def query_json(results, radius: int) -> list[dict]:
    """What `semhash query --json` prints: one object per query image (a code that could be
    read two ways also gets "note": which reading was used; a query image too flat for the
    near tier gets "near_quality")."""
    return [
        {
            "query": str(r.query),
            "code": int(r.code),
            "bits": r.bits,
            "radius": int(radius),
            "tier": getattr(r, "tier", "similar"),
            "total": int(r.total),
            "matches": [{"path": m.path, "tier": m.tier, "distance": int(m.distance), "label": m.label} for m in r.matches],
            **({"note": r.note} if getattr(r, "note", None) else {}),
            **({"near_quality": r.flat_quality} if getattr(r, "flat_quality", None) is not None else {}),
        }
        for r in results
    ]


def _within(r: dict) -> str:
    """Where the matches of one query were looked for, in words."""
    if r["tier"] == "exact":
        return "in the exact tier (the same bytes)"
    if r["tier"] == "near":
        return "in the near tier (copies)"
    if r["tier"] == "all":
        return f"in the exact, near and similar (radius {r['radius']}) tiers"
    return f"within radius {r['radius']}"


def format_query(data: list[dict]) -> str:
    """The table `semhash query` prints, made from its --json document."""
    blocks = []
    for r in data:
        lines = [f"query {r['query']}  code {r['bits']}"]
        shown, total = len(r["matches"]), r["total"]
        if not total:
            lines.append(f"no indexed image {_within(r)}")
        else:
            lines.append(format_table(["tier", "distance", "path", "label"],
                                      [(m["tier"], m["distance"], m["path"], m["label"]) for m in r["matches"]]))  # fmt: skip
            count = f"{shown} of {total}" if shown < total else f"{total}"
            lines.append(f"{count} match{'es' if total != 1 else ''} {_within(r)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _read_codes_file(path: str) -> tuple[list[str], list[str]]:
    """(codes as given, "FILE:LINE" of each) from a file of one code per line; blank lines
    and lines starting with # are skipped."""
    from semhash.index import printable

    shown = printable(str(path))
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise click.ClickException(f"{shown}: cannot read ({exc.strerror or exc})") from None
    codes, origins = [], []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            raise click.ClickException(f"{shown}:{number}: not a code (a code is 0/1 bits or a decimal integer)") from None
        if text and not text.startswith("#"):
            codes.append(text)
            origins.append(f"{shown}:{number}")
    if not codes:
        raise click.ClickException(f"{shown}: no codes in the file (one code per line: bits or an integer)")
    return codes, origins


@click.command()
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--code", "codes", multiple=True, metavar="BITS_OR_INT", help="Query by a code instead of an image: exactly as many 0/1 characters as the index has bits (unit 0 first, as printed), else a decimal integer (0101 on a 30-bit index is the integer 101; a note on stderr says so). Repeatable.")
@click.option("--codes-from", type=click.Path(dir_okay=False), default=None, metavar="FILE", help="Query by every code in FILE (one per line, bits or an integer; # starts a comment).")
@click.option("--radius", "-r", type=click.IntRange(0, 64), default=2, show_default=True, help="Hamming radius.")
@click.option("--limit", "-n", type=click.IntRange(1), default=None, help="At most N matches per query (the count of all of them is still printed: 'N of M matches').")
@click.option("--tier", type=click.Choice(TIER_CHOICES), default="all", show_default=True, help="Which matches: exact (the same bytes), near (copies: re-saved, resized, brightened, mirrored; PDQ), similar (look-alikes: the model's code within --radius), or all of them, in that order. A query by --code searches the similar tier only.")
@click.option("--near-threshold", type=click.IntRange(0, 128), default=None, metavar="BITS", help=f"Near tier: the most bits a copy's near code may differ by: PDQ's of 256 [default: {NEAR_THRESHOLD}]; a near model's, at most half its bits [default: the index's, 9 of 64].")
@click.option(
    "--show",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Also draw each query beside its matches into FILE (.png, .jpg, .pdf or .svg; checked before searching). "
    "At most 20 queries and 10 matches each are drawn; the picture and stderr say what was left out.",
)
@index_option
@home_option
@json_option
@library_errors
def query(images, codes, codes_from, radius, limit, tier, near_threshold, show, index_path, home, as_json):
    """The indexed images that match each query image (or code), in three tiers: exact
    copies (the same bytes), near-duplicates (copies that were re-saved, resized, brightened,
    mirrored...: PDQ within --near-threshold) and similar images (the model's code within
    Hamming RADIUS), in that order, each image once with its tier and the distance in that
    tier's code.  With --limit N the first N are printed, followed by how many there are in
    all ("8 of 13 matches"; "total" in --json).  A query by --code needs no model: only the
    index's bit width, and searches the similar tier.

    \b
    Examples:
      semhash query img.png --radius 2
      semhash query img.png --tier near
      semhash query a.png b.png --limit 5 --json
      semhash query img.png --show matches.png
      semhash query --code 101100111000101011110000110101 --code 123456789
      semhash query --codes-from codes.txt --radius 1 --json
    """
    from semhash.index import query_codes, query_files

    by_code = bool(codes or codes_from)
    if by_code and images:
        raise click.UsageError("give image files or --code/--codes-from, not both")
    if not by_code and not images:
        raise click.UsageError("give at least one image file, --code or --codes-from")
    if show and by_code:
        raise click.UsageError("--show draws query images: it does not apply to --code/--codes-from")
    if by_code and tier in ("exact", "near"):
        raise click.UsageError(f"--tier {tier} needs query images: a --code query searches the similar tier")
    if show:
        from semhash.visualize import check_picture_path

        show = check_picture_path(show)  # a bad picture name fails before any work
    workspace, path = _index_path(home, index_path)
    if by_code:
        given, origins = list(codes), [f"--code {c!r}" for c in codes]
        if codes_from:
            more, where = _read_codes_file(codes_from)
            given, origins = given + more, origins + where
        results = query_codes(path, given, radius=radius, limit=limit, origins=origins)
        for result in results:
            if result.note:
                echo_err(f"note: {result.note}")
    else:
        results = query_files(path, workspace, list(images), radius=radius, limit=limit, tier=tier, near_threshold=near_threshold)
        for result in results[:1]:
            if result.note:
                echo_err(f"note: {result.note}")
        for result in results:
            if result.flat_quality is not None:
                echo_err(f"note: {result.query}: too flat for the near tier (PDQ quality {result.flat_quality} < "
                         f"{MIN_QUALITY}): no near-duplicate matches for it")  # fmt: skip
    data = query_json(results, radius)
    if as_json:
        print_json(data)
    else:
        click.echo(format_query(data))
    if show:
        from semhash.visualize import montage_note, query_montage

        note = montage_note(results)
        if note:
            echo_err(f"--show: {note} in the picture")
        echo_err(f"wrote {query_montage(results, show, radius)}")


@click.command()
@click.option("--check", is_flag=True, help="Also run SQLite's integrity check and look for indexed files that are gone (one stat per row: slow on large indexes).")
@index_option
@home_option
@json_option
@library_errors
def status(check, index_path, home, as_json):
    """What the index holds: image count, the model it is bound to, bits, files, times (UTC).
    With --check, also whether the file is intact and how many indexed files are gone.
    --json adds the model's fingerprint and the record's generation (a counter of committed
    changes, which the lookup cache and `semhash serve` follow to know they are current).

    \b
    Examples:
      semhash status
      semhash status --check --json
    """
    from semhash.index import check_index, index_info

    _, path = _index_path(home, index_path)
    checked = check_index(path) if check else {}  # first: a damaged file is named by the check
    info = {**index_info(path), **checked}
    if as_json:
        print_json(info)
        return
    click.echo(format_status(info))


def format_status(info: dict) -> str:
    """The text `semhash status` prints, made from its --json document (which also has the
    model fingerprint and the record's generation: a counter of committed changes that the
    lookup cache and `semhash serve` follow)."""
    lines = [f"index: {info['index_path']}"]
    labels = info["labels"]
    lines.append(f"count: {info['count']} images" + (f" ({labels} label{'s' if labels != 1 else ''})" if labels else ""))
    if info.get("model"):
        shape = "x".join(str(n) for n in info["input_shape"] or [])
        lines.append(f"model: {info['model']} ({info['bits']} bits{', input ' + shape if shape else ''})")
    else:
        lines.append("model: none yet (bound by the first `semhash index`)")
    if info.get("near_code"):
        lines.append(f"near codes: {info['near_code']}, default threshold {info['near_threshold']}")
    lines.append(f"created: {_when(info['created_at'])}")
    lines.append(f"last indexed: {_when(info['last_indexed_at'])}")
    lines.append(f"lookup: {info['lookup_path']} ({'current' if info['lookup_current'] else 'rebuilt from the record when next used'})")
    if info["schema_version"] != info["supported_schema_version"]:
        lines.append(f"schema: version {info['schema_version']} (this semhash writes {info['supported_schema_version']})")
    if "integrity" in info:
        lines.append(f"integrity: {info['integrity']}")
    if "missing" in info:
        lines.append(f"missing: {info['missing']} of {info['checked']} indexed files are gone")
        if info["missing"]:
            lines.append("  `semhash remove --missing` drops their rows; for example:")
            lines += [f"  {example}" for example in info.get("missing_examples", [])]
    return "\n".join(lines)


def _when(iso: str | None) -> str:
    """``2026-12-07T00:31:02.123456+00:00`` -> ``2026-12-07 00:31:02 UTC``."""
    if not iso:
        return "never"
    return iso[:19].replace("T", " ") + (" UTC" if iso.endswith("+00:00") else "")
