"""README.md cannot drift from what the commands print (issue 9, item 11).

scripts/readme.py runs the README's commands for real and records each command's --json
output with the text printed for it in docs/readme/transcript.json.  These tests take
seconds and run nothing heavy:

(a) every generated README block equals what the generator renders from that transcript;
(b) today's CLI formatting of each recorded --json document is the recorded text, so a
    change to what a command prints fails here until the README is regenerated;
(c) the headline table equals the one rendered from docs/benchmarks/quality.json alone;
(d) on tiny real data, each command's text output is the formatting of its --json output
    (what makes (b) a statement about the commands, not only about the recorded text).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run `python scripts/readme.py --render` (or the full `nice -n 10 python scripts/readme.py`)"


@pytest.fixture(scope="module")
def readme_script():
    spec = importlib.util.spec_from_file_location("readme_script", ROOT / "scripts" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def transcript(readme_script):
    return readme_script.load(readme_script.TRANSCRIPT)


def test_a_readme_blocks_are_rendered_from_the_transcript(readme_script, transcript):
    readme = readme_script.README.read_text()
    quality = readme_script.load(readme_script.QUALITY)
    assert readme_script.render_readme(transcript, quality, readme) == readme, f"README.md drifted: {REGENERATE}"


def test_b_recorded_json_formats_to_the_recorded_text(readme_script, transcript):
    assert set(transcript["commands"]) >= {"demo", "train", "index", "query", "evaluate", "query-json"}
    for name, entry in transcript["commands"].items():
        text = readme_script.formatter(entry["argv"])(entry["json"])
        assert text == entry["text"], f"what `{' '.join(entry['argv'])}` prints changed: {REGENERATE}"


def test_c_headline_table_comes_from_quality_json_only(readme_script):
    readme = readme_script.README.read_text()
    match = next(m for m in readme_script.MARKER_RE.finditer(readme) if m.group("name") == "quality")
    table = readme_script.quality_block(readme_script.load(readme_script.QUALITY))
    assert match.group("body").rstrip("\n") == table, f"the headline table drifted from quality.json: {REGENERATE}"


def test_headline_table_follows_a_changed_quality_json(readme_script):
    quality = readme_script.load(readme_script.QUALITY)
    row = next(r for r in quality["results"] if r["kind"] == "itq" and r["bits"] == 30 and r["dataset"] == "mnist-5k")
    before = readme_script.quality_block(quality)
    row["map"] = 0.123456
    after = readme_script.quality_block(quality)
    assert before != after and "0.123" in after


def test_check_fails_when_the_readme_or_a_command_drifts(readme_script, tmp_path, monkeypatch, capsys):
    for name in ("README", "TRANSCRIPT"):
        copy = tmp_path / getattr(readme_script, name).name
        shutil.copy(getattr(readme_script, name), copy)
        monkeypatch.setattr(readme_script, name, copy)
    assert readme_script.main(["--check"]) == 0
    readme = readme_script.README.read_text()
    changed = re.sub(r"(\d+) of (\d+) matches", lambda m: f"{m[1]} of {int(m[2]) + 1} matches", readme, count=1)
    assert changed != readme
    readme_script.README.write_text(changed)
    assert readme_script.main(["--check"]) == 1
    readme_script.README.write_text(readme)
    import semhash.cli.cmd_index as cmd_index

    monkeypatch.setattr(cmd_index, "format_query", lambda data: "changed")
    assert readme_script.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err


def test_markers_and_blocks_must_match(readme_script):
    with pytest.raises(SystemExit, match="lacks the markers"):
        readme_script.apply_blocks("no markers here\n", {"demo": "x"})
    with pytest.raises(SystemExit, match="does not render"):
        readme_script.apply_blocks("<!-- readme:other -->\nold\n<!-- /readme:other -->\n", {})
    text = "a\n<!-- readme:x -->\nold\n<!-- /readme:x -->\nb\n"
    assert readme_script.apply_blocks(text, {"x": "new"}) == "a\n<!-- readme:x -->\nnew\n<!-- /readme:x -->\nb\n"


# --------------------------------------------------------------------------- (d)
def test_d_text_output_is_the_formatting_of_the_json_output(readme_script, home_copy, digit_folder, tmp_path, cli):
    home = home_copy
    h = ["--home", str(home)]
    cli("index", digit_folder, "--quiet", *h)
    query = str(sorted((digit_folder / "3").iterdir())[0])
    commands = [
        ["index", str(digit_folder), "--quiet", *h],  # "60 unchanged" both times
        ["query", query, "--radius", "3", "--limit", "4", *h],
        ["query", query, str(sorted((digit_folder / "5").iterdir())[0]), "--radius", "0", *h],
        ["evaluate", *h],
        ["evaluate", "--index", str(home / "index" / "index.sqlite"), *h],
        ["export-dataset", "digits", str(tmp_path / "export"), "--part", "query"],
    ]
    for args in commands:
        data = json.loads(cli(*args, "--json").stdout)
        text = cli(*args).stdout.rstrip("\n")
        assert readme_script.formatter(["semhash", *args])(data) == text, args


def test_scale_lines_follow_the_benchmark_json(readme_script):
    """The "How big and how fast" figures are made from the committed benchmark results."""
    scale = {name: readme_script.load(path) for name, path in readme_script.SCALE.items()}
    before = readme_script.scale_block(scale)
    biggest = max(scale["integration"]["rows"], key=lambda r: r["n"])
    biggest["import_rows_per_s"] = 123_456
    biggest["cold_query_median_s"] = 9.87
    after = " ".join(readme_script.scale_block(scale).split())  # as one paragraph: wrapping aside
    assert before != after and "123,456 rows/s" in after and "9.87 s at 10^7" in after


def test_copies_block_follows_the_benchmark_json(readme_script):
    """The near tier's figures in the README are made from docs/benchmarks/copies.json."""
    copies = readme_script.load(readme_script.COPIES)
    copy_model = readme_script.load(readme_script.COPY_MODEL)
    before = readme_script.copies_block(copies, copy_model)
    copies["recall_at_99_precision"]["PDQ"]["crop_5pct"]["recall"] = 0.123
    after = readme_script.copies_block(copies, copy_model)
    assert before != after and "| cropped 5% |" in after and "12%" in after
    # ... and the copy model's columns from copy_model.json's default row
    copy_model["rows"][copy_model["default_row"]]["near_tier_path"]["recall_at_99_precision"]["pad_10pct"] = 0.777
    assert "78%" in readme_script.copies_block(copies, copy_model).split("| padded 10% |")[1].split("\n")[0]


def test_photos_block_follows_the_benchmark_json(readme_script):
    """The photo library's figures in the README are made from docs/benchmarks/photos.json."""
    photos, larger = readme_script.load(readme_script.PHOTOS), readme_script.load(readme_script.PHOTOS_LARGER)
    before = readme_script.photos_block(photos, larger)
    photos["decode"][0]["end_to_end_vs_floor"] = 1.987
    photos["watch"]["median_ms"] = 4321.0
    larger["index"][1]["speedup_vs_1"] = 1.234
    after = " ".join(readme_script.photos_block(photos, larger).split())
    assert before != after and "1.99×" in after and "4321 ms" in after and "1.23× one" in after
