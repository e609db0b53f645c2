"""The end-to-end demo: real MNIST digits -> train -> PNG folder -> index -> queries -> report.

The demo works in a workspace of its own (``./semhash-demo`` unless told otherwise), never in
the everyday one: it retrains its model and rebuilds its index on every run, which would
destroy a user's.  A marker file records what the demo made there; a folder that holds
anything else, or whose index was changed since the demo made it, is refused.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from semhash.errors import OutputError
from semhash.workspace import Workspace

DEMO_HOME = "semhash-demo"
DEMO_MODEL = "demo-autoencoder"
MARKER = ".semhash-demo.json"  # in the demo's workspace: what the demo made there
_WRITING = "writing"  # the marker's index state while the demo builds its index


@dataclass
class DemoResult:
    home: Path
    model: str
    dataset: str
    images_dir: Path
    queries_dir: Path
    index_path: Path
    query_picture: Path
    report_paths: list[Path]
    query_results: list = field(default_factory=list)
    radius: int = 2
    evaluation: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    seconds: float = 0.0


def _marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_marker(root: Path, **state: Any) -> None:
    marker = _marker(root) or {"made_by": "semhash demo", "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    marker.update(state)
    (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _describe(root: Path) -> str:
    """What a folder holds, in a few words, for a refusal."""
    what = []
    if (root / "index" / "index.sqlite").exists():
        what.append(f"an index ({root / 'index' / 'index.sqlite'})")
    models = sorted(p.parent.name for p in (root / "models").glob("*/meta.json"))
    if models:
        what.append(f"model{'s' if len(models) > 1 else ''} {', '.join(models[:5])}{' ...' if len(models) > 5 else ''}")
    if not what:
        names = sorted(p.name for p in root.iterdir())
        what.append(", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    return " and ".join(what)


def claim_demo_home(root: str | Path) -> Path:
    """Make ``root`` the demo's workspace, or refuse in one line (OutputError) when it holds
    anything the demo did not make, or the demo's index or model was changed since."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: not a folder; the demo needs a folder of its own (--home)")
    marker = _marker(root) if root.is_dir() else None
    if root.is_dir() and marker is None and any(root.iterdir()):
        raise OutputError(
            f"{root}: holds {_describe(root)}, which the demo did not make; the demo rebuilds its own model and "
            "index, so it runs only in an absent or empty folder, or one it made: give another --home"
        )
    if marker is not None:
        _check_unchanged(root, marker)
    root.mkdir(parents=True, exist_ok=True)
    _write_marker(root)
    return root


def _check_unchanged(root: Path, marker: dict[str, Any]) -> None:
    from semhash.index import index_info

    index_path = Workspace(root).index_path
    recorded = marker.get("index_generation")
    if index_path.exists() and recorded not in (None, _WRITING):
        info = index_info(index_path)
        if (info.get("generation"), info.get("model")) != (recorded, marker.get("model")):
            raise OutputError(
                f"{index_path}: changed since the demo made it (now {info.get('count')} images, model "
                f"{info.get('model')!r}); the demo would rebuild it, so it leaves it alone: give another --home"
            )
    meta_path = root / "models" / DEMO_MODEL / "meta.json"
    if meta_path.exists() and marker.get("model_fingerprint"):
        try:
            fingerprint = json.loads(meta_path.read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            fingerprint = None
        if fingerprint != marker["model_fingerprint"]:
            raise OutputError(
                f"{meta_path.parent}: model {DEMO_MODEL!r} was retrained since the demo made it; the demo would "
                "replace it, so it leaves it alone: give another --home"
            )


def run_demo(
    home: str | Path = DEMO_HOME,
    dataset: str = "mnist-5k",
    epochs: int | None = None,
    n_queries: int = 4,
    radius: int = 2,
    shown_matches: int = 10,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train, export, index, query and evaluate in the demo's own workspace ``home``.

    ``shown_matches`` bounds the matches returned per query (their total is still counted).
    """
    from semhash.data import export_dataset
    from semhash.index import index_folder, index_info, query_files
    from semhash.pipeline import evaluate_on_dataset
    from semhash.train import train
    from semhash.visualize import query_montage

    started = time.time()
    root = claim_demo_home(home)
    workspace = Workspace(root)
    demo_dir = root / "demo"
    images_dir, queries_dir = demo_dir / "images", demo_dir / "queries"
    for folder in (images_dir, queries_dir):
        if folder.exists():
            shutil.rmtree(folder)

    log(f"[1/5] writing {dataset} as PNGs: database split to {images_dir}, query split to {queries_dir}")
    export_dataset(dataset, images_dir, part="database")
    query_paths = export_dataset(dataset, queries_dir, part="query")

    log(f"[2/5] training the default model (semantic-hashing autoencoder) on {dataset}'s database split")
    params = {} if epochs is None else {"epochs": epochs}
    trained = train(dataset, "autoencoder", params, name=DEMO_MODEL, workspace=workspace, log=log, overwrite=True)
    _write_marker(root, model=DEMO_MODEL, model_fingerprint=trained.model.meta["fingerprint"])

    log(f"[3/5] indexing {images_dir}")
    _write_marker(root, index_generation=_WRITING)
    summary = index_folder(images_dir, trained.model, workspace.index_path, rebuild=True, progress=True, on_warning=log)
    _write_marker(root, index_generation=index_info(workspace.index_path)["generation"])
    log(f"      {summary.added} added, {summary.skipped} skipped -> {workspace.index_path}")

    log(f"[4/5] querying {n_queries} held-out digits at radius {radius}")
    step = max(1, len(query_paths) // n_queries)
    chosen = [query_paths[i * step] for i in range(n_queries)]
    results = query_files(workspace.index_path, workspace, chosen, radius=radius, limit=shown_matches)
    picture = query_montage(results, demo_dir / "queries.png", radius)

    log("[5/5] purity report: query split against database split")
    run = evaluate_on_dataset(workspace, DEMO_MODEL, dataset)
    return DemoResult(
        home=root,
        model=DEMO_MODEL,
        dataset=dataset,
        images_dir=images_dir,
        queries_dir=queries_dir,
        index_path=workspace.index_path,
        query_picture=picture,
        report_paths=run.paths,
        query_results=results,
        radius=radius,
        evaluation=run.result,
        train_seconds=float(trained.model.meta.get("train_seconds", 0.0)),
        seconds=time.time() - started,
    )
