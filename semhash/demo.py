"""The end-to-end demo: real MNIST digits -> train -> PNG folder -> index -> queries -> report."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from semhash.workspace import Workspace


@dataclass
class DemoResult:
    model: str
    images_dir: Path
    queries_dir: Path
    index_path: Path
    query_picture: Path
    report_paths: list[Path]
    query_results: list = field(default_factory=list)
    headline: str = ""
    seconds: float = 0.0


def run_demo(
    workspace: Workspace,
    dataset: str = "mnist-5k",
    epochs: int | None = None,
    n_queries: int = 4,
    radius: int = 2,
    log: Callable[[str], None] = print,
) -> DemoResult:
    from semhash.data import export_dataset
    from semhash.index import index_folder, query_files
    from semhash.pipeline import evaluate_on_dataset
    from semhash.report import format_headline
    from semhash.train import train
    from semhash.visualize import query_montage

    started = time.time()
    demo_dir = workspace.root / "demo"
    images_dir, queries_dir = demo_dir / "images", demo_dir / "queries"
    for folder in (images_dir, queries_dir):
        if folder.exists():
            shutil.rmtree(folder)

    log(f"[1/5] writing {dataset} as PNGs: database split to {images_dir}, query split to {queries_dir}")
    export_dataset(dataset, images_dir, part="database")
    query_paths = export_dataset(dataset, queries_dir, part="query")

    log(f"[2/5] training the default model (semantic-hashing autoencoder) on {dataset}'s database split")
    params = {} if epochs is None else {"epochs": epochs}
    model_name = "demo-autoencoder"
    trained = train(dataset, "autoencoder", params, name=model_name, workspace=workspace, log=log, overwrite=True)

    log(f"[3/5] indexing {images_dir}")
    summary = index_folder(images_dir, trained.model, workspace.index_path, rebuild=True, progress=True, on_warning=log)
    log(f"      {summary.added} added, {summary.skipped} skipped -> {summary.index_path}")

    log(f"[4/5] querying {n_queries} held-out digits at radius {radius}")
    step = max(1, len(query_paths) // n_queries)
    chosen = [query_paths[i * step] for i in range(n_queries)]
    results = query_files(workspace.index_path, workspace, chosen, radius=radius, limit=None)
    picture = query_montage(results, workspace.root / "demo" / "queries.png")

    log("[5/5] purity report: query split against database split")
    run = evaluate_on_dataset(workspace, model_name, dataset)
    return DemoResult(
        model=model_name,
        images_dir=images_dir,
        queries_dir=queries_dir,
        index_path=summary.index_path,
        query_picture=picture,
        report_paths=run.paths,
        query_results=results,
        headline=format_headline(run.result),
        seconds=time.time() - started,
    )
