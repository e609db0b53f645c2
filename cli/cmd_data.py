"""semhash export-dataset"""

from __future__ import annotations

import click

from semhash.cli.common import echo_err, json_option, library_errors, print_json


def format_export(data: dict) -> str:
    """The text `semhash export-dataset` prints, made from its --json document."""
    return f"wrote {data['count']} images to {data['directory']}"


@click.command("export-dataset")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--part", type=click.Choice(["all", "database", "query"]), default="all", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@json_option
@library_errors
def export_dataset(name, directory, part, data_dir, as_json):
    """Write built-in dataset NAME as labelled PNGs: DIRECTORY/LABEL/NAME-ROW.png.

    \b
    Examples:
      semhash export-dataset mnist-5k images/ --part database
      semhash export-dataset digits digits/
    """
    from semhash.data import export_dataset as export

    echo_err(f"writing {name} ({part}) to {directory} ...")
    paths = export(name, directory, data_dir=data_dir, part=part)
    data = {"dataset": name, "part": part, "directory": str(directory), "count": len(paths)}
    print_json(data) if as_json else click.echo(format_export(data))
