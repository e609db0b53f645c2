"""``semhash inspect``: figures that show what a trained model learned.

Written into an output folder (each only where it applies):

* ``reconstructions.png`` originals (odd rows) above their reconstructions (even rows) —
  models with ``reconstruct`` (autoencoder, vae);
* ``features.png``        the first layer's features as images: dense kernels reshaped to the
  image shape, or the first convolution's filters (taken from the exported Hasher, so it
  works for every kind, NumPy baselines included);
* ``coding_units.png``    for each coding unit (bit), the images that drive it highest
  above its threshold (one row per unit, labelled with the fraction of images whose bit is 1);
* ``confusion_matrix.png`` classifiers: the confusion matrix kept by ``fit`` with the accuracy;
* ``metrics.json``        the model's ``summary_metrics()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.errors import ModelError
from semhash.generate import _pyplot, dataset_for, load_trained, save_mosaic, tile

MAX_FEATURES = 64
TOP_IMAGES = 8
MAX_UNITS = 64
UNITS_PER_COLUMN = 16  # coding_units.png: rows per column of units
CELL_PX = 40  # coding_units.png: screen pixels per thumbnail
MAX_IMAGES = 5000


def inspect_model(
    model,
    out_dir: str | Path,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    hasher=None,
) -> list[Path]:
    """Write the inspection figures of ``model`` into ``out_dir``; return the paths written.

    ``images`` (e.g. the training/database images) feed the reconstructions and the
    per-unit top images; without them only the weight-based figures are drawn.  ``hasher``
    defaults to ``model.export_hasher()``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hasher = hasher if hasher is not None else model.export_hasher()
    written: list[Path] = []
    if images is not None and len(images):
        images = np.asarray(images, dtype=np.float32)[:MAX_IMAGES]
        labels = None if labels is None else np.asarray(labels)[:MAX_IMAGES]
        if callable(getattr(model, "reconstruct", None)):
            spread = np.unique(np.linspace(0, len(images) - 1, min(32, len(images))).astype(int))  # datasets may be sorted by label
            written.append(reconstructions(model, images[spread], out_dir / "reconstructions.png"))
    features = first_layer_features(hasher)
    if features is not None:
        written.append(save_mosaic(tile(features), out_dir / "features.png", "first-layer features", scale=0.08))
    if images is not None and len(images):
        written.append(coding_units(hasher, images, out_dir / "coding_units.png"))
    confusion = getattr(model, "confusion_", None)
    metrics = model.summary_metrics() if callable(getattr(model, "summary_metrics", None)) else {}
    if confusion is not None:
        names = list(getattr(model, "class_names_", None) or class_names or [])
        written.append(
            confusion_figure(np.asarray(confusion), names, out_dir / "confusion_matrix.png", getattr(model, "confusion_of_", ""))
        )
    path = out_dir / "metrics.json"
    path.write_text(json.dumps({"kind": getattr(model, "kind", ""), **metrics}, indent=2, default=str))
    written.append(path)
    return written


def reconstructions(model, images: np.ndarray, path: Path, cols: int = 8) -> Path:
    """Originals with their reconstructions right below, ``cols`` pairs per row pair."""
    recon = np.asarray(model.reconstruct(images), dtype=np.float32).reshape(images.shape)
    rows = []
    for start in range(0, len(images), cols):
        block = images[start : start + cols]
        pad = cols - len(block)
        fill = np.ones((pad, *images.shape[1:]), np.float32)
        rows += [np.concatenate([block, fill]), np.concatenate([recon[start : start + cols], fill])]
    return save_mosaic(tile(np.concatenate(rows), cols=cols), path, "originals (odd rows) and reconstructions", scale=0.08)


def first_layer_features(hasher) -> np.ndarray | None:
    """(K, h, w, c) images in [0, 1] of the first dense or conv layer's kernels, each
    min-max scaled; None when the first weighted layer is neither."""
    for i, op in enumerate(hasher.ops):
        if op["op"] == "dense":
            kernel = hasher.params[f"op{i}.kernel"]
            if kernel.shape[0] != int(np.prod(hasher.input_shape)):
                return None
            units = kernel.T[:MAX_FEATURES].reshape(-1, *hasher.input_shape)
            return _normalise_each(units)
        if op["op"] == "conv2d":
            kernel = hasher.params[f"op{i}.kernel"]  # (kh, kw, cin, cout)
            filters = np.moveaxis(kernel, -1, 0)[:MAX_FEATURES]
            if filters.shape[-1] not in (1, 3):
                filters = filters.mean(axis=-1, keepdims=True)
            return _normalise_each(filters)
    return None


