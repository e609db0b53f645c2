"""semhash import"""

from __future__ import annotations

import click

from semhash.cli.cmd_index import _index_path, index_option
from semhash.cli.common import echo_err, home_option, json_option, library_errors, print_json


@click.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("--model", "model_name", required=True, help="The model that made the codes: the index is bound to it, and codes wider than its bits are refused.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@index_option
@home_option
@json_option
@library_errors
def import_(sources, model_name, quiet, index_path, home, as_json):
    """Load precomputed codes from Parquet files (or folders of them) into the index:
    columns `path` (string; or `path_bytes`, binary, preferred), `code` (integer), and
    optionally `label`, `content_hash`, `size`, `mtime`.  Rows are upserts keyed on the
    path (a path already indexed gets the new code and keeps its label).  Every file and
    row is checked first and everything is written in one transaction: a bad file or row
    is one error naming it, and the index is left as it was.  An import that creates its
    index is a bulk load: the rows are sorted in memory and the file is built aside and
    put in place when complete (about 250,000 rows/s at 10^7 rows).

    \b
    Examples:
      semhash import codes.parquet --model ae30
      semhash import shards/ --model ae30 --index big.sqlite --json
    """
    from semhash.index import printable
    from semhash.index.importer import import_parquet

    workspace, path = _index_path(home, index_path)
    model = workspace.model(model_name)
    summary = import_parquet(
        path, list(sources), model, on_warning=lambda message: echo_err(f"warning: {message}"), progress=not quiet
    )
    data = {
        "files": [printable(str(f)) for f in summary.files],
        "model": model.name,
        "rows": summary.rows,
        "added": summary.added,
        "updated": summary.updated,
        "total": summary.total,
        "seconds": round(summary.seconds, 3),
        "rows_per_s": round(summary.rows / summary.seconds) if summary.seconds > 0 else None,
        "index": str(summary.index_path),
        "lookup": str(summary.lookup_path),
    }
    if as_json:
        print_json(data)
        return
    n_files = len(data["files"])
    click.echo(
        f"imported {data['rows']} rows from {n_files} file{'s' if n_files != 1 else ''} with model {model.name}: "
        f"{data['added']} added, {data['updated']} updated; {data['total']} images in the index "
        f"({data['seconds']:.1f} s, {data['rows_per_s'] or 0:,} rows/s)"
    )
    click.echo(f"wrote:\n  {data['index']}\n  {data['lookup']}")
