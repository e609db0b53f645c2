"""Pictures of query results (matplotlib Agg; never shows a window)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.data import decode_image
from semhash.errors import ImageError

THUMB = (64, 64, 3)


def _thumb(path: str) -> np.ndarray:
    try:
        return decode_image(path, THUMB)
    except ImageError:
        return np.full(THUMB, 0.5, dtype=np.float32)  # the file changed since indexing: grey


def query_montage(results: Sequence, out_path: str | Path, max_matches: int = 10) -> Path:
    """One row per query: the query image, then its nearest matches with distance and label.

    ``results`` are semhash.index.QueryResult objects (query, matches[path, distance, label]).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    n_rows = max(1, len(results))
    n_cols = 1 + max([min(len(r.matches), max_matches) for r in results] + [1])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.6 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, result in enumerate(results):
        ax = axes[row, 0]
        ax.imshow(_thumb(str(result.query)))
        ax.set_title("query", fontsize=8, color="tab:blue")
        ax.set_xlabel(Path(str(result.query)).name[:14], fontsize=6)
        if not result.matches:
            axes[row, 1].text(0, 0.5, "no match within radius", fontsize=8)
        for col, match in enumerate(result.matches[:max_matches], start=1):
            ax = axes[row, col]
            ax.imshow(_thumb(match.path))
            ax.set_title(f"d={match.distance}  {match.label or ''}", fontsize=7)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
