"""Fit glue: data -> model kind -> fit -> export -> files on disk (model, hasher, meta, curve).

TensorFlow is imported only through the model kind (lazily), so the NumPy baselines train
without it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from semhash.data import Dataset, load_data
from semhash.errors import ModelError
from semhash.evaluate import jsonable
from semhash.lifetime import remove_abandoned
from semhash.models import DEFAULT_KIND, build_model, get_kind
from semhash.models.base import FitContext
from semhash.workspace import ModelInfo, Workspace, check_name


@dataclass
class TrainResult:
    model: ModelInfo
    paths: list[Path] = field(default_factory=list)
    headline: dict[str, Any] = field(default_factory=dict)
    fitted: Any = None  # the HashModel instance, for callers that keep working with it


def coding_statistics(hasher, images: np.ndarray) -> dict[str, Any]:
    """Saturation (share of sigmoid codings < 0.1 or > 0.9), per-bit balance, constant bits."""
    pre = hasher.transform(images)
    bits = (pre > hasher.threshold).astype(np.uint8)
    balance = bits.mean(axis=0)
    stats: dict[str, Any] = {
        "bit_balance": [round(float(b), 4) for b in balance],
        "constant_bits": int(((balance == 0) | (balance == 1)).sum()),
        "distinct_codes": int(len(np.unique(hasher.hash(images)))),
    }
    if hasher.info.get("coding") == "sigmoid":
        act = 1.0 / (1.0 + np.exp(-np.clip(pre, -60, 60)))
        stats["saturation"] = round(float(((act < 0.1) | (act > 0.9)).mean()), 4)
    else:
        stats["saturation"] = None  # not a sigmoid coding layer (e.g. PCA, VAE mean)
    return stats


def headline_evaluation(hasher, dataset: Dataset) -> dict[str, Any]:
    """Query split against database split: the numbers `semhash models` shows."""
    if dataset.labels is None or len(dataset.query_index) == 0:
        return {}
    from semhash.evaluate import evaluate_codes

    db_x, db_y = dataset.part("database")
    q_x, q_y = dataset.part("query")
    result = evaluate_codes(hasher.hash(db_x), db_y, hasher.hash(q_x), q_y, hasher.n_bits)
    return {
        "map": result["map"],
        "precision_r2": result["precision_r2"],
        "hit_rate_r2": result["hit_rate_r2"],
        "bucket_purity": result["buckets"]["purity"],
        "bucket_coverage": result["buckets"]["coverage"],
    }


def history_figure(history: dict[str, list[float]], title: str, selected_epoch: int | None = None):
    """The training curve as a matplotlib Figure: every loss on the left axis; the
    validation mAP that chooses the checkpoint (and P@r2 beside it) on a right axis; the
    chosen epoch (1-based) marked with a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # constrained layout: the legend goes below the axes ("outside"), never on the curves
    fig = Figure(figsize=(6.4, 4.6), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for key, values in history.items():
        if "loss" in key:
            ax.plot(range(1, len(values) + 1), values, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    axes = [ax]
    val_map = history.get("val_map") or []
    if val_map:
        right = ax.twinx()
        right.plot(range(1, len(val_map) + 1), val_map, color="tab:green", label="val_map")
        if history.get("val_precision_r2"):
            values = history["val_precision_r2"]
            right.plot(range(1, len(values) + 1), values, color="tab:green", linestyle="--", alpha=0.6, label="val_precision_r2")
        right.set_ylabel("validation mAP (picks the checkpoint), P@r2")
        axes.append(right)
    if selected_epoch:
        label = f"chosen epoch {selected_epoch}"
        if 0 < selected_epoch <= len(val_map):
            label += f" (val mAP {val_map[selected_epoch - 1]:.4f})"
        ax.axvline(selected_epoch, color="tab:red", linestyle=":", label=label)
    handles = [h for a in axes for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="outside lower center", ncols=3, frameon=False)
    ax.set_title(title)
    return fig


def plot_history(
    history: dict[str, list[float]], out_path: Path, title: str, selected_epoch: int | None = None
) -> Path | None:
    """Write :func:`history_figure` to ``out_path``; None when there is no history."""
    if not history:
        return None
    history_figure(history, title, selected_epoch).savefig(out_path, dpi=100)
    return out_path


def load_config(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """A config written by `semhash tune`: {"kind": ..., "params": {...}} (checked strictly)."""
    from semhash.tune import load_config as load_tuned_config

    return load_tuned_config(path)


def train(
    source: str = "mnist-5k",
    kind: str = DEFAULT_KIND,
    params: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    workspace: Workspace | None = None,
    data_dir: str | Path | None = None,
    image_shape: Sequence[int] | None = None,
    verbose: int = 1,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    devices: Sequence[str] | None = None,
) -> TrainResult:
    """Train ``kind`` on ``source`` (built-in dataset name or image folder) and save it.

    A TensorFlow kind trains on every GPU TensorFlow sees (``MirroredStrategy`` when there
    are several; ``devices`` names them explicitly instead) and says so through ``log``.

    Built-in datasets train on their database split; the query split is held out for the
    headline evaluation.  Image folders train on their seeded database split as well.
    """
    log = log or (lambda message: None)
    workspace = workspace or Workspace()
    params = dict(params or {})
    cls = get_kind(kind)
    name = check_name(name) if name else workspace.new_model_name(kind)
    directory = workspace.model_dir(name)
    if workspace.has_model(name) and not overwrite:
        raise ModelError(f"a model named {name!r} already exists in {directory} (choose another --name)")

    dataset = load_data(
        source,
        shape=image_shape or cls.folder_shape,
        data_dir=data_dir,
        on_skip=lambda exc: log(f"warning: skipped {exc}"),
    )
    images, labels = dataset.part("database")
    if cls.needs_labels and labels is None:
        raise ModelError(
            f"model kind {kind!r} needs labels: give a built-in dataset or a folder with one subfolder per label"
        )
    # several GPUs: the network is built, compiled and fitted in a MirroredStrategy's scope
    scope, mirrored_on = contextlib.nullcontext, None
    if cls.uses_tensorflow:
        from semhash.models.tf_common import strategy_description, training_strategy

        strategy = training_strategy(devices)
        described = strategy_description(strategy)
        log(f"training on {described}")
        scope = strategy.scope
        mirrored_on = described if strategy.num_replicas_in_sync > 1 else None
    with scope():
        model = build_model(kind, {**params, "input_shape": dataset.image_shape})
    test_x, test_y = dataset.part("query")
    context = FitContext(
        workspace=workspace,
        verbose=verbose,
        class_names=dataset.class_names,
        log=log,
        test_images=test_x,
        test_labels=test_y,
    )
    started = time.time()
    with scope():
        model.fit(images, labels, context=context)
    seconds = time.time() - started

    hasher = model.export_hasher()
    history = getattr(model, "history_", {}) or {}
    headline = headline_evaluation(hasher, dataset)
    meta = {
        "name": name,
        "kind": kind,
        "bits": hasher.n_bits,
        "input_shape": list(dataset.image_shape),
        "dataset": source if source in ("mnist-5k", "digits", "fashion-mnist", "mnist") else str(Path(source).resolve()),
        "n_train_images": int(len(images)),
        "class_names": dataset.class_names,
        "params": model.get_params(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": round(seconds, 2),
        "device": mirrored_on or getattr(model, "device_", "CPU"),
        "fingerprint": hasher.fingerprint,
        "history": history,
        "coding": coding_statistics(hasher, images),
        "headline": headline,
        "metrics": model.summary_metrics(),
    }
    paths = save_model(workspace, name, model, hasher, meta)
    return TrainResult(ModelInfo(name, directory, json.loads((directory / "meta.json").read_text())), paths, headline, model)


def save_model(workspace: Workspace, name: str, model, hasher, meta: dict[str, Any]) -> list[Path]:
    """Write a trained model as ``models/NAME``, all or nothing: every file goes into a hidden
    folder beside it first (``.NAME.partial-PID-…``, which no command lists), meta.json last,
    and the folder is renamed into place, replacing an older model of that name or the
    leftovers of an interrupted training.  Ctrl-C, a full disk or a crash while saving leave
    the name as it was.  Returns the files' final paths."""
    directory = workspace.model_dir(name)
    _remove_abandoned(workspace.models_dir)
    staging = workspace.models_dir / f".{name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(parents=True)
        written = [hasher.save(staging / "hasher.npz")]
        written += model.save(staging)
        history = meta.get("history") or {}
        curve = plot_history(history, staging / "training_curve.png", f"{name} ({meta['kind']})",
                             (meta.get("metrics") or {}).get("selected_epoch"))  # fmt: skip
        written += [curve] if curve else []
        (staging / "meta.json").write_text(json.dumps(jsonable(meta), indent=2))
        written.append(staging / "meta.json")
        _replace_folder(staging, directory)
    except OSError as exc:
        cause = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise ModelError(f"{directory}: cannot save the model ({cause}); nothing of it was kept") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [directory / Path(p).relative_to(staging) for p in written]


def _replace_folder(new: Path, target: Path) -> None:
    """``new`` renamed to ``target``; an existing ``target`` is moved aside first and removed
    after (a rename cannot replace a folder that has files)."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_abandoned(models_dir: Path) -> None:
    """Hidden ``.NAME.partial-PID-…`` / ``.NAME.old-PID-…`` folders whose process is gone (a
    training killed while saving)."""
    remove_abandoned(models_dir, r"\..+\.(?:partial|old)-(?P<pid>\d+)-[0-9a-f]+")