def _normalise_each(arrays: np.ndarray) -> np.ndarray:
    arrays = np.asarray(arrays, dtype=np.float32)
    lo = arrays.reshape(len(arrays), -1).min(axis=1).reshape(-1, *([1] * (arrays.ndim - 1)))
    hi = arrays.reshape(len(arrays), -1).max(axis=1).reshape(-1, *([1] * (arrays.ndim - 1)))
    return (arrays - lo) / np.maximum(hi - lo, 1e-12)


def coding_units(hasher, images: np.ndarray, path: Path, top: int = TOP_IMAGES) -> Path:
    """Write :func:`coding_units_figure` to ``path``."""
    fig = coding_units_figure(hasher, images, top)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def coding_units_figure(hasher, images: np.ndarray, top: int = TOP_IMAGES):
    """For each coding unit, the ``top`` images with the largest (pre-activation −
    threshold), i.e. that switch the bit on most strongly: one row per unit, the rows in
    columns of at most :data:`UNITS_PER_COLUMN`, each image drawn about :data:`CELL_PX`
    pixels high, so that the picture stays about a screen wide and its labels readable at
    100% (a 30-bit model: 2 columns of 15 units, ~900 x 650 pixels)."""
    margin = hasher.transform(images) - hasher.threshold
    units = min(hasher.n_bits, MAX_UNITS)
    order = np.argsort(-margin[:, :units], axis=0)[:top]  # (top, units)
    ones = (margin > 0).mean(axis=0)
    columns = -(-units // UNITS_PER_COLUMN)
    per_column = -(-units // columns)
    cell = images.shape[1] + 1  # a thumbnail and its 1-pixel gap, in image pixels
    scale = max(1.0, CELL_PX / cell)  # screen pixels per image pixel
    label_px, gap_px, title_px, margin_px = 120, 24, 40, 8
    strip_px = top * cell * scale  # one unit's row of thumbnails
    width_px = columns * (label_px + strip_px) + (columns - 1) * gap_px + 2 * margin_px
    height_px = per_column * cell * scale + title_px + margin_px
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / 100, height_px / 100), dpi=100)
    for c in range(columns):
        unit_ids = list(range(c * per_column, min(units, (c + 1) * per_column)))
        mosaic = tile(images[order[:, unit_ids].T.reshape(-1)], cols=top)  # unit-major
        left = margin_px + c * (label_px + strip_px + gap_px) + label_px
        rows_px = len(unit_ids) * cell * scale
        ax = fig.add_axes((left / width_px, (height_px - title_px - rows_px) / height_px, strip_px / width_px, rows_px / height_px))
        ax.imshow(mosaic, cmap="gray" if mosaic.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.set_yticks([k * cell + images.shape[1] / 2 for k in range(len(unit_ids))])
        ax.set_yticklabels([f"bit {u} ({ones[u]:.0%} on)" for u in unit_ids], fontsize=9)
        ax.set_xticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    fig.suptitle(f"the {top} images that switch each bit on most strongly", fontsize=11, y=1 - 8 / height_px, va="top")
    return fig


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], path: Path, of: str = "") -> Path:
    plt = _pyplot()
    n = len(matrix)
    names = [str(c) for c in class_names][:n] if len(class_names) >= n else [str(i) for i in range(n)]
    total = matrix.sum()
    acc = np.trace(matrix) / total if total else float("nan")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(n), names, rotation=45 if max(len(s) for s in names) > 2 else 0, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_title(f"{of + ' ' if of else ''}accuracy {acc:.3f} ({int(total)} images)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def inspect_from_workspace(
    name: str | None,
    out_dir: str | Path | None = None,
    home: str | Path | None = None,
    data: str | None = None,
) -> list[Path]:
    """``semhash inspect``: load model ``name`` (else the latest) and its dataset's database
    part (``data`` overrides the dataset named in meta.json), write the figures into
    ``out_dir`` (default ``<home>/reports/<name>/inspect``)."""
    from semhash.workspace import Workspace

    workspace = Workspace(home)
    info = workspace.model(name)
    model = load_trained(info)
    out_dir = Path(out_dir) if out_dir else workspace.reports_dir / info.name / "inspect"
    try:
        hasher = info.load_hasher()
    except ModelError:
        hasher = model.export_hasher()
    images, labels, class_names = dataset_for(info, data, "database")
    return inspect_model(model, out_dir, images, labels, class_names, hasher=hasher)
