"""Write an evaluation result (from :mod:`semhash.evaluate`) as report.json, report.md and
PNG figures, and format a short plain-text headline for the CLI.

Figures are drawn with matplotlib's Agg backend on standalone ``Figure`` objects (no
pyplot state, nothing is ever shown).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from semhash.evaluate import jsonable
from semhash.hashing import code_to_str

__all__ = ["write_report", "format_headline", "FIGURES"]

#: figure file names, in the order they appear in report.md
FIGURES = ("purity_coverage.png", "bucket_sizes.png", "bit_balance.png", "pr_by_radius.png",
           "largest_buckets.png")
MONTAGE_PER_ROW = 12

PURITY_NOTE = (
    "Purity alone flatters a hash that isolates every image: if every image gets its own "
    "code, every bucket is a pure singleton and bucket purity is a perfect 1.0 while the "
    "hash retrieves nothing.  Coverage (share of images whose bucket holds at least one "
    "other image) and hit rate (share of queries with at least one neighbour within the "
    "radius) are therefore always shown beside purity; a good hash has both high."
)
MAP_NOTE = (
    "mAP ranks the whole database by Hamming distance (relevant = same label).  Many "
    "images share a distance, so ties are handled exactly: each query's AP is the expected "
    "AP over uniformly random orderings of the images at equal distance (McSherry & Najork, "
    "2008), which does not depend on the order the database was stored in."
)
PRECISION_NOTE = (
    "P@r2 is the precision of the images within Hamming radius 2 of the query, with "
    "queries that retrieve nothing counted as 0 (the usual convention in the hashing "
    "literature); \"P@r2 (hits)\" averages only over queries that retrieve something, "
    "whose share is the hit rate."
)


# --------------------------------------------------------------------------- formatting


def _num(x) -> float:
    """None / non-numbers -> nan, numbers -> float."""
    try:
        return math.nan if x is None else float(x)
    except (TypeError, ValueError):
        return math.nan


def _f(x, digits: int = 3) -> str:
    v = _num(x)
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def _pct(x, digits: int = 0) -> str:
    v = _num(x)
    return "n/a" if math.isnan(v) else f"{100 * v:.{digits}f}%"


def _radii(result: dict) -> list[int]:
    return sorted(int(r) for r in (result.get("neighbourhoods") or {}))


def _hood(result: dict, r: int) -> dict:
    return (result.get("neighbourhoods") or {}).get(str(r)) or {}


def format_headline(result: dict) -> str:
    """A few plain-text lines summarising ``result`` (for the CLI to print)."""
    b = result.get("buckets") or {}
    lines = [
        f"mAP {_f(result.get('map'))} | P@r2 {_f(result.get('precision_r2'))} "
        f"(hits {_pct(result.get('hit_rate_r2'))}, {_f(result.get('precision_r2_hits'))} "
        f"among hits) | bucket purity {_f(b.get('purity'))}, coverage {_pct(b.get('coverage'))}",
        " | ".join(
            f"r{r} purity {_f(_hood(result, r).get('purity'))}, "
            f"hits {_pct(_hood(result, r).get('hit_rate'))}"
            for r in _radii(result)
        ),
        f"{b.get('n_buckets', 'n/a')} buckets for {b.get('n_images', 'n/a')} images "
        f"(largest {b.get('largest_bucket', 'n/a')}) | {result.get('n_queries', 'n/a')} "
        f"queries, {result.get('n_bits', 'n/a')} bits, {result.get('constant_bits', 'n/a')} "
        f"constant | {result.get('protocol', '')}",
    ]
    return "\n".join(line for line in lines if line)


# --------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_purity_coverage(result: dict, path: Path, title: str) -> None:
    fig = _new_figure(6.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    radii = _radii(result)
    hoods = [_hood(result, r) for r in radii]
    ax.plot(radii, [_num(h.get("purity")) for h in hoods], "o-", color="tab:blue",
            label="neighbourhood purity")
    ax.plot(radii, [_num(h.get("hit_rate")) for h in hoods], "s-", color="tab:orange",
            label="hit rate (queries with >= 1 neighbour)")
    ax.plot(radii, [_num(h.get("precision")) for h in hoods], "^--", color="tab:green",
            label="precision among hits")
    b = result.get("buckets") or {}
    ax.plot([0], [_num(b.get("purity"))], "*", ms=14, color="tab:blue", alpha=0.6,
            label="bucket purity (exact code)")
    ax.plot([0], [_num(b.get("coverage"))], "*", ms=14, color="tab:orange", alpha=0.6,
            label="bucket coverage")
    ax.set_xlabel("Hamming radius")
    ax.set_ylabel("share")
    ax.set_ylim(-0.02, 1.05)
    if radii:
        ax.set_xticks(radii)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{title}: purity and coverage", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _plot_bucket_sizes(result: dict, path: Path, title: str) -> None:
    hist = (result.get("buckets") or {}).get("size_histogram") or []
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    if hist:
        x = np.arange(len(hist))
        nb = [h["buckets"] for h in hist]
        ni = [h["images"] for h in hist]
        ax.bar(x - 0.2, nb, width=0.4, label="buckets", color="tab:blue")
        ax.bar(x + 0.2, ni, width=0.4, label="images in them", color="tab:gray")
        ax.set_xticks(x)
        ax.set_xticklabels([h["label"] for h in hist], rotation=45, ha="right", fontsize=8)
        if max(nb + ni) > 0:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no buckets", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("bucket size (images sharing one code)")
    ax.set_ylabel("count (log scale)")
    ax.set_title(f"{title}: bucket sizes", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _plot_bit_balance(result: dict, path: Path, title: str) -> None:
    bal = np.array([_num(v) for v in (result.get("bit_balance") or [])], dtype=np.float64)
    fig = _new_figure(max(6.0, 0.18 * len(bal) + 1.5), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    if bal.size:
        const = (bal <= 0.0) | (bal >= 1.0)
        colors = np.where(const, "tab:red", "tab:blue")
        ax.bar(np.arange(len(bal)), np.nan_to_num(bal), color=list(colors))
        if const.any():  # a bar of height 0 is invisible: mark constant bits
            ax.plot(np.flatnonzero(const), np.clip(bal[const], 0.03, 0.97), "x",
                    color="tab:red", ms=8, mew=2)
        ax.axhline(0.5, color="black", lw=1, ls="--")
        ax.set_xlim(-0.7, len(bal) - 0.3)
        _integer_ticks(ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("bit (output unit)")
    ax.set_ylabel("share of images with bit = 1")
    ax.set_title(f"{title}: bit balance (0.5 = balanced, red = constant)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


#: where a point's label may go, in points from the point, tried in this order (nearest first)
_LABEL_OFFSETS = tuple((dx, dy) for r in (8, 16, 26, 38, 52) for dx, dy in ((r, r), (r, 0), (r, -r), (0, -r), (-r - 18, -r), (0, r)))


def label_points(ax, points: Sequence[tuple[str, float, float]], fontsize: float = 8) -> list:
    """Label each ``(text, x, y)`` point of ``ax`` (with a thin leader line to it) at the
    nearest spot where the label stays inside the axes, covers none of the lines drawn on
    them and overlaps no label placed before it; a label with no such spot is left out.  Call
    after the figure's layout is final (the check is in pixels).  Returns the labels placed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    fig = ax.figure
    renderer = (fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)).get_renderer()
    inside = ax.get_window_extent(renderer)
    drawn = [np.empty((0, 2))]
    for line in ax.get_lines():  # every line, sampled along each segment, in pixels
        xy = line.get_xydata()
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) > 1:
            steps = np.linspace(0, 1, 12)[:, None, None]
            xy = (xy[:-1] + steps * (xy[1:] - xy[:-1])).reshape(-1, 2)
        drawn.append(ax.transData.transform(xy) if len(xy) else np.empty((0, 2)))
    obstacles = np.concatenate(drawn)
    placed: list = []
    boxes: list = []
    for text, x, y in points:
        for offset in _LABEL_OFFSETS:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=fontsize,
                                va="center", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.45", "shrinkA": 1, "shrinkB": 2})
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer).expanded(1.15, 1.3)  # the text, not its leader line
            within = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            covers = bool(np.any((obstacles[:, 0] >= box.x0) & (obstacles[:, 0] <= box.x1)
                                 & (obstacles[:, 1] >= box.y0) & (obstacles[:, 1] <= box.y1)))
            if within and not covers and not any(box.overlaps(other) for other in boxes):
                placed.append(label)
                boxes.append(box)
                break
            label.remove()
    return placed


