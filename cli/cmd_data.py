"""semhash export-dataset"""

from __future__ import annotations

import click

from semhash.cli.common import echo_err, library_errors


@click.command("export-dataset")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--part", type=click.Choice(["all", "database", "query"]), default="all", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@library_errors
def export_dataset(name, directory, part, data_dir):
    """Write built-in dataset NAME as labelled PNGs: DIRECTORY/LABEL/NAME-ROW.png.

    \b
    Examples:
      semhash export-dataset mnist-5k images/ --part database
      semhash export-dataset digits digits/
    """
    from semhash.data import export_dataset as export

    echo_err(f"writing {name} ({part}) to {directory} ...")
    paths = export(name, directory, data_dir=data_dir, part=part)
    click.echo(f"wrote {len(paths)} images to {directory}")
