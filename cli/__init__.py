"""The `semhash` command line (installed as semhash.cli).

Each command parses its arguments, calls one library function and formats the result:
results on stdout (a table, or --json), progress and warnings on stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import click

from semhash import __version__
from semhash.errors import SemhashWarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """One line on stderr per warning, through tqdm's writer so that a running progress bar
    is redrawn below it instead of being broken."""
    from tqdm import tqdm

    text = str(message).strip().splitlines()
    text = text[0] if text else category.__name__
    prefix = "" if issubclass(category, SemhashWarning) else f"{category.__name__}: "
    tqdm.write(f"warning: {prefix}{text}", file=sys.stderr)


@contextlib.contextmanager
def one_line_warnings():
    """While a command runs, Python warnings print as ``warning: ...`` (one line, no source
    line) and every SemhashWarning is shown, not only its first occurrence."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", SemhashWarning)
        warnings.showwarning = _show_warning
        yield


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="semhash")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Semantic hashing for image retrieval: learn short binary codes for images, then find
    similar images at once by Hamming radius.

    \b
    Quick start:
      semhash demo                          # everything below on 5,000 MNIST digits, in ./semhash-demo
      semhash train mnist-5k                # train the default autoencoder
      semhash index images/                 # hash every image under a folder
      semhash query img.png --radius 2      # every indexed image within Hamming radius 2
      semhash evaluate                      # purity / coverage / mAP report
      semhash serve                         # a page and an HTTP API at http://127.0.0.1:8000/
    """
    ctx.with_resource(one_line_warnings())


def run() -> None:
    """The `semhash` program: :func:`main`, with SIGTERM ending it as Ctrl-C does (every
    cleanup runs: no temporary file or half-written model is left behind; exit status 143)."""
    from semhash import lifetime

    lifetime.terminate_as_interrupt()
    try:
        main()
    except SystemExit as exc:
        if not lifetime.terminated():
            raise
        # every cleanup ran while the exception unwound; end here, without the interpreter's
        # teardown, where a library's threads still running (a local Ray's) can crash it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else 143)


def _register() -> None:
    from semhash.cli import (
        cmd_data, cmd_demo, cmd_duplicates, cmd_evaluate, cmd_import, cmd_index, cmd_models, cmd_serve, cmd_train, cmd_tune, cmd_zoo,
    )  # fmt: skip

    for command in (
        cmd_train.train,
        cmd_index.index,
        cmd_index.query,
        cmd_index.status,
        cmd_index.remove,
        cmd_duplicates.duplicates,
        cmd_import.import_,
        cmd_evaluate.evaluate,
        cmd_models.models,
        cmd_data.export_dataset,
        cmd_demo.demo,
        cmd_zoo.generate,
        cmd_zoo.inspect,
        cmd_tune.tune,
        cmd_serve.serve,
    ):
        main.add_command(command)


_register()
