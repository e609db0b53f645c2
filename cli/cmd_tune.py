"""semhash tune"""

from __future__ import annotations

import click

from semhash.cli.common import echo_err, format_table, home_option, json_option, library_errors, print_json


@click.command()
@click.argument("data", default="mnist-5k", metavar="[DATA]")
@click.option("--model", "kind", default="autoencoder", show_default=True, metavar="KIND", help="Model kind to tune; see 'semhash models --kinds'.")
@click.option("--param", "grid_items", multiple=True, metavar="NAME=V1,V2,...",
              help="Values to try for one hyperparameter (repeatable), e.g. noise=2,4,8 or hidden=500x300,256x128.")
@click.option("--folds", type=click.IntRange(2), default=3, show_default=True, help="Cross-validation folds.")
@click.option("--n-iter", type=click.IntRange(1), default=None, help="Random search: try N settings drawn from the grid [default: the whole grid].")
@click.option("--metric", type=click.Choice(["map", "precision_r2"]), default="map", show_default=True,
              help="Score of each held-out fold querying the training folds.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the best setting as JSON for 'semhash train --config'.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the folds, the random search and --limit.")
@click.option("--limit", type=click.IntRange(2), default=None, help="Tune on a stratified random subset of N images (faster).")
@click.option("--part", type=click.Choice(["database", "all"]), default="database", show_default=True,
              help="Which images to cross-validate on; 'database' keeps the query split unseen.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where IDX files of fashion-mnist / mnist live.")
@click.option("--image-size", type=click.IntRange(4, 512), default=None, help="Image folders: resize to SIZE x SIZE [default: 28].")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Image folders: 1 (grayscale) or 3 (RGB) [default: 1].")
@home_option
@json_option
@library_errors
def tune(data, kind, grid_items, folds, n_iter, metric, output, seed, limit, part, data_dir, image_size, channels, home, as_json):
    """Find hyperparameters of a model kind by k-fold cross-validation on DATA (a built-in
    dataset or a labelled image folder): every setting is fitted on k-1 folds and scored by
    the held-out fold's images querying the other folds' images.

    Every fit trains a model: the first fold's time gives an estimate of the whole search
    on stderr.  Ctrl-C stops it, prints the settings measured so far and writes the best
    of them with -o (exit code 1).

    \b
    Examples:
      semhash tune --param noise=4,8 --param epochs=10 --limit 1000 --folds 2 -o best.json
      semhash tune --param noise=2,4,8 --param learning_rate=0.001,0.0003 -o best.json
      semhash tune --param hidden=500x300,256x128 --param epochs=10 --n-iter 4
      semhash tune --model itq --param bits=16,30,64 --metric precision_r2
      semhash train --config best.json              # train the winner
    """
    from semhash.data import load_data
    from semhash.tune import format_value, parse_param_grid, subsample, tune as run_tune, write_best_config
    from semhash.workspace import Workspace

    grid = parse_param_grid(list(grid_items), kind=kind)
    shape = None
    if image_size or channels:
        size = image_size or 28
        shape = (size, size, int(channels or 1))
    dataset = load_data(data, shape=shape, data_dir=data_dir, on_skip=lambda exc: echo_err(f"warning: skipped {exc}"))
    images, labels = dataset.part(part)
    images, labels = subsample(images, labels, limit, seed) if limit else (images, labels)
    result = run_tune(
        kind,
        images,
        labels,
        grid,
        folds=folds,
        n_iter=n_iter,
        metric=metric,
        seed=seed,
        log=echo_err,
        workspace=Workspace(home),
        class_names=dataset.class_names,
    )
    written = write_best_config(result, output) if output else None

    if as_json:
        doc = {"data": data, "part": part, **result.to_dict()}
        doc["config"] = str(written) if written else None
        print_json(doc)
        _fail_if_interrupted(result)
        return
    names = list(grid)
    headers = ["rank", *names, metric, "std", "folds", "seconds"]
    rows = []
    for rank, trial in enumerate(result, 1):
        scores = " ".join("-" if s != s else f"{s:.3f}" for s in trial.fold_scores)
        if trial.error:
            scores = trial.error if trial.error.startswith("interrupted") else f"failed: {trial.error}"
        rows.append([
            rank,
            *(format_value(trial.params.get(n)) for n in names),
            None if trial.mean != trial.mean else trial.mean,
            None if trial.std != trial.std else trial.std,
            scores,
            f"{trial.seconds:.1f}",
        ])
    click.echo(f"{kind} on {data} ({part}, {result.n_images} images), {folds}-fold {metric}:")
    click.echo(format_table(headers, rows))
    best = result.best
    click.echo(f"best: {' '.join(f'{k}={format_value(v)}' for k, v in best.params.items()) or '(defaults)'} "
               f"{metric} {best.mean:.4f} +- {best.std:.4f}")
    if written:
        click.echo(f"wrote {written}; train it with: semhash train {data} --config {written}")
    _fail_if_interrupted(result)


def _fail_if_interrupted(result) -> None:
    """After a Ctrl-C the measured settings were printed (and the best written); the run as a
    whole did not finish, so the exit code says so."""
    if result.interrupted:
        measured = sum(t.error is None for t in result)
        raise click.ClickException(f"interrupted: {measured} of {result.settings} settings measured (shown above)")
