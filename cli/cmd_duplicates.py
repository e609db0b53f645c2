"""semhash duplicates"""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime, timezone

import click

from semhash.cli.common import echo_err, format_table, home_option, index_location, index_option, json_option, library_errors, print_json
from semhash.tiers import MAX_GROUP_THRESHOLD, MIN_QUALITY, NEAR_THRESHOLD, TIER_CHOICES

KEEP_CHOICES = ("largest", "oldest", "newest", "shortest-path", "original-format", "oldest-capture")
CSV_FIELDS = ("group", "role", "tier", "distance", "path", "size", "width", "height", "mtime", "format", "taken_at", "camera")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _when(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M") if seconds else ""


def _rows(data: dict):
    for number, g in enumerate(data["groups"], start=1):
        for m in [g["keeper"], *g["duplicates"]]:
            role = "keep" if m is g["keeper"] else "duplicate"
            yield number, role, m


def format_duplicates(data: dict) -> str:
    """The table `semhash duplicates` prints, made from its --json document."""
    totals = data["totals"]
    lines = []
    if data["groups"]:
        table = [
            (number, role, "" if role == "keep" else m["tier"], "" if role == "keep" else m["distance"], m["path"],
             _size(m["size"]), f"{m['width']}x{m['height']}" if m["width"] else "", m.get("format") or "",
             _when(m.get("taken_at")), _when(m["mtime"]))
            for number, role, m in _rows(data)
        ]  # fmt: skip
        headers = ["group", "role", "tier", "distance", "path", "size", "pixels", "format", "taken (UTC)", "modified (UTC)"]
        lines.append(format_table(headers, table))
    tiers = data["tiers"][0] if len(data["tiers"]) == 1 else ", ".join(data["tiers"][:-1]) + " and " + data["tiers"][-1]
    lines.append(
        f"{totals['groups']} group{'s' if totals['groups'] != 1 else ''} of copies ({tiers} tiers) among "
        f"{totals['images']} images: {totals['redundant_files']} redundant files, {_size(totals['reclaimable_bytes'])} reclaimable"
    )
    return "\n".join(lines)


def format_csv(data: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for number, role, m in _rows(data):
        writer.writerow([number, role, "" if role == "keep" else m["tier"], "" if role == "keep" else m["distance"], m["path"],
                         m["size"], m["width"] or "", m["height"] or "", m["mtime"], m.get("format") or "",
                         "" if m.get("taken_at") is None else m["taken_at"], m.get("camera") or ""])  # fmt: skip
    return out.getvalue()


@click.command()
@click.option("--tier", type=click.Choice(TIER_CHOICES), default="near", show_default=True, help="The loosest tier that makes a copy: exact (the same bytes), near (also re-saved, resized, brightened... copies: PDQ), similar (also look-alikes: the model's code within --radius; all is the same).")
@click.option("--near-threshold", type=click.IntRange(0, MAX_GROUP_THRESHOLD), default=None, metavar="BITS", help=f"Near tier: the most bits a copy's near code may differ by: PDQ's of 256, at most {MAX_GROUP_THRESHOLD} [default: {NEAR_THRESHOLD}]; a near model's, at most half its bits [default: the index's, 9 of 64].")
@click.option("--radius", "-r", type=click.IntRange(0, 64), default=None, help="Similar tier: Hamming radius of the model's code (needed with --tier similar).")
@click.option("--keep", type=click.Choice(KEEP_CHOICES), default="largest", show_default=True, help="Which image of a group is kept: largest (most pixels, then bytes), oldest or newest (modification time), shortest-path, original-format (a RAW file over HEIC/AVIF over JPEG and the rest, then the largest), oldest-capture (the EXIF capture time, else the modification time; then the largest).")
@click.option("--min-quality", type=click.IntRange(0, 100), default=MIN_QUALITY, show_default=True, help="Images whose PDQ quality is below this (flat: blank, nearly uniform) take no part in the near tier (their exact copies are still found).")
@click.option("--mirrors", is_flag=True, help="Also find copies that were mirrored or rotated by 90/180/270 degrees (searches each image's 8 orientations: slower).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one line per file (group, role, tier, distance, path, size, width, height, mtime).")
@click.option("--move-to", type=click.Path(file_okay=False), default=None, metavar="DIR", help="Move every duplicate (not the keepers) into DIR under its full path, writing DIR/semhash-moves-*.jsonl first; nothing is deleted or overwritten, and the index forgets the moved files.")
@click.option("--decided", is_flag=True, help="Only the groups decided on the review page (`semhash serve --review`) with 'keep', each keeping the image chosen there: with --move-to, the review's plan.")
@click.option("--plan", type=click.Path(dir_okay=False), default=None, metavar="FILE", help="The plan downloaded from the review page (semhash-plan.json): only its groups, each keeping the image chosen there, found again with the plan's tier, threshold and keep rule; a group that changed since is left alone (a warning says so). With --move-to, moves its duplicates.")
@click.option("--undo", type=click.Path(dir_okay=False, exists=True), default=None, metavar="MANIFEST", help="Put back every file a --move-to run moved (its manifest).")
@click.option("--calibrate", is_flag=True, help="Instead of listing groups: copy a sample of the indexed images with the usual edits (JPEG, resize, brightness, crop, rotation, mirror, padding, overlay, blur; in memory, no file written) and print, per near threshold, the share of copies that find their original and the share that match another image.")
@click.option("--sample", type=click.IntRange(1), default=100, show_default=True, help="--calibrate: how many indexed images to copy.")
@index_option
@home_option
@json_option
@library_errors
def duplicates(tier, near_threshold, radius, keep, min_quality, mirrors, as_csv, move_to, decided, plan, undo, calibrate,
               sample, index_path, home, as_json):  # fmt: skip
    """Every group of copies in the index: the same bytes (exact tier) and copies that were
    re-saved, resized, re-encoded or brightened (near tier: PDQ codes within
    --near-threshold), and with --tier similar look-alikes too.  Each group has one image to
    keep (--keep) and its duplicates, each within the threshold of the keeper (groups never
    chain).  Groups marked "not duplicates" never come back.  Totals: groups, redundant
    files, bytes reclaimable.

    \b
    Examples:
      semhash duplicates
      semhash duplicates --keep oldest --csv > dups.csv
      semhash duplicates --tier similar --radius 1 --json
      semhash duplicates --move-to ~/duplicates      # prints how to undo
      semhash duplicates --decided --move-to ~/dups  # what was decided on the review page
      semhash duplicates --plan semhash-plan.json --move-to ~/dups  # the page's download
      semhash duplicates --undo ~/duplicates/semhash-moves-20261207T101500000000Z.jsonl
      semhash duplicates --calibrate --sample 50      # what the thresholds mean here
    """
    from semhash.duplicates import decided_only, find_duplicates, follow_plan, move_duplicates, read_plan, undo_moves

    if calibrate:
        if move_to or undo or as_csv:
            raise click.UsageError("--calibrate lists no groups: it does not go with --move-to, --undo or --csv")
        _calibrate(home, index_path, sample, min_quality, as_json)
        return
    if as_csv and as_json:
        raise click.UsageError("give --csv or --json, not both")
    if undo:
        if move_to:
            raise click.UsageError("give --move-to or --undo, not both")
        result = undo_moves(undo)
        if as_json:
            print_json({"restored": result.restored, "already_back": result.already_back, "conflicts": result.conflicts})
        else:
            click.echo(f"put back {result.restored} files ({result.already_back} were already in place)")
        for path in result.conflicts:
            echo_err(f"warning: {path}: a file is in both places: left as it is")
        if result.restored:
            echo_err("run `semhash index` on their folders to index them again")
        if result.conflicts:
            sys.exit(1)
        return
    if plan and decided:
        raise click.UsageError("give --plan or --decided, not both")
    _, path = index_location(home, index_path)
    planned = read_plan(plan) if plan else None
    if planned is not None:  # the groups as the page listed them
        tier, near_threshold, radius, keep = planned["tiers"][-1], planned["near_threshold"], planned["radius"], planned["keep"]
    report = find_duplicates(path, tier=tier, near_threshold=near_threshold, radius=radius, keep=keep,
                             min_quality=min_quality, mirrors=mirrors)  # fmt: skip
    if decided:
        report = decided_only(report)
    if planned is not None:
        report, changed = follow_plan(report, planned)
        for key in changed:
            echo_err(f"warning: {plan}: group {key[:12]}... is not in the index as planned (a file was added, moved or changed since): left alone")
    data = report.to_json()
    if as_json and not move_to:
        print_json(data)
    elif as_csv:
        click.echo(format_csv(data), nl=False)
    elif not move_to:
        click.echo(format_duplicates(data))
    if report.too_flat:
        echo_err(f"note: {report.too_flat} images too flat for the near tier (PDQ quality below {min_quality}) were left out of it")
    if report.without_near_code and "near" in report.tiers:
        echo_err(f"note: {report.without_near_code} images have no near code yet: run `semhash index` on their folders")
    if move_to:
        summary = move_duplicates(path, report, move_to)
        if summary.manifest is None:
            if as_json:
                print_json({**data, "moved": 0, "bytes_moved": 0, "manifest": None, "missing": []})
            else:
                click.echo("no duplicates to move")
            return
        if as_json:
            print_json({**data, "moved": summary.moved, "bytes_moved": summary.bytes, "manifest": str(summary.manifest),
                        "missing": summary.missing})  # fmt: skip
        else:
            click.echo(f"moved {summary.moved} duplicates ({_size(summary.bytes)}) into {move_to}")
        for key in summary.missing:
            echo_err(f"warning: {key}: no longer there: not moved")
        echo_err(f"manifest: {summary.manifest}\nundo with: semhash duplicates --undo {summary.manifest}")


def _calibrate(home, index_path, sample: int, min_quality: int, as_json: bool) -> None:
    from tqdm import tqdm

    from semhash.duplicates import calibrate

    workspace, path = index_location(home, index_path)
    with tqdm(total=sample, desc="copying", unit="img", file=sys.stderr, leave=False, disable=as_json) as bar:
        result = calibrate(path, sample=sample, min_quality=min_quality, on_progress=lambda n: bar.update(n - bar.n),
                           workspace=workspace)  # fmt: skip
    data = result.to_json()
    if as_json:
        print_json(data)
        return
    edits = list(data["recall"])
    rows = []
    for k, t in enumerate(data["thresholds"]):
        mark = " (default)" if t == data["default_threshold"] else ""
        rows.append((f"{t}{mark}", *(f"{data['recall'][e][k]:.0%}" for e in edits), f"{data['false_match'][k]:.1%}"))
    click.echo(format_table(["threshold", *edits, "false matches"], rows))
    click.echo(
        f"{data['sampled']} indexed images copied {len(edits)} ways (in memory): each column is the share of copies "
        f"that find their original within the threshold (bits of the near code: {data['near_code']}); false matches: the share of copies "
        "matching another indexed image"
    )
    for line in data["skipped"][:5]:
        echo_err(f"warning: {line}")