def _plot_pr(result: dict, path: Path, title: str) -> None:
    pr = result.get("pr_by_radius") or {}
    radius = np.array(pr.get("radius") or [], dtype=np.float64)
    prec = np.array([_num(v) for v in pr.get("precision") or []], dtype=np.float64)
    rec = np.array([_num(v) for v in pr.get("recall") or []], dtype=np.float64)
    hit = np.array([_num(v) for v in pr.get("hit_rate") or []], dtype=np.float64)
    fig = _new_figure(10, 4.0)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    if radius.size:
        ax1.plot(rec, prec, "o-", ms=3)
        ax2.plot(radius, prec, "o-", ms=3, label="precision (micro)")
        ax2.plot(radius, rec, "s-", ms=3, label="recall (micro)")
        ax2.plot(radius, hit, "^--", ms=3, label="hit rate")
        ax2.legend(fontsize=8)
        _integer_ticks(ax2)
    ax1.set_xlabel("recall")
    ax1.set_ylabel("precision")
    ax1.set_xlim(-0.02, 1.02)
    ax1.set_ylim(-0.02, 1.15)  # room above the curve's start for the radius labels
    ax1.grid(alpha=0.3)
    ax1.set_title("precision-recall, retrieving all within radius r", fontsize=9)
    ax2.set_xlabel("Hamming radius")
    ax2.set_ylim(-0.02, 1.02)
    ax2.grid(alpha=0.3)
    ax2.set_title("by radius", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # radius 2 (the default search) first, then 0, 1, 3, ...: where points crowd, those keep their label
    order = sorted((r for r in radius if r <= 6), key=lambda r: (r != 2, r))
    where = {r: (x, y) for r, x, y in zip(radius, rec, prec) if not (math.isnan(x) or math.isnan(y))}
    label_points(ax1, [(f"r={int(r)}", *where[r]) for r in order if r in where])
    fig.savefig(path)


def _as_image_stack(images) -> np.ndarray:
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.ndim != 4:
        raise ValueError(f"db_images must be (N, H, W, C) or (N, H, W), got {imgs.shape}")
    if imgs.shape[-1] not in (1, 3, 4):
        raise ValueError(f"db_images must have 1, 3 or 4 channels, got {imgs.shape[-1]}")
    return np.clip(imgs, 0.0, 1.0)


def _montage_inputs(db_images, db_codes) -> tuple[np.ndarray, np.ndarray]:
    imgs = _as_image_stack(db_images)
    codes = np.asarray(db_codes).reshape(-1)
    codes = codes.astype(np.uint64) if codes.dtype.kind in "iu" else np.array(
        [int(c) & ((1 << 64) - 1) for c in codes], dtype=np.uint64)
    if codes.shape[0] != imgs.shape[0]:
        raise ValueError(f"db_codes has {codes.shape[0]} entries but db_images has "
                         f"{imgs.shape[0]}")
    return imgs, codes


def _plot_montage(result: dict, imgs: np.ndarray, codes: np.ndarray, path: Path, title: str,
                  n_buckets: int) -> bool:
    """A row per largest bucket (size >= 2), up to MONTAGE_PER_ROW images each.  Returns
    False (and writes nothing) when there is no shared bucket to show."""
    largest = [b for b in (result.get("buckets") or {}).get("largest") or []
               if int(b.get("size", 0)) >= 2][: max(0, int(n_buckets))]
    if not largest:
        return False
    n, h, w, c = imgs.shape
    pad = max(1, w // 14)
    rows = []
    for b in largest:
        idx = np.flatnonzero(codes == np.uint64(int(b["code"])))[:MONTAGE_PER_ROW]
        canvas = np.ones((h, MONTAGE_PER_ROW * (w + pad) - pad, c), dtype=np.float32)
        for j, i in enumerate(idx):
            x0 = j * (w + pad)
            canvas[:, x0:x0 + w] = imgs[i]
        rows.append((b, canvas))
    row_h = 10.0 * h / (MONTAGE_PER_ROW * (w + pad)) + 0.35
    fig = _new_figure(10, row_h * len(rows) + 0.5)
    n_bits = int(result.get("n_bits") or 0)
    for k, (b, canvas) in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, k + 1)
        if c == 1:
            ax.imshow(canvas[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(canvas, interpolation="nearest")
        ax.set_axis_off()
        major = b.get("majority_name", b.get("majority_label"))
        code = code_to_str(int(b["code"]), n_bits) if n_bits else hex(int(b["code"]))
        ax.set_title(f"#{k + 1}: {b['size']} images, purity {_f(b.get('purity'), 2)}, "
                     f"mostly {major} ({_pct(b.get('majority_share'))})   code {code}",
                     fontsize=8, loc="left")
    fig.suptitle(f"{title}: largest buckets (up to {MONTAGE_PER_ROW} images each)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return True


# --------------------------------------------------------------------------- markdown


def _markdown(result: dict, title: str, figures: Sequence[str]) -> str:
    b = result.get("buckets") or {}
    out = [f"# {title}", ""]
    out.append(
        f"Protocol: **{result.get('protocol', 'n/a')}** -- {result.get('n_queries', 'n/a')} "
        f"queries against {result.get('n_database', 'n/a')} database images, "
        f"{result.get('n_bits', 'n/a')}-bit codes."
    )
    out += ["", "## Headline", ""]
    out.append(f"- **mAP** (tie-aware, over {result.get('n_map_queries', 'n/a')} queries): "
               f"**{_f(result.get('map'))}**")
    out.append(f"- **P@r2**: **{_f(result.get('precision_r2'))}** "
               f"(hit rate {_pct(result.get('hit_rate_r2'), 1)}; "
               f"{_f(result.get('precision_r2_hits'))} among queries with a hit)")
    out.append(f"- **Buckets**: {b.get('n_buckets', 'n/a')} distinct codes for "
               f"{b.get('n_images', 'n/a')} images; largest holds "
               f"{b.get('largest_bucket', 'n/a')}; {b.get('n_singletons', 'n/a')} singletons")
    out += ["", "| set | purity | coverage / hit rate | precision among hits | "
            "precision (all queries) | mean size |", "|---|---|---|---|---|---|"]
    n_img = _num(b.get("n_images"))
    n_b = _num(b.get("n_buckets"))
    mean_bucket = n_img / n_b if n_b and not math.isnan(n_b) and n_b > 0 else math.nan
    out.append(f"| buckets (exact code) | {_f(b.get('purity'))} | {_pct(b.get('coverage'), 1)} "
               f"| -- | -- | {_f(mean_bucket, 2)} |")
    out.append(f"| shared buckets only (size >= 2) | {_f(b.get('purity_shared'))} | -- | -- "
               f"| -- | -- |")
    for r in _radii(result):
        h = _hood(result, r)
        out.append(f"| neighbourhood r <= {r} | {_f(h.get('purity'))} | "
                   f"{_pct(h.get('hit_rate'), 1)} | {_f(h.get('precision'))} | "
                   f"{_f(h.get('precision_all'))} | {_f(h.get('mean_size'), 2)} |")
    out += ["", PURITY_NOTE, "", MAP_NOTE, "", PRECISION_NOTE, ""]
    out.append("Bucket purity is the size-weighted mean Gini purity (sum of squared class "
               "shares) of the groups of images sharing one code, singletons included; "
               "neighbourhood purity is the mean Gini purity of the database images within "
               "the radius, over queries that have at least one.")

    out += ["", "## Bucket sizes", "", "| size | buckets | images |", "|---|---|---|"]
    for row in b.get("size_histogram") or []:
        out.append(f"| {row['label']} | {row['buckets']} | {row['images']} |")

    largest = b.get("largest") or []
    if largest:
        out += ["", "### Largest buckets", "", "| # | size | purity | majority | code |",
                "|---|---|---|---|---|"]
        n_bits = int(result.get("n_bits") or 0)
        for k, lb in enumerate(largest, 1):
            major = lb.get("majority_name", lb.get("majority_label"))
            code = code_to_str(int(lb["code"]), n_bits) if n_bits else hex(int(lb["code"]))
            out.append(f"| {k} | {lb['size']} | {_f(lb.get('purity'))} | {major} "
                       f"({_pct(lb.get('majority_share'))}) | `{code}` |")

    s = result.get("bit_balance_summary") or {}
    out += ["", "## Bits", ""]
    out.append(f"- firing rate per bit: min {_f(s.get('min'))}, max {_f(s.get('max'))}, "
               f"mean {_f(s.get('mean'))}; mean |rate - 0.5| "
               f"{_f(s.get('mean_abs_deviation'))}; {s.get('n_within_0.1', 'n/a')} of "
               f"{result.get('n_bits', 'n/a')} bits fire on 40-60% of images")
    out.append(f"- constant bits (never or always 1): {result.get('constant_bits', 'n/a')}")
    out.append(f"- mean |correlation| between bits: {_f(result.get('bit_correlation'))}")

    per_class = result.get("per_class") or []
    if per_class:
        out += ["", "## Per class", "", "| class | queries | database | mAP | P@r2 | "
                "hit rate r2 |", "|---|---|---|---|---|---|"]
        for pc in per_class:
            out.append(f"| {pc.get('name', pc.get('label'))} | {pc.get('n_queries')} | "
                       f"{pc.get('n_database')} | {_f(pc.get('map'))} | "
                       f"{_f(pc.get('precision_r2'))} | {_pct(pc.get('hit_rate_r2'), 1)} |")

    captions = {
        "purity_coverage.png": "Purity and coverage / hit rate against Hamming radius",
        "bucket_sizes.png": "Bucket-size histogram (log scale)",
        "bit_balance.png": "Bit balance",
        "pr_by_radius.png": "Precision and recall when retrieving everything within radius r "
                            "(micro-averaged over queries)",
        "largest_buckets.png": "Largest buckets",
    }
    out += ["", "## Figures", ""]
    for name in figures:
        out += [f"### {captions.get(name, name)}", "", f"![{captions.get(name, name)}]({name})",
                ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(result: dict, out_dir, *, title: str, db_images=None, db_codes=None,
                 n_montage_buckets: int = 8) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out_dir``.

    Figures: purity_coverage.png, bucket_sizes.png, bit_balance.png, pr_by_radius.png and,
    when both ``db_images`` ((N, H, W, C) floats in [0, 1]) and ``db_codes`` ((N,) codes of
    those images, same order as the evaluated database) are given and some bucket holds
    two or more images, largest_buckets.png (a row per bucket, the ``n_montage_buckets``
    largest).  Returns the paths written (json, md, then the figures).
    """
    montage = None
    if db_images is not None and db_codes is not None:
        montage = _montage_inputs(db_images, db_codes)  # validate before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = jsonable(result)
    written: list[Path] = []

    json_path = out / "report.json"
    json_path.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written.append(json_path)

    figures: list[str] = []
    plots = [
        ("purity_coverage.png", _plot_purity_coverage),
        ("bucket_sizes.png", _plot_bucket_sizes),
        ("bit_balance.png", _plot_bit_balance),
        ("pr_by_radius.png", _plot_pr),
    ]
    for name, fn in plots:
        fn(clean, out / name, title)
        figures.append(name)
    if montage is not None:
        if _plot_montage(clean, *montage, out / "largest_buckets.png", title,
                         n_montage_buckets):
            figures.append("largest_buckets.png")

    md_path = out / "report.md"
    md_path.write_text(_markdown(clean, title, figures), encoding="utf-8")
    written.append(md_path)
    written += [out / name for name in figures]
    return written
