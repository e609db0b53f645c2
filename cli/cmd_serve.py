"""semhash serve"""

from __future__ import annotations


import click

from semhash.cli.common import home_option, index_location, index_option, library_errors


@click.command()
@index_option
@home_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback only by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Server processes (each opens the index and loads the model).")
@click.option("--quiet", is_flag=True, help="No log line per request.")
@click.option("--review", is_flag=True, help="Also record decisions about groups of duplicates (POST /api/duplicates/decisions): the only thing the server then writes.")
@library_errors
def serve(index_path, home, host, port, workers, quiet, review):
    """Serve the index over HTTP: a page at / to search it by image and browse it by
    similarity, and a JSON API (its schema and a console at /docs).  Read-only: nothing a
    request does changes the index (with --review, only the decisions about groups of
    duplicates are written); a re-index is picked up without a restart.

    \b
    Examples:
      semhash serve                          # then open http://127.0.0.1:8000/
      semhash serve --home semhash-demo --port 8080
      semhash serve --review                 # decisions about duplicates are recorded
      curl -F files=@img.png 'http://127.0.0.1:8000/api/search/upload?radius=2&limit=5'
    """
    from semhash.web.app import run_server

    workspace, path = index_location(home, index_path)
    run_server(
        path,
        workspace,
        host=host,
        port=port,
        workers=workers,
        access_log=not quiet,
        on_ready=lambda line: click.echo(line),
        review=review,
    )
