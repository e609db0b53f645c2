"""Orchestration that spans layers: evaluate a model on a dataset or an index, compare models.

This is the one library module besides the CLI that imports ``semhash.index`` (to read the
codes of an index); models, metrics and reports never do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semhash.data import load_builtin
from semhash.errors import DatasetError, ModelError
from semhash.workspace import ModelInfo, Workspace


@dataclass
class EvaluationRun:
    model: str
    source: str  # "dataset NAME (query split vs database split)" or "index PATH (leave-one-out)"
    result: dict[str, Any]
    paths: list[Path]
    out_dir: Path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "report"


def evaluate_on_dataset(
    workspace: Workspace,
    model_name: str | None = None,
    dataset_name: str | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    write: bool = True,
) -> EvaluationRun:
    """Hash a built-in dataset's query and database splits with the model; purity report."""
    from semhash.evaluate import evaluate_codes
    from semhash.report import write_report

    model = workspace.model(model_name)
    dataset_name = dataset_name or model.meta.get("dataset")
    if dataset_name not in ("mnist-5k", "digits", "fashion-mnist", "mnist"):
        raise DatasetError(
            f"model {model.name!r} was trained on {dataset_name}, not a built-in dataset: "
            "use --dataset NAME, or --index FILE to evaluate an index of labelled images"
        )
    dataset = load_builtin(dataset_name, data_dir)
    hasher = model.load_hasher()
    if tuple(dataset.image_shape) != tuple(hasher.input_shape):
        raise DatasetError(
            f"dataset {dataset_name} has images of shape {dataset.image_shape}, model {model.name!r} wants {hasher.input_shape}"
        )
    db_x, db_y = dataset.part("database")
    q_x, q_y = dataset.part("query")
    db_codes = hasher.hash(db_x)
    result = evaluate_codes(db_codes, db_y, hasher.hash(q_x), q_y, hasher.n_bits, class_names=dataset.class_names)
    source = f"dataset {dataset_name}: {len(q_x)} queries (query split) against {len(db_x)} images (database split)"
    result.update({"model": model.name, "kind": model.kind, "source": source})
    out = Path(out_dir) if out_dir else workspace.reports_dir / _slug(f"{model.name}-{dataset_name}")
    paths = []
    if write:
        paths = write_report(result, out, title=f"{model.name} on {dataset_name}", db_images=db_x, db_codes=db_codes)
    return EvaluationRun(model.name, source, result, paths, out)


