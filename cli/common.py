"""Helpers shared by the commands: the --home option, errors, tables, JSON."""

from __future__ import annotations

import errno
import functools
import json
import sqlite3
import sys
from typing import Any, Callable, Iterable, Sequence

import click

from semhash.errors import SemhashError
from semhash.lifetime import reraise_interrupt

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="SEMHASH_HOME",
    default=None,
    help="Workspace folder for models, index and reports [env SEMHASH_HOME; default ./semhash-workspace].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")

INDEX_HELP = (
    "The index: a SQLite file, or a PostgreSQL database URL "
    "postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DBNAME [default: HOME/index/index.sqlite]."
)


class IndexLocationType(click.ParamType):
    """``--index``: a SQLite file path or a database URL (kept as given; :func:`index_location`
    resolves it).  A folder is refused here, as ``click.Path(dir_okay=False)`` did."""

    name = "FILE|URL"

    def convert(self, value, param, ctx):
        from semhash.index.db import is_database_url

        if not isinstance(value, str) or is_database_url(value):
            return value
        return click.Path(dir_okay=False).convert(value, param, ctx)


index_option = click.option("--index", "index_path", type=IndexLocationType(), default=None, help=INDEX_HELP)


def index_location(home, index_path):
    """(workspace, where the index is): ``--index`` as given (a file path, or a database URL
    whose caches go under HOME/cache), else the workspace's own index file."""
    from pathlib import Path

    from semhash.index.db import IndexLocation, is_database_url
    from semhash.workspace import Workspace

    workspace = Workspace(home)
    if not index_path:
        return workspace, workspace.index_path
    if is_database_url(index_path):
        try:
            return workspace, IndexLocation.parse(index_path, cache_root=workspace.root / "cache")
        except SemhashError as exc:
            raise click.ClickException(str(exc)) from None
    return workspace, Path(index_path)


def library_errors(func: Callable) -> Callable:
    """Turn library errors into one-line click errors (exit code 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SemhashError as exc:
            reraise_interrupt(exc)  # an error that a Ctrl-C or SIGTERM caused is that signal
            raise click.ClickException(str(exc)) from None
        except sqlite3.Error as exc:  # a raw statement (the bulk import's) stopped by Ctrl-C
            reraise_interrupt(exc)
            raise
        except OSError as exc:  # a file or folder the command had to write (read-only, full disk)
            raise click.ClickException(os_error_line(exc)) from None

    return wrapper


def os_error_line(exc: OSError) -> str:
    """``semhash-workspace/reports: cannot write here (Read-only file system)``: the file and
    the cause, one line."""
    from semhash.index import printable

    where = printable(str(exc.filename)) if exc.filename is not None else "a file"
    cause = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return f"{where}: the disk is full ({cause})"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where}: cannot write here ({cause})"
    return f"{where}: {cause}"


def echo_err(message: str) -> None:
    """A line on stderr.  Through tqdm's writer, which clears any progress bar on stderr first
    and redraws it after, so a warning never lands in the middle of a bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [["" if v is None else _fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def print_paths(title: str, paths: Iterable) -> None:
    click.echo(f"{title}:")
    for p in paths:
        click.echo(f"  {p}")


def is_tty_stderr() -> bool:
    return sys.stderr.isatty()
