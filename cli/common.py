"""Helpers shared by the commands: the --home option, errors, tables, JSON."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, Iterable, Sequence

import click

from semhash.errors import SemhashError

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="SEMHASH_HOME",
    default=None,
    help="Workspace folder for models, index and reports [env SEMHASH_HOME; default ./semhash-workspace].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")


def library_errors(func: Callable) -> Callable:
    """Turn library errors into one-line click errors (exit code 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SemhashError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


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
