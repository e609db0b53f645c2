"""Pictures of query results (matplotlib Agg; never shows a window).

One row per query: the query image, then its nearest matches, each under its distance and
label and above its file name.  The picture is capped (the first MAX_QUERIES queries, the
first MAX_MATCHES matches of each) and says so: a picture of every match of 1,000 queries is
too large to draw, or for Pillow to open.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.data import decode_image
from semhash.errors import ImageError, OutputError

THUMB = (96, 96, 3)  # thumbnail pixels
MAX_QUERIES = 20  # rows drawn
MAX_MATCHES = 10  # matches drawn per row
# what matplotlib writes, by file name suffix (the format is passed explicitly, so the file
# written is always the name given)
PICTURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}
_NAME_CHARS = 22


def check_picture_path(path: str | Path) -> Path:
    """The picture's path, refused in one line (OutputError) when matplotlib cannot write
    that name or the folder it goes into cannot be created or written.  Meant to be called
    before any search, so that a bad name costs nothing."""
    path = Path(path)
    if path.suffix.lower() not in PICTURE_FORMATS:
        wanted = ", ".join(PICTURE_FORMATS)
        raise OutputError(f"{path}: a picture's name must end in one of {wanted} (for example {path.stem or 'matches'}.png)")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name such as {path / 'matches.png'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the nearest folder that exists
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{folder}: not a folder, so {path} cannot be written")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: folder not writable, so {path} cannot be written")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: file not writable")
    return path


def montage_note(results: Sequence, max_queries: int | None = None, max_matches: int | None = None) -> str | None:
    """What the picture leaves out, in words (None when it shows everything)."""
    max_queries = MAX_QUERIES if max_queries is None else max_queries
    max_matches = MAX_MATCHES if max_matches is None else max_matches
    cut_queries = len(results) > max_queries
    rows = results[:max_queries]
    # what is drawn: the matches a result holds (query --limit) up to max_matches
    drawn = [min(len(r.matches), max_matches) for r in rows]
    cut = [n for r, n in zip(rows, drawn) if _total(r) > n]
    if not (cut_queries or cut):
        return None
    parts = []
    if cut_queries:
        parts.append(f"first {max_queries} of {len(results)} queries")
    if len(rows) == 1 and cut:
        parts.append(f"first {cut[0]} of {_total(rows[0])} matches")
    elif cut:
        parts.append(f"first {max(cut)} matches each" if len(set(cut)) == 1 else f"at most {max(cut)} matches each")
    return "showing the " + ", ".join(parts)


def _total(result) -> int:
    total = getattr(result, "total", None)
    return len(result.matches) if total is None else int(total)


def _thumb(path: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a huge image was already reported when it was queried
            return decode_image(path, THUMB)
    except ImageError:
        return np.full(THUMB, 0.5, dtype=np.float32)  # the file changed since indexing: grey


def _short_name(path: str) -> str:
    name = Path(path).name
    if len(name) <= _NAME_CHARS:
        return name
    suffix = Path(name).suffix[:6]
    return name[: _NAME_CHARS - len(suffix) - 1] + "…" + suffix


# layout in pixels (at 100 dpi): each cell is a title line, the thumbnail, the file name
_COL_W, _TITLE_H, _NAME_H, _GAP_H, _HEADER_H = 124, 16, 14, 10, 44
_ROW_H = _TITLE_H + THUMB[0] + _NAME_H + _GAP_H
_QUERY_BORDER = np.array([0.12, 0.47, 0.71], dtype=np.float32)  # tab:blue


def query_figure(
    results: Sequence,
    radius: int,
    max_queries: int | None = None,
    max_matches: int | None = None,
):
    """The picture as a matplotlib Figure (not saved); see :func:`query_montage`.

    Drawn as one mosaic image with text around it (one Axes, not one per thumbnail: a
    20 x 11 grid of Axes takes seconds to lay out)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    max_queries = MAX_QUERIES if max_queries is None else max_queries
    max_matches = MAX_MATCHES if max_matches is None else max_matches
    rows = list(results[:max_queries])
    shown = [min(len(r.matches), max_matches) for r in rows]
    cut = [_total(r) - n for r, n in zip(rows, shown)]
    n_cols = 1 + max(shown + [1]) + (1 if any(c > 0 for c in cut) else 0)
    n_rows = max(1, len(rows))
    width, height = n_cols * _COL_W, n_rows * _ROW_H
    canvas = np.ones((height, width, 3), dtype=np.float32)
    texts = []  # (x, y, text, style) in canvas pixels, y downwards

    def cell(row, col, path, title, name, query=False):
        x0 = col * _COL_W + (_COL_W - THUMB[1]) // 2
        y0 = row * _ROW_H + _TITLE_H
        canvas[y0 : y0 + THUMB[0], x0 : x0 + THUMB[1]] = _thumb(path)
        if query:  # a blue frame around the query
            canvas[y0 - 2 : y0, x0 - 2 : x0 + THUMB[1] + 2] = _QUERY_BORDER
            canvas[y0 + THUMB[0] : y0 + THUMB[0] + 2, x0 - 2 : x0 + THUMB[1] + 2] = _QUERY_BORDER
            canvas[y0 - 2 : y0 + THUMB[0] + 2, x0 - 2 : x0] = _QUERY_BORDER
            canvas[y0 - 2 : y0 + THUMB[0] + 2, x0 + THUMB[1] : x0 + THUMB[1] + 2] = _QUERY_BORDER
        centre = col * _COL_W + _COL_W / 2
        style = {"color": "tab:blue"} if query else {}
        texts.append((centre, y0 - 4, title, {"fontsize": 8, "va": "bottom", **style}))
        texts.append((centre, y0 + THUMB[0] + 3, _short_name(name), {"fontsize": 6, "va": "top", **style}))

    for row, result in enumerate(rows):
        cell(row, 0, str(result.query), "query", str(result.query), query=True)
        if not result.matches:
            texts.append((_COL_W * 1.1, row * _ROW_H + _TITLE_H + THUMB[0] / 2, f"no match within radius {radius}", {"fontsize": 8, "va": "center", "ha": "left"}))
        for col, match in enumerate(result.matches[:max_matches], start=1):
            cell(row, col, match.path, f"d={match.distance}  {match.label or ''}".rstrip(), match.path)
        if cut[row] > 0:
            texts.append(((n_cols - 0.5) * _COL_W, row * _ROW_H + _TITLE_H + THUMB[0] / 2, f"+{cut[row]} more", {"fontsize": 9, "va": "center", "color": "tab:red"}))

    fig = Figure(figsize=(width / 100, (height + _HEADER_H) / 100), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + _HEADER_H)))
    ax.imshow(canvas, interpolation="nearest", extent=(0, width, height, 0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")  # the mosaic has no axes to show; every label is a text drawn on it
    for x, y, text, style in texts:
        ax.text(x, y, text, **{"ha": "center", **style})
    title = f"semhash query: indexed images within Hamming radius {radius}, nearest first"
    note = montage_note(results, max_queries, max_matches)
    if note:
        title += f"\n({note})"
    fig.suptitle(title, fontsize=9, y=1.0 - 4 / (height + _HEADER_H), va="top")
    return fig


def query_montage(
    results: Sequence,
    out_path: str | Path,
    radius: int,
    max_queries: int | None = None,
    max_matches: int | None = None,
) -> Path:
    """Draw the query results into ``out_path`` (.png, .jpg, .pdf or .svg; checked by
    :func:`check_picture_path`) and return the path written: exactly ``out_path``.

    ``results`` are semhash.index.QueryResult objects (query, matches[path, distance,
    label], total).  Rows past ``max_queries`` and matches past ``max_matches`` are left
    out; the title says so and each cut row ends with "+N more".
    """
    out_path = check_picture_path(out_path)
    fig = query_figure(results, radius, max_queries, max_matches)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        fig.savefig(out_path, format=PICTURE_FORMATS[out_path.suffix.lower()], dpi=100)
    return out_path
