"""What the pictures say (issue 9, item 12): the training curve shows the validation mAP that
chooses the checkpoint and marks the chosen epoch; the query picture names its radius, its
files, and the rows it cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semhash.index import Match, QueryResult


def _texts(fig) -> list[str]:
    """Every piece of text drawn on the figure (titles, labels, annotations, legends)."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


# --------------------------------------------------------------------------- training curve
HISTORY = {
    "loss": [0.30, 0.22, 0.19, 0.18, 0.175],
    "val_loss": [0.29, 0.23, 0.20, 0.19, 0.19],
    "val_map": [0.30, 0.41, 0.46, 0.455, 0.44],
    "val_precision_r2": [0.5, 0.6, 0.7, 0.72, 0.73],
}


def test_training_curve_shows_validation_map_on_a_second_axis_and_marks_the_chosen_epoch():
    from semhash.train import history_figure

    fig = history_figure(HISTORY, "ae (autoencoder)", selected_epoch=3)
    axes = fig.get_axes()
    assert len(axes) == 2, "loss on the left axis, validation mAP on the right one"
    loss_ax, map_ax = axes
    assert "loss" in loss_ax.get_ylabel() and "mAP" in map_ax.get_ylabel()
    plotted = {line.get_label(): list(line.get_ydata()) for ax in axes for line in ax.get_lines()}
    assert plotted["val_map"] == HISTORY["val_map"] and plotted["loss"] == HISTORY["loss"]
    marks = [line for line in loss_ax.get_lines() + map_ax.get_lines() if list(line.get_xdata()) == [3, 3]]
    assert marks, "a vertical line at the chosen epoch"
    assert any("chosen" in text and "3" in text and "0.46" in text for text in _texts(fig)), _texts(fig)


def test_training_curve_without_validation_map_keeps_one_axis():
    from semhash.train import history_figure

    fig = history_figure({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, "vae", selected_epoch=None)
    assert len(fig.get_axes()) == 1
    assert not any("chosen" in t for t in _texts(fig))


def test_train_passes_the_chosen_epoch_to_the_curve(tmp_path, monkeypatch):
    """semhash.train.train feeds plot_history the epoch the model reports as selected."""
    import semhash.train as train_module
    from semhash.workspace import Workspace

    seen = {}

    def spy(history, out_path, title, selected_epoch=None):
        seen.update(history=history, selected_epoch=selected_epoch)
        return None

    monkeypatch.setattr(train_module, "plot_history", spy)
    result = train_module.train(
        "digits",
        "autoencoder",
        {"epochs": 3, "hidden": (16,), "bits": 8, "seed": 0},
        name="curve",
        workspace=Workspace(tmp_path),
        verbose=0,
    )
    assert seen["selected_epoch"] == result.model.meta["metrics"]["selected_epoch"]
    assert "val_map" in seen["history"]


# --------------------------------------------------------------------------- query picture
def _results(folder: Path, n_queries: int, n_matches: int, limit: int | None = None) -> list[QueryResult]:
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    results = []
    for q in range(n_queries):
        matches = [Match(paths[(q + k) % len(paths)], k % 3, "7", 0) for k in range(n_matches)]
        shown = matches if limit is None else matches[:limit]
        results.append(QueryResult(paths[q % len(paths)], 0, "0" * 16, shown, len(matches)))
    return results


def _drawn_inside(fig) -> list[str]:
    """The texts that a rendering actually puts inside the figure."""
    from matplotlib.text import Text

    fig.canvas.draw()
    box = fig.bbox
    inside = []
    for t in fig.findobj(Text):
        if not (t.get_visible() and t.get_text()):
            continue
        extent = t.get_window_extent()
        if box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1 and box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1:
            inside.append(t.get_text())
    return inside


def test_query_picture_has_a_title_with_the_radius_and_visible_file_names(digit_folder):
    from semhash.visualize import query_figure

    results = _results(digit_folder, 2, 3)
    fig = query_figure(results, radius=2)
    drawn = _drawn_inside(fig)
    assert any("radius 2" in t for t in drawn), drawn
    names = {Path(r.query).name for r in results} | {Path(m.path).name for r in results for m in r.matches}
    assert names <= set(drawn), names - set(drawn)
    assert drawn.count("query") == 2


def test_query_picture_marks_cut_rows_and_cut_queries(digit_folder):
    from semhash.visualize import query_figure

    results = _results(digit_folder, 5, 12, limit=8)  # --limit 8 of 12, then at most 4 drawn
    fig = query_figure(results, radius=1, max_queries=3, max_matches=4)
    texts = _texts(fig)
    assert texts.count("+8 more") == 3, texts  # 12 matches, 4 drawn: the total counts, not the limit
    assert any("first 3 of 5 queries" in t for t in texts), texts


def test_query_picture_says_no_match(digit_folder):
    from semhash.visualize import query_figure

    result = _results(digit_folder, 1, 0)
    assert any("no match within radius 0" in t for t in _texts(query_figure(result, radius=0)))


def test_long_and_unicode_file_names_are_shortened_not_dropped(tmp_path, png_writer):
    from semhash.visualize import query_figure

    path = png_writer(tmp_path / ("ünïcødé-数字-" + "x" * 40 + ".png"), np.zeros((8, 8, 1), dtype=np.float32))
    fig = query_figure([QueryResult(str(path), 0, "0", [])], radius=2)
    [label] = [t for t in _texts(fig) if t.startswith("ünïcødé")]
    assert label.endswith(".png") and len(label) <= 24


# --------------------------------------------------------------------------- issue 18: readable figures
def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_training_curve_legend_sits_outside_the_data():
    from semhash.train import history_figure

    fig = history_figure(HISTORY, "ae (autoencoder)", selected_epoch=3)
    renderer = _drawn(fig)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.get_axes():
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers the plotting area"
    assert len(legend.get_texts()) == 5  # loss, val_loss, val_map, val_precision_r2, the chosen epoch


def test_pr_by_radius_labels_never_overlap(tmp_path):
    """Crowded points (recall and precision barely moving from r=0 to r=3) keep readable labels:
    none covers another; r=2, the default radius, always keeps its label."""
    from matplotlib.text import Annotation, Text

    from semhash.report import label_points

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.08)
    points = [(f"r={r}", 0.01 + 0.004 * r, 0.99 - 0.003 * r) for r in (2, 0, 1, 3, 4, 5, 6)]
    placed = label_points(ax, points)
    renderer = _drawn(fig)
    boxes = [Text.get_window_extent(a, renderer) for a in fig.findobj(Annotation)]  # the texts, not the leader lines
    assert len(boxes) == len(placed) >= 4 and placed[0].get_text() == "r=2"
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :]), "two labels overlap"


def test_coding_units_picture_stays_screen_sized_with_readable_labels(tmp_path, digits):
    from matplotlib.text import Text
    from PIL import Image

    from semhash.inspect_model import coding_units, coding_units_figure
    from semhash.models.baselines import ITQHashModel

    images = digits.images[:300]
    hasher = ITQHashModel(input_shape=images.shape[1:], bits=30).fit(images).export_hasher()
    fig = coding_units_figure(hasher, images)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    assert any(t.startswith("bit 29 ") for t in _texts(fig)), "every unit is labelled"
    assert min(sizes) >= 9, "every label at least 9 pt at 100 dpi"
    with Image.open(coding_units(hasher, images, tmp_path / "coding_units.png")) as img:
        width, height = img.size
    assert width <= 1920 and height <= 1200, (width, height)  # was 1854 x 5264 for 30 bits