def evaluate(
    workspace: Workspace,
    model_name: str | None = None,
    dataset_name: str | None = None,
    index_path: str | Path | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> EvaluationRun:
    """Evaluate what there is to evaluate, and say which in ``run.source``.

    * ``index_path`` given: that index, leave-one-out over its labelled images (refused if
      ``model_name`` names another model than the one the index was built with);
    * ``dataset_name`` given, or the model trained on a built-in dataset: that dataset's
      query split against its database split;
    * otherwise (a model trained on an image folder): the workspace index, when it is bound
      to that model, leave-one-out; else a one-line error saying what to run.
    """
    from semhash.data import is_builtin

    if index_path is not None:
        if dataset_name:
            raise DatasetError("give either --index FILE or --dataset NAME, not both")
        return evaluate_index(workspace, index_path, out_dir, model_name=model_name)
    model = workspace.model(model_name)
    trained_on = model.meta.get("dataset")
    if dataset_name or is_builtin(str(trained_on)):
        return evaluate_on_dataset(workspace, model.name, dataset_name, data_dir, out_dir)
    why = f"model {model.name!r} was trained on {trained_on}, not a built-in dataset"
    bound = _index_model(workspace.index_path)
    if bound is None:
        raise DatasetError(
            f"{why}, and there is no index at {workspace.index_path}: run 'semhash index {trained_on} --model {model.name}' "
            "then 'semhash evaluate' (or 'semhash evaluate --dataset NAME')"
        )
    if bound != (model.name, model.meta.get("fingerprint")):
        raise DatasetError(
            f"{why}, and the index at {workspace.index_path} was built with model {bound[0]!r}: run "
            f"'semhash index {trained_on} --model {model.name} --rebuild' then 'semhash evaluate', or "
            f"'semhash evaluate --model {bound[0]}'"
        )
    run = evaluate_index(workspace, workspace.index_path, out_dir, model_name=model.name)
    run.source += f" ({why})"
    run.result["source"] = run.source
    return run


def _index_model(index_path: Path) -> tuple[str, str] | None:
    """(model name, fingerprint) the index at ``index_path`` is bound to; None when there
    is no index there or it is empty."""
    from semhash.index import index_info

    if not Path(index_path).exists():
        return None
    info = index_info(index_path)
    if not info.get("model"):
        return None
    return str(info["model"]), str(info.get("model_fingerprint"))


def evaluate_index(
    workspace: Workspace,
    index_path: str | Path,
    out_dir: str | Path | None = None,
    model_name: str | None = None,
) -> EvaluationRun:
    """Leave-one-out over an index of labelled images: each image queries all the others.

    ``model_name``, when given, must be the model the index was built with."""
    from semhash.data import decode_image
    from semhash.errors import ImageError
    from semhash.evaluate import evaluate_leave_one_out
    from semhash.index import load_index_codes
    from semhash.index.db import IndexLocation
    from semhash.report import write_report

    location = IndexLocation.parse(index_path)
    indexed = load_index_codes(location)
    if location.is_url:  # printed without its password; named by its database
        index_path, index_name = location, location.url.database  # type: ignore[union-attr]
    else:
        index_name = Path(index_path).name
    if model_name is not None and model_name != indexed.model_name:
        raise DatasetError(
            f"{index_path}: the index was built with model {indexed.model_name!r}, not {model_name!r} "
            f"(leave out --model, or re-index with 'semhash index DIR --model {model_name} --rebuild')"
        )
    keep = [i for i, label in enumerate(indexed.labels) if label is not None]
    if len(keep) < 2:
        raise DatasetError(f"{index_path}: fewer than two indexed images carry a label (labels come from first-level subfolders)")
    class_names = sorted({indexed.labels[i] for i in keep})
    lookup = {name: k for k, name in enumerate(class_names)}
    labels = np.array([lookup[indexed.labels[i]] for i in keep], dtype=np.int64)
    codes = indexed.codes[keep]
    result = evaluate_leave_one_out(codes, labels, indexed.n_bits, class_names=class_names)
    source = f"index {index_path}: {len(keep)} labelled images, each querying all the others"
    result.update({"model": indexed.model_name, "source": source})
    # thumbnails for the montage: decode only the images it shows (12 of each largest bucket)
    thumbs = np.zeros((len(keep), 28, 28, 1), dtype=np.float32)
    for bucket in result["buckets"]["largest"][:8]:
        for row in np.flatnonzero(codes == np.uint64(bucket["code"]))[:12]:
            try:
                thumbs[row] = decode_image(indexed.paths[keep[row]], (28, 28, 1))
            except ImageError:
                pass  # changed since indexing: left black
    model_name = indexed.model_name or "index"
    out = Path(out_dir) if out_dir else workspace.reports_dir / _slug(f"{model_name}-index")
    paths = write_report(result, out, title=f"index {index_name} ({model_name})", db_images=thumbs, db_codes=codes)
    return EvaluationRun(model_name, source, result, paths, out)


def compare_models(
    workspace: Workspace,
    model_names: Sequence[str],
    dataset_name: str | None = None,
    data_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """One row per model, all on the same dataset split, side by side.  Every name is checked
    before anything is loaded or hashed: the names that are not trained models are listed in
    one :class:`ModelError`."""
    missing = [name for name in dict.fromkeys(model_names) if not (workspace.model_dir(name) / "meta.json").exists()]
    if missing:
        trained = ", ".join(m.name for m in workspace.list_models()) or "none"
        which = "no model named" if len(missing) == 1 else "no models named"
        raise ModelError(
            f"{which} {', '.join(map(repr, missing))} in {workspace.models_dir} (trained: {trained}); "
            f"train {'it' if len(missing) == 1 else 'each'} first: semhash train --model KIND --name {missing[0]}"
        )
    rows = []
    for name in model_names:
        run = evaluate_on_dataset(workspace, name, dataset_name, data_dir, write=False)
        r = run.result
        rows.append(
            {
                "model": name,
                "kind": r.get("kind"),
                "bits": r["n_bits"],
                "map": r["map"],
                "precision_r2": r["precision_r2"],
                "hit_rate_r2": r["hit_rate_r2"],
                "bucket_purity": r["buckets"]["purity"],
                "bucket_coverage": r["buckets"]["coverage"],
                "r2_purity": r["neighbourhoods"][2]["purity"] if 2 in r["neighbourhoods"] else r["neighbourhoods"]["2"]["purity"],
            }
        )
    return rows
