"""semhash evaluate"""

from __future__ import annotations

import click

from semhash.cli.common import format_table, home_option, json_option, library_errors, print_json, print_paths


@click.command()
@click.option("--model", "model_name", default=None, help="Model to evaluate [default: the latest trained].")
@click.option("--dataset", default=None, help="Built-in dataset [default: the one the model was trained on].")
@click.option("--index", "use_index", is_flag=True, help="Evaluate the index instead: leave-one-out over its labelled images.")
@click.option("--index-path", type=click.Path(dir_okay=False), default=None, help="SQLite index file [default: HOME/index/index.sqlite].")
@click.option("--compare", multiple=True, metavar="MODEL", help="Compare several models side by side (repeat, or give several after one --compare).")
@click.argument("more_models", nargs=-1, metavar="[MODEL...]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None, help="Report folder [default: HOME/reports/MODEL-DATASET].")
@home_option
@json_option
@library_errors
def evaluate(model_name, dataset, use_index, index_path, compare, more_models, data_dir, out, home, as_json):
    """Purity report: Gini purity of the images that share (or nearly share) a code,
    beside coverage, mAP (tie-aware Hamming ranking) and precision within radius 2.

    By default the model's dataset query split is searched against its database split.
    Writes report.json, report.md and PNG figures, and prints where.

    \b
    Examples:
      semhash evaluate
      semhash evaluate --model ae30 --dataset mnist-5k
      semhash evaluate --index
      semhash evaluate --compare ae30 itq-1 lsh-1
    """
    from semhash.pipeline import compare_models, evaluate_index, evaluate_on_dataset
    from semhash.report import format_headline
    from semhash.workspace import Workspace

    workspace = Workspace(home)
    if compare or more_models:
        rows = compare_models(workspace, [*compare, *more_models], dataset, data_dir)
        if as_json:
            print_json(rows)
        else:
            headers = list(rows[0])
            click.echo(format_table(headers, [[row[h] for h in headers] for row in rows]))
        return
    if use_index or index_path:
        run = evaluate_index(workspace, index_path or workspace.index_path, out)
    else:
        run = evaluate_on_dataset(workspace, model_name, dataset, data_dir, out)
    if as_json:
        print_json({"model": run.model, "source": run.source, "result": run.result, "paths": [str(p) for p in run.paths]})
        return
    click.echo(f"{run.model}: {run.source}")
    click.echo(format_headline(run.result))
    print_paths("wrote", run.paths)
