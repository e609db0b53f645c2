"""What users see (issue 9): query --show and --limit, evaluate's choice of what to evaluate,
one-line warnings, and the demo's own workspace."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semhash.cli import main


def one_line_error(result) -> str:
    """The error of a failed command: exit 1, no traceback, one line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture()
def home(home_copy):
    return home_copy


@pytest.fixture()
def indexed(home, digit_folder, cli):
    cli("index", str(digit_folder), "--quiet", home=home)
    return home


def query_image(digit_folder):
    return str(sorted((digit_folder / "3").iterdir())[0])


# --------------------------------------------------------------------------- item 9: --limit
def test_limit_says_how_many_of_how_many(indexed, digit_folder, cli):
    # radius 16 on a 16-bit index: every one of the 60 images matches
    out = cli("query", query_image(digit_folder), "--radius", "16", "--limit", "8", home=indexed)
    assert "8 of 60 matches in the exact, near and similar (radius 16) tiers" in out.stdout
    full = cli("query", query_image(digit_folder), "--radius", "16", home=indexed)
    assert "60 matches in the exact, near and similar (radius 16) tiers" in full.stdout and " of 60" not in full.stdout
    data = json.loads(cli("query", query_image(digit_folder), "-r", "16", "-n", "8", "--json", home=indexed).stdout)
    assert data[0]["total"] == 60 and len(data[0]["matches"]) == 8 and data[0]["radius"] == 16


# --------------------------------------------------------------------------- item 7: --show
@pytest.mark.parametrize("name", ["x.txt", "out", "picture.png.bak"])
def test_show_with_an_unsupported_name_fails_before_searching(indexed, digit_folder, tmp_path, name, cli):
    target = tmp_path / name
    result = cli("query", query_image(digit_folder), "--show", str(target), home=indexed, ok=False)
    line = one_line_error(result)
    assert str(target) in line and ".png" in line
    assert result.stdout == "", "nothing is searched or printed before the name is checked"
    assert not target.exists() and not (tmp_path / f"{name}.png").exists()


def test_show_into_a_file_used_as_a_folder_fails_before_searching(indexed, digit_folder, tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("query", query_image(digit_folder), "--show", str(blocker / "q.png"), home=indexed, ok=False)
    line = one_line_error(result)
    assert str(blocker) in line and "not a folder" in line and result.stdout == ""


def test_show_into_a_read_only_folder_fails_before_searching(indexed, digit_folder, tmp_path, cli):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere, except where the kernel says no
        locked = Path("/proc/sys")
    if os.access(locked, os.W_OK):
        pytest.skip("no folder here is read-only for this user (root, and /proc/sys writable)")
    try:
        result = cli("query", query_image(digit_folder), "--show", str(locked / "q.png"), home=indexed, ok=False)
        assert "not writable" in one_line_error(result) and result.stdout == ""
    finally:
        (tmp_path / "locked").chmod(0o755)


@pytest.mark.parametrize("name", ["q.png", "sub/dir/q.jpg", "q.PDF", "q.svg"])
def test_show_reports_the_file_it_wrote(indexed, digit_folder, tmp_path, name, cli):
    target = tmp_path / name
    result = cli("query", query_image(digit_folder), "--show", str(target), home=indexed)
    assert f"wrote {target}" in result.stderr
    assert target.is_file() and target.stat().st_size > 0
    assert list(target.parent.glob(f"{target.name}*")) == [target], "no other name (e.g. q.png.png) was written"


def test_show_caps_the_picture_and_says_so(indexed, digit_folder, tmp_path, monkeypatch, cli):
    from PIL import Image

    import semhash.visualize

    monkeypatch.setattr(semhash.visualize, "MAX_QUERIES", 3)  # the defaults (20, 10) draw the same way, slower
    monkeypatch.setattr(semhash.visualize, "MAX_MATCHES", 2)
    queries = [str(p) for p in sorted(digit_folder.rglob("*.png"))][:8]
    target = tmp_path / "many.png"
    result = cli("query", *queries, "--radius", "16", "--show", str(target), home=indexed)
    assert "first 3 of 8 queries, first 2 matches each" in result.stderr
    with Image.open(target) as img:
        capped = img.size
    cli("query", *queries[:3], "--radius", "16", "--show", str(tmp_path / "three.png"), home=indexed)
    with Image.open(tmp_path / "three.png") as img:
        assert capped == img.size, "8 queries are drawn as 3 rows of 2 matches (+ a '+N more' column)"


def test_show_with_a_limit_says_what_it_drew(indexed, digit_folder, tmp_path, cli):
    """query --limit 3 --show draws 3 matches a query, and says 3 (not the cap of 10)."""
    query = query_image(digit_folder)
    total = json.loads(cli("query", query, "--radius", "16", "--json", home=indexed).stdout)[0]["total"]
    assert total > 3
    result = cli("query", query, "--radius", "16", "--limit", "3", "--show", str(tmp_path / "m.png"), home=indexed)
    assert f"showing the first 3 of {total} matches" in result.stderr
    queries = [str(p) for p in sorted(digit_folder.rglob("*.png"))][:2]
    result = cli("query", *queries, "--radius", "16", "--limit", "3", "--show", str(tmp_path / "two.png"), home=indexed)
    assert "showing the first 3 matches each" in result.stderr


# --------------------------------------------------------------------------- item 8: query's errors and warnings
def test_query_names_a_folder_and_a_symlink_loop(indexed, tmp_path, cli):
    folder = tmp_path / "photo.png"
    folder.mkdir()
    assert "is a folder" in one_line_error(cli("query", str(folder), home=indexed, ok=False))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    os.symlink(b, a)
    os.symlink(a, b)
    assert "symlink loop" in one_line_error(cli("query", str(a), home=indexed, ok=False))


def test_decompression_bomb_is_one_warning_line(indexed, tmp_path, png_writer, monkeypatch, cli):
    from PIL import Image

    big = png_writer(tmp_path / "big.png", np.full((40, 40), 0.5, dtype=np.float32))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    result = cli("query", str(big), "--tier", "similar", home=indexed)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"warning: {big}: very large image"), result.stderr
    assert "DecompressionBombWarning" not in result.stderr


