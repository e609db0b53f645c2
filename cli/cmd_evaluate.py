"""semhash evaluate"""

from __future__ import annotations

import click

from semhash.cli.common import (
    IndexLocationType,
    echo_err,
    format_table,
    home_option,
    index_location,
    json_option,
    library_errors,
    print_json,
    print_paths,
)

_DEFAULT_INDEX = ""  # what a bare --index (no FILE) stands for: HOME/index/index.sqlite


def format_evaluation(data: dict) -> str:
    """The text `semhash evaluate` prints, made from its --json document."""
    from semhash.report import format_headline

    lines = [f"{data['model']}: {data['source']}", format_headline(data["result"]), "wrote:"]
    lines += [f"  {p}" for p in data["paths"]]
    return "\n".join(lines)


def format_comparison(rows: list[dict]) -> str:
    headers = list(rows[0])
    return format_table(headers, [[row[h] for h in headers] for row in rows])


@click.command()
@click.option("--model", "model_name", default=None, help="Model to evaluate [default: the latest trained].")
@click.option("--dataset", default=None, help="Built-in dataset [default: the one the model was trained on].")
@click.option(
    "--index",
    "index_path",
    is_flag=False,
    flag_value=_DEFAULT_INDEX,
    default=None,
    metavar="FILE|URL",
    type=IndexLocationType(),
    help="Evaluate the index FILE (or PostgreSQL URL) instead: leave-one-out over its labelled images "
    "(a bare --index: HOME/index/index.sqlite).",
)
@click.option("--index-path", "old_index_path", type=click.Path(dir_okay=False), default=None, hidden=True)
@click.option("--compare", multiple=True, metavar="MODEL", help="Compare several models side by side (repeat, or give several after one --compare).")
@click.argument("more_models", nargs=-1, metavar="[MODEL...]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None, help="Report folder [default: HOME/reports/MODEL-DATASET].")
@home_option
@json_option
@library_errors
def evaluate(model_name, dataset, index_path, old_index_path, compare, more_models, data_dir, out, home, as_json):
    """Purity report: Gini purity of the images that share (or nearly share) a code,
    beside coverage, mAP (tie-aware Hamming ranking) and precision within radius 2.

    What is evaluated (the first line of the output says which): with --index FILE, that
    index (each labelled image queries all the others); with --dataset, or for a model
    trained on a built-in dataset, that dataset's query split against its database split;
    for a model trained on an image folder, the workspace index built with it.  Writes
    report.json, report.md and PNG figures, and prints where.

    \b
    Examples:
      semhash evaluate
      semhash evaluate --model ae30 --dataset mnist-5k
      semhash evaluate --index other/index.sqlite
      semhash evaluate --compare ae30 itq-1 lsh-1
    """
    from semhash.pipeline import compare_models, evaluate as evaluate_what_there_is
    from semhash.workspace import Workspace

    workspace = Workspace(home)
    if old_index_path is not None:
        echo_err("warning: --index-path is deprecated: use --index FILE")
        index_path = old_index_path
    if compare or more_models:
        rows = compare_models(workspace, [*compare, *more_models], dataset, data_dir)
        print_json(rows) if as_json else click.echo(format_comparison(rows))
        return
    if index_path == _DEFAULT_INDEX:
        index_path = workspace.index_path
    elif index_path is not None:
        workspace, index_path = index_location(home, index_path)
    run = evaluate_what_there_is(workspace, model_name, dataset, index_path, data_dir, out)
    data = {"model": run.model, "source": run.source, "result": run.result, "paths": [str(p) for p in run.paths]}
    print_json(data) if as_json else click.echo(format_evaluation(data))
