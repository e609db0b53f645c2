"""``semhash generate``: new images from a generative model (the ``vae`` kind).

:func:`generate_grid` decodes codings drawn from N(0, I) into a PNG grid of new images.  For
a 2-D latent space it also writes the latent manifold (decoded images over a grid of
codings in [-4, 4]²) and, given images and labels, a scatter of their μ coloured by label.
Figures are drawn with matplotlib's Agg backend and never shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.errors import ModelError

MANIFOLD_STEPS = 15
MANIFOLD_LIMIT = 4.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def tile(images: np.ndarray, cols: int | None = None, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(N, H, W, C) images -> one (rows·(H+pad)-pad, cols·(W+pad)-pad[, C]) mosaic, row-major;
    unused cells and the padding are ``fill``."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    cols = int(cols or max(1, int(np.ceil(np.sqrt(n)))))
    rows = max(1, int(np.ceil(n / cols)))
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), fill, dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = images[i]
    return out[..., 0] if c == 1 else np.clip(out, 0.0, 1.0)


def save_mosaic(mosaic: np.ndarray, path: Path, title: str | None = None, scale: float = 0.05) -> Path:
    """Save a mosaic from :func:`tile` as a PNG with an optional title."""
    plt = _pyplot()
    height, width = mosaic.shape[:2]
    fig = plt.figure(figsize=(max(3.0, width * scale), max(3.0, height * scale) + (0.4 if title else 0.0)))
    ax = fig.add_axes((0, 0, 1, 0.92 if title else 1))
    ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _check_generative(model) -> None:
    if not callable(getattr(model, "generate", None)) or not callable(getattr(model, "decode", None)):
        kind = getattr(model, "kind", type(model).__name__)
        raise ModelError(
            f"model kind {kind!r} cannot generate images: only a generative model (kind 'vae') decodes random codings"
        )


def generate_grid(
    model,
    n: int = 60,
    out_path: str | Path = "grid.png",
    seed: int | None = 0,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> list[Path]:
    """Decode ``n`` codings drawn from N(0, I) into a grid PNG at ``out_path``.

    With a 2-D latent space also writes ``<stem>-manifold.png`` (decoded codings over
    [-4, 4]²) and, when ``images`` are given, ``<stem>-latent.png`` (their μ, coloured by
    ``labels``).  Returns the paths written.
    """
    _check_generative(model)
    if int(n) < 1:
        raise ModelError(f"--n must be at least 1, not {n}")
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        out_path = out_path.with_name(out_path.name + ".png")
    generated = model.generate(int(n), seed=seed)
    written = [save_mosaic(tile(generated), out_path, f"{n} images decoded from N(0, I) codings")]
    if int(getattr(model, "latent_dim", 0)) == 2:
        written.append(latent_manifold(model, out_path.with_name(f"{out_path.stem}-manifold.png")))
        if images is not None and len(images):
            written.append(
                latent_scatter(model, images, labels, out_path.with_name(f"{out_path.stem}-latent.png"), class_names)
            )
    return written


def latent_manifold(model, path: Path, steps: int = MANIFOLD_STEPS, limit: float = MANIFOLD_LIMIT) -> Path:
    """Decoded images over a ``steps``×``steps`` grid of 2-D codings in [-limit, limit]²
    (z₁ left to right, z₂ bottom to top)."""
    values = np.linspace(-limit, limit, steps, dtype=np.float32)
    z = np.array([[x, y] for y in values[::-1] for x in values], dtype=np.float32)
    decoded = model.decode(z)
    return save_mosaic(tile(decoded, cols=steps, pad=0), path, f"latent manifold, z in [-{limit:g}, {limit:g}]^2", scale=0.025)


def latent_scatter(model, images, labels, path: Path, class_names: Sequence[str] | None = None) -> Path:
    """Scatter of μ for ``images`` (a 2-D latent space), coloured by ``labels``."""
    plt = _pyplot()
    mu = model.encode_mean(images)
    fig, ax = plt.subplots(figsize=(7, 6))
    if labels is not None:
        labels = np.asarray(labels)
        points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10" if labels.max() < 10 else "tab20", s=6)
        bar = fig.colorbar(points, ax=ax, ticks=np.unique(labels))
        if class_names:
            bar.ax.set_yticklabels([class_names[i] if i < len(class_names) else str(i) for i in np.unique(labels)])
    else:
        ax.scatter(mu[:, 0], mu[:, 1], s=6)
    threshold = np.asarray(getattr(model, "threshold_", [np.nan, np.nan]), dtype=float)
    if threshold.shape == (2,) and np.all(np.isfinite(threshold)):
        ax.axvline(threshold[0], color="gray", lw=0.8, ls="--")
        ax.axhline(threshold[1], color="gray", lw=0.8, ls="--")
    ax.set_xlabel("μ₁")
    ax.set_ylabel("μ₂")
    ax.set_title(f"latent means of {len(mu)} images (dashed: bit thresholds)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- from a workspace
def load_trained(info):
    """A workspace ModelInfo -> the loaded HashModel of its kind."""
    from semhash.models import get_kind

    cls = get_kind(info.kind)
    try:
        return cls.load(info.directory)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"model {info.name!r}: cannot load its files from {info.directory} ({exc})") from exc


def dataset_for(info, data: str | None = None, part: str = "query"):
    """(images, labels, class_names) of ``part`` of ``data`` (else the dataset named in the
    model's meta.json); (None, None, None) when no dataset is named."""
    from semhash.data import load_data

    source = data or info.meta.get("dataset") or info.meta.get("data")
    if not source:
        return None, None, None
    shape = info.meta.get("input_shape") or info.meta.get("image_shape")
    dataset = load_data(str(source), shape=tuple(shape) if shape else None)
    images, labels = dataset.part(part)
    return images, labels, dataset.class_names


def generate_from_workspace(
    name: str | None,
    n: int,
    out_path: str | Path,
    seed: int | None = 0,
    home: str | Path | None = None,
    data: str | None = None,
) -> list[Path]:
    """``semhash generate``: load model ``name`` (else the latest) from the workspace and
    write :func:`generate_grid`'s PNGs (the latent scatter uses the query part of ``data``,
    else of the model's training dataset)."""
    from semhash.workspace import Workspace

    from semhash.models import get_kind

    info = Workspace(home).model(name)
    _check_generative(get_kind(info.kind))  # before loading anything
    model = load_trained(info)
    images = labels = class_names = None
    if int(getattr(model, "latent_dim", 0)) == 2:
        images, labels, class_names = dataset_for(info, data, "query")
    return generate_grid(model, n, out_path, seed, images=images, labels=labels, class_names=class_names)
