"""semhash index / query / status"""

from __future__ import annotations

from pathlib import Path

import click

from semhash.cli.common import (
    echo_err,
    format_table,
    home_option,
    json_option,
    library_errors,
    print_json,
)

index_option = click.option(
    "--index",
    "index_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite index file [default: HOME/index/index.sqlite].",
)


def _index_path(home, index_path):
    from semhash.workspace import Workspace

    workspace = Workspace(home)
    return workspace, Path(index_path) if index_path else workspace.index_path


def format_index(data: dict) -> str:
    """The text `semhash index` prints, made from its --json document."""
    return (
        f"indexed {data['folder']} with model {data['model']}: {data['added']} added, {data['updated']} updated, "
        f"{data['unchanged']} unchanged, {data['removed']} removed, {data['skipped']} skipped; "
        f"{data['total']} images in the index\nwrote:\n  {data['index']}\n  {data['faiss']}"
    )


@click.command()
@click.argument("folder", type=click.Path())
@click.option("--model", "model_name", default=None, help="Model to hash with [default: the latest trained].")
@click.option("--rebuild", is_flag=True, help="Drop every indexed row and re-bind the index to this model.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@index_option
@home_option
@json_option
@library_errors
def index(folder, model_name, rebuild, batch_size, quiet, index_path, home, as_json):
    """Hash every image under FOLDER into the index (incremental: new files are added,
    changed ones rehashed, unchanged ones left alone, deleted ones removed).

    \b
    Examples:
      semhash index images/
      semhash index images/ --model ae30 --rebuild
    """
    from semhash.index import index_folder

    workspace, path = _index_path(home, index_path)
    model = workspace.model(model_name)
    summary = index_folder(
        folder,
        model,
        path,
        rebuild=rebuild,
        batch_size=batch_size,
        progress=not quiet,
        on_warning=lambda message: echo_err(f"warning: {message}"),
    )
    data = {
        "folder": str(folder),
        "model": model.name,
        "added": summary.added,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "removed": summary.removed,
        "skipped": summary.skipped,
        "total": summary.total,
        "index": str(summary.index_path),
        "faiss": str(summary.faiss_path),
    }
    if as_json:
        print_json(data)
        if summary.skipped and not (summary.added or summary.updated or summary.unchanged):
            raise click.ClickException(f"{folder}: none of its {summary.skipped} image files could be read")
        return
    click.echo(format_index(data))
    if summary.skipped and not (summary.added or summary.updated or summary.unchanged):
        # every file was unreadable: the run as a whole failed (the index is untouched)
        raise click.ClickException(f"{folder}: none of its {summary.skipped} image files could be read")


def query_json(results, radius: int) -> list[dict]:
    """What `semhash query --json` prints: one object per query image."""
    return [
        {
            "query": str(r.query),
            "code": int(r.code),
            "bits": r.bits,
            "radius": int(radius),
            "total": int(r.total),
            "matches": [{"path": m.path, "distance": int(m.distance), "label": m.label} for m in r.matches],
        }
        for r in results
    ]


def format_query(data: list[dict]) -> str:
    """The table `semhash query` prints, made from its --json document."""
    blocks = []
    for r in data:
        lines = [f"query {r['query']}  code {r['bits']}"]
        shown, total, radius = len(r["matches"]), r["total"], r["radius"]
        if not total:
            lines.append(f"no indexed image within radius {radius}")
        else:
            lines.append(format_table(["distance", "path", "label"], [(m["distance"], m["path"], m["label"]) for m in r["matches"]]))
            count = f"{shown} of {total}" if shown < total else f"{total}"
            lines.append(f"{count} match{'es' if total != 1 else ''} within radius {radius}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--radius", "-r", type=click.IntRange(0, 64), default=2, show_default=True, help="Hamming radius.")
@click.option("--limit", "-n", type=click.IntRange(1), default=None, help="At most N matches per query (the count of all of them is still printed: 'N of M matches').")
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
def query(images, radius, limit, show, index_path, home, as_json):
    """Every indexed image within Hamming RADIUS of each query image, nearest first
    (ties by path).  With --limit N the first N are printed, followed by how many there are
    in all ("8 of 13 matches within radius 2"; "total" in --json).

    \b
    Examples:
      semhash query img.png --radius 2
      semhash query a.png b.png --limit 5 --json
      semhash query img.png --show matches.png
    """
    from semhash.index import query_files

    if show:
        from semhash.visualize import check_picture_path

        show = check_picture_path(show)  # a bad picture name fails before any work
    workspace, path = _index_path(home, index_path)
    results = query_files(path, workspace, list(images), radius=radius, limit=limit)
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
@index_option
@home_option
@json_option
@library_errors
def status(index_path, home, as_json):
    """What the index holds: image count, the model it is bound to, bits, files.

    \b
    Example:
      semhash status
    """
    from semhash.index import index_info

    _, path = _index_path(home, index_path)
    info = index_info(path)
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")
