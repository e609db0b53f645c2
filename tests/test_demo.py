"""`semhash demo` never touches a user's index or models (issue 9, item 2): it works in a
folder of its own (./semhash-demo, or --home), marked as the demo's, and refuses any other."""

from __future__ import annotations

import hashlib
import json
import shlex

import pytest

QUICK = ["--dataset", "digits", "--epochs", "1", "--queries", "2"]  # seconds instead of a minute


def digest(folder) -> dict[str, str]:
    """Content hash of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def user_home(home_copy, digit_folder, cli):
    """A user's workspace: a trained model and an index of 60 images."""
    cli("index", digit_folder, "--quiet", home=home_copy)
    return home_copy


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = [l for l in result.stderr.splitlines() if l.startswith("Error:")]
    return line


def test_demo_refuses_a_folder_holding_a_users_index_and_models(user_home, cli):
    before = digest(user_home)
    line = error_line(cli("demo", "--home", str(user_home), *QUICK, ok=False))
    assert str(user_home) in line and "did not make" in line and "index" in line and "tiny" in line
    assert digest(user_home) == before


def test_demo_refuses_a_folder_with_other_files(tmp_path, cli):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not touched")
    line = error_line(cli("demo", "--home", str(folder), *QUICK, ok=False))
    assert "holiday.jpg" in line
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]


def test_demo_works_in_its_own_folder_and_never_in_semhash_home(user_home, digit_folder, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    before = digest(user_home)
    env = {"SEMHASH_HOME": str(user_home)}  # the everyday commands' workspace: the demo ignores it
    result = cli("demo", *QUICK, env=env)
    demo_home = tmp_path / "semhash-demo"
    assert (demo_home / "index" / "index.sqlite").is_file() and (demo_home / "models" / "demo-autoencoder").is_dir()
    assert (demo_home / ".semhash-demo.json").is_file()
    assert digest(user_home) == before, "the user's workspace is untouched"

    # the last lines say where everything went and give follow-up commands that work as printed
    out = result.stdout
    assert "semhash-demo" in out.split("where everything went")[1]
    follow_ups = [line.strip() for line in out.split("try next:")[1].splitlines() if line.strip().startswith("semhash ")]
    assert follow_ups and all("--home semhash-demo" in line for line in follow_ups)
    assert any(line.startswith("semhash serve --home semhash-demo") for line in follow_ups)
    for line in follow_ups:
        args = shlex.split(line)[1:]
        if args[0] == "serve":  # serves until interrupted: check that it takes these arguments
            args.append("--help")
        cli(*args, env=env)
    query_line = next(line for line in follow_ups if line.startswith("semhash query"))
    assert "similar (radius 2) tiers" in cli(*shlex.split(query_line)[1:], env=env).stdout

    # run again: its own folder is claimed again (the full run is the one above)
    from semhash.demo import claim_demo_home

    assert claim_demo_home("semhash-demo") == demo_home.relative_to(tmp_path)

    # once the user has indexed something else into the demo's index, the demo leaves it alone
    cli("index", digit_folder, "--quiet", home=demo_home)
    changed = digest(demo_home)
    line = error_line(cli("demo", *QUICK, ok=False, env=env))
    assert "index.sqlite" in line and "changed since the demo" in line
    assert digest(demo_home) == changed
