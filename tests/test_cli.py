"""The whole flow through the CLI on tiny real data: train, index, query, evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from semhash.cli import main


def run(*args, home=None, ok=True):
    argv = [*args] + (["--home", str(home)] if home is not None else [])
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def test_every_command_has_help_with_an_example():
    for name, command in main.commands.items():
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"{name} --help has no example"
    assert "semhash" in CliRunner().invoke(main, ["--help"]).output


def test_version():
    assert "0.1.0" in CliRunner().invoke(main, ["--version"]).output


@pytest.fixture()
def home(trained_home, tmp_path):
    """A private copy of the session's workspace with its tiny trained model."""
    target = tmp_path / "home"
    shutil.copytree(trained_home, target)
    return target


def test_full_flow(home, digit_folder, tmp_path):
    result = run("index", str(digit_folder), home=home)
    assert "60 added" in result.output
    assert "0 skipped" in result.output
    again = run("index", str(digit_folder), home=home)
    assert "60 unchanged" in again.output

    query_image = next((digit_folder / "3").iterdir())
    out = run("query", str(query_image), "--radius", "2", "--json", home=home)
    data = json.loads(out.stdout)
    assert isinstance(data, list) and data[0]["query"] == str(query_image)
    matches = data[0]["matches"]
    assert matches, "the query image itself is indexed, so radius 2 finds it"
    assert matches[0]["distance"] == 0
    distances = [m["distance"] for m in matches]
    assert distances == sorted(distances) and max(distances) <= 2
    assert any(m["path"].endswith(query_image.name) for m in matches if m["distance"] == 0)

    table = run("query", str(query_image), "--radius", "1", "--limit", "3", "--show", str(tmp_path / "q.png"), home=home)
    assert "distance" in table.output and (tmp_path / "q.png").stat().st_size > 0

    report = run("evaluate", "--dataset", "digits", home=home)
    assert "coverage" in report.output and "report.md" in report.output
    loo = run("evaluate", "--index", home=home)
    assert "coverage" in loo.output

    listing = run("models", home=home)
    assert "tiny" in listing.output


def test_bad_files_are_skipped_and_index_stays_intact(home, digit_folder, odd_files, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(digit_folder, folder)
    run("index", str(folder), home=home)
    for name in ("corrupt", "text", "empty"):
        shutil.copy(odd_files[name], folder / "5" / odd_files[name].name)
    result = run("index", str(folder), home=home)
    assert "3 skipped" in result.output and "60 unchanged" in result.output
    for name in ("corrupt.png", "notes.png", "empty.png"):
        assert name in result.stderr
    status = json.loads(run("status", "--json", home=home).stdout)
    assert status["count"] == 60


def test_clear_errors(home, tmp_path, odd_files):
    missing = run("index", str(tmp_path / "missing"), home=home, ok=False)
    assert missing.exit_code == 1 and "no such folder" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("index", str(empty), home=home, ok=False)
    assert result.exit_code == 1 and "no image files" in result.output
    no_model = run("index", str(empty), home=tmp_path / "fresh", ok=False)
    assert no_model.exit_code == 1 and "semhash train" in no_model.output
    no_index = run("query", str(odd_files["rgba"]), home=home, ok=False)
    assert no_index.exit_code == 1 and "semhash index" in no_index.output
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    for name in ("corrupt", "text", "empty"):
        shutil.copy(odd_files[name], only_bad / odd_files[name].name)
    failed = run("index", str(only_bad), home=home, ok=False)
    assert failed.exit_code == 1 and "none of its 3 image files could be read" in failed.output


def test_unreadable_query_and_no_match(home, digit_folder, odd_files):
    run("index", str(digit_folder), home=home)
    bad = run("query", str(odd_files["text"]), home=home, ok=False)
    assert bad.exit_code == 1 and str(odd_files["text"]) in bad.output
    far = run("query", str(odd_files["large"]), "--radius", "0", home=home)
    assert far.exit_code == 0


def test_model_mismatch_is_refused_then_rebuild(home, digit_folder):
    run("index", str(digit_folder), home=home)
    run("train", "digits", "--model", "lsh", "--bits", "24", "--name", "other", "--quiet", home=home)
    refused = run("index", str(digit_folder), "--model", "other", home=home, ok=False)
    assert refused.exit_code == 1 and "--rebuild" in refused.output
    rebuilt = run("index", str(digit_folder), "--model", "other", "--rebuild", home=home)
    assert "60 added" in rebuilt.output


def test_train_cli_writes_meta_and_curve(tmp_path):
    result = run(
        "train", "digits", "--bits", "8", "--hidden", "16", "--epochs", "1", "--name", "cli-ae", "--quiet", "--json",
        home=tmp_path,
    )
    data = json.loads(result.stdout)
    meta = data["meta"]
    assert meta["kind"] == "autoencoder" and meta["bits"] == 8 and meta["input_shape"] == [8, 8, 1]
    for key in ("history", "coding", "fingerprint", "dataset", "created_at"):
        assert key in meta
    assert 0.0 <= meta["coding"]["saturation"] <= 1.0
    assert len(meta["coding"]["bit_balance"]) == 8
    assert (tmp_path / "models" / "cli-ae" / "training_curve.png").exists()
    wrong = run("train", "digits", "--latent-dim", "2", home=tmp_path, ok=False)
    assert wrong.exit_code == 1 and "do not apply" in wrong.output


def test_index_query_evaluate_never_import_tensorflow(home, digit_folder):
    """The paths that do not train run with TensorFlow absent."""
    code = f"""
import sys, json
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow.") or name == "keras":
            raise ImportError("tensorflow is blocked in this test")
sys.meta_path.insert(0, Block())
from click.testing import CliRunner
from semhash.cli import main
home = {str(home)!r}
for args in (["index", {str(digit_folder)!r}], ["query", {str(next((digit_folder / "1").iterdir()))!r}],
             ["evaluate", "--dataset", "digits"], ["evaluate", "--index"], ["models"], ["status"]):
    r = CliRunner().invoke(main, args + ["--home", home])
    assert r.exit_code == 0, (args, r.output, r.exception)
assert "tensorflow" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stdout + out.stderr