# --------------------------------------------------------------------------- item 10: evaluate
@pytest.fixture(scope="module")
def digits_pngs(tmp_path_factory):
    """sklearn's 1,797 digits as PNGs in label folders (enough for a validation split)."""
    from semhash.data import export_dataset

    root = tmp_path_factory.mktemp("digits_pngs")
    export_dataset("digits", root)
    return root


@pytest.fixture()
def folder_model(tmp_path, digits_pngs, cli):
    """A workspace whose only model was trained on an image folder (the README's order)."""
    home = tmp_path / "folder-home"
    cli("train", str(digits_pngs), "--hidden", "16", "--bits", "8", "--epochs", "1", "--name", "f8", "--quiet", home=home)
    return home


def test_evaluate_after_train_folder_and_index_folder_evaluates_the_index(folder_model, digits_pngs, cli):
    cli("index", str(digits_pngs), "--quiet", home=folder_model)
    result = cli("evaluate", home=folder_model)
    assert "index" in result.stdout and "each querying all the others" in result.stdout
    assert "not a built-in dataset" in result.stdout  # says why it evaluated the index
    assert "coverage" in result.stdout


def test_evaluate_after_train_folder_without_index_says_what_to_run(folder_model, cli):
    line = one_line_error(cli("evaluate", home=folder_model, ok=False))
    assert "semhash index" in line and "f8" in line


def test_evaluate_index_means_an_index_file(home, digit_folder, tmp_path, cli):
    custom = tmp_path / "elsewhere" / "mine.sqlite"
    cli("index", str(digit_folder), "--index", str(custom), "--quiet", home=home)
    result = cli("evaluate", "--index", str(custom), home=home)
    assert str(custom) in result.stdout and "each querying all the others" in result.stdout
    data = json.loads(cli("evaluate", "--index", str(custom), "--json", home=home).stdout)
    assert data["result"]["protocol"] == "leave-one-out" and str(custom) in data["source"]


def test_evaluate_index_file_bound_to_another_model_is_refused(home, digit_folder, tmp_path, cli):
    cli("index", str(digit_folder), "--quiet", home=home)
    cli("train", "digits", "--model", "lsh", "--bits", "24", "--name", "other", "--quiet", home=home)
    line = one_line_error(cli("evaluate", "--index", str(home / "index" / "index.sqlite"), "--model", "other", home=home, ok=False))
    assert "tiny" in line and "other" in line


def test_evaluate_default_is_still_the_models_dataset(indexed, cli):
    result = cli("evaluate", home=indexed)
    assert "dataset digits" in result.stdout and "query split" in result.stdout


def test_evaluate_help_documents_index_as_a_file():
    text = CliRunner().invoke(main, ["evaluate", "--help"]).output
    assert "--index FILE" in text and "--index-path" not in text


# --------------------------------------------------------------------------- issue 18: a newcomer's snags
def test_status_reads_as_sentences_with_times_in_one_form(indexed, cli):
    data = json.loads(cli("status", "--json", home=indexed).stdout)
    assert data["created_at"].endswith("+00:00") and data["last_indexed_at"].endswith("+00:00")
    assert data["generation"] >= 1  # kept for programs; explained in --help, not printed
    text = cli("status", home=indexed).stdout
    assert "count: 60 images (10 labels)" in text and "model: tiny (16 bits, input 8x8x1)" in text
    assert re.search(r"^created: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", text, re.M), text
    assert re.search(r"^last indexed: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", text, re.M), text
    assert "generation" not in text and "fingerprint" not in text
    assert "generation" in cli("status", "--help").stdout


def test_compare_names_every_missing_model_before_any_work(home, cli, monkeypatch):
    import semhash.pipeline

    def must_not_run(*args, **kwargs):
        raise AssertionError("a model was evaluated before the names were checked")

    monkeypatch.setattr(semhash.pipeline, "evaluate_on_dataset", must_not_run)
    result = cli("evaluate", "--compare", "tiny", "cnn30", "itq-1", home=home, ok=False)
    line = one_line_error(result)
    assert "'cnn30', 'itq-1'" in line and "trained: tiny" in line and "semhash train" in line


def test_a_resumed_index_run_says_what_it_skips_and_the_bar_counts_bytes(tmp_path):
    from index_fixtures import add_model, write_digit_folder

    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=16)
    folder = tmp_path / "imgs"
    written = write_digit_folder(folder, per_class=4, classes=(0, 1))
    runner = CliRunner()
    first = runner.invoke(main, ["index", str(folder), "--home", str(home), "--workers", "1"])
    assert first.exit_code == 0, first.output
    assert "MB read" in first.stderr and "unchanged since" not in first.stderr  # nothing to resume
    written[0].with_name("new.png").write_bytes(written[0].read_bytes()[:-1] + b"\x00")  # one more file (same pixels)
    again = runner.invoke(main, ["index", str(folder), "--home", str(home), "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert "8 of 9 files unchanged since they were indexed: hashing the other 1" in again.stderr
    quiet = runner.invoke(main, ["index", str(folder), "--home", str(home), "--quiet"])
    assert "unchanged since" not in quiet.stderr and "9 unchanged" in quiet.stdout
