"""semhash train"""

from __future__ import annotations

import click

from semhash.cli.common import echo_err, home_option, json_option, library_errors, print_json


def _hidden(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("use sizes like 500,300") from None


def format_train(data: dict) -> str:
    """The text `semhash train` prints, made from its --json document."""
    meta = data["meta"]
    coding = meta["coding"]
    lines = [
        f"trained {meta['name']} ({meta['kind']}, {meta['bits']} bits) on {meta['dataset']}: "
        f"{meta['n_train_images']} images in {meta['train_seconds']:.1f} s on {meta['device']}"
    ]
    sat = coding.get("saturation")
    lines.append(
        f"codings: {coding['distinct_codes']} distinct codes, {coding['constant_bits']} constant bits"
        + (f", {sat:.1%} saturated (<0.1 or >0.9)" if sat is not None else "")
    )
    head = meta.get("headline") or {}
    if head:
        lines.append(
            f"query split vs database split: mAP {head['map']:.4f}, P@r2 {head['precision_r2']:.4f} "
            f"(queries with a hit {head['hit_rate_r2']:.1%}), bucket purity {head['bucket_purity']:.4f} "
            f"at coverage {head['bucket_coverage']:.1%}"
        )
    for key, value in (meta.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"{key}: {int(value)}" if float(value).is_integer() else f"{key}: {value:.4f}")
    lines.append("wrote:")
    lines += [f"  {p}" for p in data["paths"]]
    return "\n".join(lines)


@click.command()
@click.argument("data", default="mnist-5k", metavar="[DATA]")
@click.option("--model", "kind", default=None, metavar="KIND", help="Model kind [default: autoencoder]; see 'semhash models --kinds'.")
@click.option("--name", default=None, help="Name of the trained model [default: KIND-N].")
@click.option("--bits", type=click.IntRange(1, 64), default=None, help="Code length in bits [default: 30].")
@click.option("--noise", type=click.FloatRange(0), default=None, help="Stddev of the Gaussian noise on the coding layer's inputs (training only).")
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--seed", type=int, default=None, help="Random seed; the same seed reproduces the same model.")
@click.option("--validation-split", type=click.FloatRange(0, 0.9), default=None, help="Share held out for early stopping.")
@click.option("--patience", type=click.IntRange(0), default=None, help="Early-stopping patience in epochs (0: off).")
@click.option("--hidden", callback=_hidden, default=None, help="Hidden layer sizes [autoencoder default: 1000,500].")
@click.option("--tied/--untied", default=None, help="Autoencoder: decoder uses the transposed encoder kernels.")
@click.option("--pretrain", type=click.Choice(["gaussian", "dropout"]), default=None, help="Autoencoder: greedy layer-wise denoising pretraining.")
@click.option("--conv/--dense", default=None, help="VAE: convolutional encoder/decoder; autoencoder: convolutional encoder.")
@click.option("--latent-dim", type=click.IntRange(1), default=None, help="VAE: latent dimensions [default: --bits].")
@click.option("--labeled-fraction", type=click.FloatRange(0, 1, min_open=True), default=None, help="Classifiers: stratified share of labels used.")
@click.option("--encoder", default=None, help="pretrained-classifier: name of a trained autoencoder or contrastive model to reuse.")
@click.option("--param", "extra", multiple=True, metavar="KEY=VALUE", help="Any other hyperparameter of the kind (repeatable).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="JSON written by 'semhash tune'; explicit options win.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where IDX files of fashion-mnist / mnist live.")
@click.option("--image-size", type=click.IntRange(4, 512), default=None, help="Image folders: resize to SIZE x SIZE [default: 28; copy: 64].")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Image folders: 1 (grayscale) or 3 (RGB) [default: 1; copy: 3].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@home_option
@json_option
@library_errors
def train(data, kind, name, config_path, extra, data_dir, image_size, channels, quiet, home, as_json, **options):
    """Train a hashing model on DATA: a built-in dataset (mnist-5k, digits, fashion-mnist,
    mnist) or a folder of images (labels from first-level subfolders).

    \b
    Examples:
      semhash train                                   # default autoencoder on mnist-5k
      semhash train mnist-5k --bits 30 --noise 4 --epochs 30 --name ae30
      semhash train photos/ --image-size 32 --channels 3
      semhash train --model itq --bits 64
      semhash train --model classifier-hash --labeled-fraction 0.1
      semhash train --config best.json                # from 'semhash tune'
    """
    from semhash.train import load_config, train as train_model
    from semhash.tune import parse_value
    from semhash.workspace import Workspace

    params: dict = {}
    config_kind = None
    if config_path:
        config_kind, params = load_config(config_path)
    for item in extra:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--param")
        key, value = item.split("=", 1)
        params[key.strip().replace("-", "_")] = parse_value(value.strip())
    params.update({k: v for k, v in options.items() if v is not None})
    kind = kind or config_kind or "autoencoder"
    shape = None
    if image_size or channels:
        from semhash.models import get_kind

        default = get_kind(kind).folder_shape  # the kind's own (copy: 64 x 64 RGB)
        shape = (image_size or default[0], image_size or default[1], int(channels or default[2]))
    result = train_model(
        data,
        kind,
        params,
        name=name,
        workspace=Workspace(home),
        data_dir=data_dir,
        image_shape=shape,
        verbose=0 if quiet else 1,
        log=echo_err,
    )
    data = {"name": result.model.name, "directory": str(result.model.directory), "meta": result.model.meta, "paths": [str(p) for p in result.paths]}
    print_json(data) if as_json else click.echo(format_train(data))
