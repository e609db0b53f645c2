"""semhash generate / semhash inspect"""

from __future__ import annotations

import click

from semhash.cli.common import home_option, library_errors, print_paths


@click.command()
@click.option("--model", "name", default=None, metavar="NAME", help="A trained generative model (kind vae) [default: the latest model].")
@click.option("--n", "n", type=click.IntRange(1, 10000), default=60, show_default=True, help="How many images to generate.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default="grid.png", show_default=True, help="PNG file for the grid.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random codings.")
@click.option("--data", default=None, help="Dataset for the latent scatter of a 2-D VAE [default: the model's training dataset].")
@home_option
@library_errors
def generate(name, n, output, seed, data, home):
    """Generate new images with a VAE: decode N random codings drawn from N(0, I) into a
    grid PNG.  With a 2-D latent space (--latent-dim 2) also writes the latent manifold and
    a scatter of the query images' latent means coloured by label.

    \b
    Examples:
      semhash train --model vae --name vae30
      semhash generate --model vae30 --n 60 -o grid.png
      semhash train --model vae --latent-dim 2 --name vae2 && semhash generate --model vae2
    """
    from semhash.generate import generate_from_workspace

    paths = generate_from_workspace(name, n, output, seed=seed, home=home, data=data)
    print_paths("wrote", paths)


@click.command()
@click.argument("name", required=False, metavar="[MODEL]")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default=None, help="Folder for the figures [default: <home>/reports/MODEL/inspect].")
@click.option("--data", default=None, help="Dataset whose images are shown [default: the model's training dataset].")
@home_option
@library_errors
def inspect(name, output, data, home):
    """Show what MODEL (default: the latest) learned: originals beside reconstructions
    (autoencoders, VAE), first-layer features as images, the images that switch each bit on
    most strongly, and for classifiers the accuracy and confusion matrix.

    \b
    Examples:
      semhash inspect
      semhash inspect ae30 -o ae30-figures/
    """
    from semhash.inspect_model import inspect_from_workspace

    paths = inspect_from_workspace(name, output, home=home, data=data)
    print_paths("wrote", paths)
