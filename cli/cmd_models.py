"""semhash models"""

from __future__ import annotations

import click

from semhash.cli.common import format_table, home_option, json_option, library_errors, print_json


@click.command()
@click.option("--kinds", is_flag=True, help="List the model kinds that 'semhash train --model' accepts.")
@home_option
@json_option
@library_errors
def models(kinds, home, as_json):
    """List trained models: name, kind, bits, dataset, date and headline metrics
    (query split vs database split).

    \b
    Examples:
      semhash models
      semhash models --kinds
    """
    if kinds:
        from semhash.models import KINDS

        rows = [(kind, entry.summary) for kind, entry in KINDS.items()]
        if as_json:
            print_json([{"kind": k, "description": d} for k, d in rows])
        else:
            click.echo(format_table(["kind", "description"], rows))
        return
    from semhash.workspace import Workspace

    infos = Workspace(home).list_models()
    rows = []
    for info in infos:
        head = info.meta.get("headline") or {}
        metrics = info.meta.get("metrics") or {}
        rows.append(
            {
                "name": info.name,
                "kind": info.kind,
                "bits": info.bits,
                "dataset": info.meta.get("dataset"),
                "created": info.meta.get("created_at", "")[:16].replace("T", " "),
                "map": head.get("map"),
                "p@r2": head.get("precision_r2"),
                "purity": head.get("bucket_purity"),
                "coverage": head.get("bucket_coverage"),
                "accuracy": metrics.get("accuracy"),
            }
        )
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("no trained models yet: run 'semhash train'")
    else:
        headers = list(rows[0])
        click.echo(format_table(headers, [[r[h] for h in headers] for r in rows]))
