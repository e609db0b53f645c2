"""Hyperparameter search (semhash.tune) and the `semhash tune` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from semhash.errors import SemhashError
from semhash.tune import (
    ConfigError,
    TuneError,
    TuneResult,
    format_value,
    load_config,
    parameter_candidates,
    parse_param_grid,
    parse_value,
    score_codes,
    subsample,
    tune,
    write_best_config,
)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int64)


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, expected",
    [
        ("8", 8),
        ("-3", -3),
        ("0.001", 0.001),
        ("1e-3", 0.001),
        ("true", True),
        ("False", False),
        ("yes", True),
        ("none", None),
        ("500x300", (500, 300)),
        ("28x28x1", (28, 28, 1)),
        ("256x", (256,)),
        ("relu", "relu"),
        ("x", "x"),
        ("maxout", "maxout"),
        ("nan", "nan"),
    ],
)
def test_parse_value(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_parse_param_grid():
    grid = parse_param_grid(
        ["noise=2,4,8", "learning-rate=0.001,0.0003", "hidden=500x300,256x128", "tied=true,false", "activation=relu,elu"]
    )
    assert grid == {
        "noise": [2, 4, 8],
        "learning_rate": [0.001, 0.0003],
        "hidden": [(500, 300), (256, 128)],
        "tied": [True, False],
        "activation": ["relu", "elu"],
    }
    assert list(grid) == ["noise", "learning_rate", "hidden", "tied", "activation"]
    assert parse_param_grid([]) == {}
    # a name given twice accumulates; spaces are ignored
    assert parse_param_grid(["bits=16", " bits = 30 , 64 "]) == {"bits": [16, 30, 64]}


@pytest.mark.parametrize("item", ["noise", "=4", "noise=", "noise=2,,4", "no ise=3", "1x=2"])
def test_parse_param_grid_errors(item):
    with pytest.raises(TuneError):
        parse_param_grid([item])


def test_parse_param_grid_for_kind():
    # (a NumPy kind: the autoencoder's module would import TensorFlow just for its signature)
    grid = parse_param_grid(["input_shape=64,8x8x1", "bits=16"], kind="itq")
    assert grid == {"input_shape": [(64,), (8, 8, 1)], "bits": [16]}
    with pytest.raises(TuneError, match="do not apply"):
        parse_param_grid(["itq_iterations=5"], kind="lsh")
    with pytest.raises(SemhashError, match="unknown model kind"):
        parse_param_grid(["bits=5"], kind="nope")


def test_format_value_inverts_parse():
    for text in ("500x300", "256x", "true", "none", "0.001", "relu", "8"):
        assert parse_value(format_value(parse_value(text))) == parse_value(text)


def test_parameter_candidates():
    grid = {"a": [1, 2, 3], "b": ["x", "y"]}
    full = parameter_candidates(grid)
    assert len(full) == 6 and full[0] == {"a": 1, "b": "x"} and full[-1] == {"a": 3, "b": "y"}
    some = parameter_candidates(grid, n_iter=4, seed=1)
    assert len(some) == 4 and all(c in full for c in some)
    assert len({tuple(c.items()) for c in some}) == 4
    assert some == parameter_candidates(grid, n_iter=4, seed=1)
    assert parameter_candidates(grid, n_iter=10) == full
    assert parameter_candidates({}) == [{}]
    assert parameter_candidates({"a": 5}) == [{"a": 5}]
    with pytest.raises(TuneError):
        parameter_candidates({"a": []})


def test_subsample_is_stratified(digits):
    images, labels = digits
    x, y = subsample(images, labels, 500, seed=0)
    assert len(x) == len(y) == 500
    counts = np.bincount(y, minlength=10)
    assert counts.min() >= 48 and counts.max() <= 52
    x2, _ = subsample(images, labels, 500, seed=0)
    np.testing.assert_array_equal(x, x2)
    assert subsample(images, labels, 10_000)[0] is images


def test_score_codes_known_answers():
    labels = np.array([0, 0, 1, 1])
    codes = np.array([0b0000, 0b0000, 0b1111, 0b1111], dtype=np.uint64)
    assert score_codes("map", codes, labels, codes, labels, 4) == pytest.approx(1.0)
    assert score_codes("precision_r2", codes, labels, codes, labels, 4) == pytest.approx(1.0)
    # every code at distance 4 from every other: nothing within radius 2, precision counts 0
    far = np.array([0b1111], dtype=np.uint64)
    assert score_codes("precision_r2", far, np.array([0]), codes[:2], labels[:2], 4) == 0.0
    with pytest.raises(TuneError, match="unknown metric"):
        score_codes("auc", codes, labels, codes, labels, 4)


# --------------------------------------------------------------------------- tuning
def test_tiny_tune_run_and_config(digits, tmp_path):
    images, labels = digits
    messages = []
    result = tune("itq", images, labels, {"bits": [8, 16, 32]}, folds=2, seed=0, log=messages.append)
    assert isinstance(result, TuneResult)
    assert result.kind == "itq" and result.metric == "map" and result.folds == 2 and len(result) == 3
    means = [t.mean for t in result]
    assert means == sorted(means, reverse=True)
    for params, mean, std, fold_scores, seconds in result:
        assert set(params) == {"bits"}
        assert len(fold_scores) == 2 and all(0.0 < s <= 1.0 for s in fold_scores)
        assert mean == pytest.approx(np.mean(fold_scores)) and std == pytest.approx(np.std(fold_scores))
        assert seconds >= 0
    # more ITQ bits retrieve better on digits
    assert result.best_params == {"bits": 32}
    assert result.best_score == result[0].mean
    assert any("fold 2/2" in m for m in messages)

    path = write_best_config(result, tmp_path / "sub" / "best.json")
    data = json.loads(path.read_text())
    assert data["kind"] == "itq" and data["metric"] == "map"
    assert data["params"] == {"bits": 32}  # input_shape came from the data: not written
    assert data["score"] == pytest.approx(result[0].mean)
    assert load_config(path) == ("itq", {"bits": 32})
    json.dumps(result.to_dict())  # serialisable


def test_tune_lsh_precision_r2_with_base_params(digits, tmp_path):
    images, labels = digits
    result = tune(
        "lsh", images[:600], labels[:600], {"seed": [0, 1]}, folds=2, metric="precision_r2",
        base_params={"bits": 8, "input_shape": [8, 8, 1]},
    )
    assert result.metric == "precision_r2" and len(result) == 2
    assert result.best_params["bits"] == 8 and result.best_params["input_shape"] == [8, 8, 1]
    kind, params = load_config(write_best_config(result, tmp_path / "b.json"))
    assert kind == "lsh" and params["input_shape"] == (8, 8, 1) and params["bits"] == 8


def test_tune_is_reproducible_and_n_iter(digits):
    images, labels = digits
    grid = {"bits": [4, 8, 12, 16], "itq_iterations": [0, 10]}
    a = tune("itq", images[:500], labels[:500], grid, folds=2, n_iter=3, seed=4)
    b = tune("itq", images[:500], labels[:500], grid, folds=2, n_iter=3, seed=4)
    assert len(a) == 3
    assert [(t.params, t.fold_scores) for t in a] == [(t.params, t.fold_scores) for t in b]


def test_failed_setting_ranks_last(digits):
    images, labels = digits
    result = tune("pcah", images[:400], labels[:400], {"bits": [100, 8]}, folds=2)
    assert result[0].params == {"bits": 8} and result[0].error is None
    assert result[1].params == {"bits": 100} and "bits" in result[1].error and math.isnan(result[1].mean)
    with pytest.raises(TuneError, match="every tuning setting failed"):
        tune("pcah", images[:400], labels[:400], {"bits": [100]}, folds=2)


def test_tune_errors(digits):
    images, labels = digits
    with pytest.raises(TuneError, match="unknown metric"):
        tune("lsh", images, labels, {}, metric="auc")
    with pytest.raises(TuneError, match="labelled"):
        tune("lsh", images, None, {})
    with pytest.raises(TuneError, match="do not apply"):
        tune("lsh", images, labels, {"noise": [1, 2]})
    with pytest.raises(TuneError, match="folds"):
        tune("lsh", images, labels, {}, folds=1)
    with pytest.raises(SemhashError, match="unknown model kind"):
        tune("nope", images, labels, {})


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such config file"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"params": {}}', 'missing "kind"'),
        ('{"kind": "lsh", "params": [1]}', '"params" must be an object'),
        ('{"kind": "nope", "params": {}}', "unknown model kind"),
        ('{"kind": "lsh", "params": {"noise": 3}}', "do not apply"),
    ],
)
def test_load_config_errors(tmp_path, content, message):
    path = tmp_path / "best.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, SemhashError)


def test_load_config_hand_written(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"kind": "autoencoder", "params": {"hidden": [256, 128], "noise": 8}}')
    assert load_config(path) == ("autoencoder", {"hidden": (256, 128), "noise": 8})
    path.write_text('{"kind": "itq"}')
    assert load_config(path) == ("itq", {})


# --------------------------------------------------------------------------- command
def test_cli_tune(tmp_path):
    from semhash.cli.cmd_tune import tune as tune_command
    from click.testing import CliRunner

    out = tmp_path / "best.json"
    runner = CliRunner()
    result = runner.invoke(
        tune_command,
        ["digits", "--model", "lsh", "--param", "bits=8,16", "--folds", "2", "--limit", "600", "-o", str(out), "--home", str(tmp_path / "ws")],
    )
    assert result.exit_code == 0, result.output
    assert "rank" in result.output and "best: bits=16" in result.output
    assert load_config(out) == ("lsh", {"bits": 16})

    result = runner.invoke(tune_command, ["digits", "--model", "lsh", "--param", "bits=8", "--folds", "2", "--limit", "300", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "lsh" and doc["trials"][0]["rank"] == 1 and doc["n_images"] == 300

    result = runner.invoke(tune_command, ["digits", "--model", "lsh", "--param", "noise=2"])
    assert result.exit_code == 1 and "do not apply" in result.output


# --------------------------------------------------------------------------- issue 18: a search that stops
def test_the_first_fold_gives_an_estimate_of_the_whole_search(digits):
    images, labels = digits
    messages = []
    tune("lsh", images[:400], labels[:400], {"bits": [8, 16, 24]}, folds=2, log=messages.append)
    (estimate,) = [m for m in messages if m.startswith("estimate")]
    assert "for all 6 fits" in estimate and messages.index(estimate) == 2  # right after the first fold


def _interrupt_on_call(monkeypatch, n: int) -> None:
    """Ctrl-C arrives during the n-th fold's scoring (after the fold's model was fitted)."""
    import semhash.tune as tune_module

    calls = {"n": 0}
    score = tune_module.score_codes

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    monkeypatch.setattr(tune_module, "score_codes", interrupted)


def test_ctrl_c_keeps_the_settings_measured_so_far(digits, monkeypatch):
    images, labels = digits
    _interrupt_on_call(monkeypatch, 4)  # setting 1 scored on both folds, setting 2 on its first
    result = tune("lsh", images[:400], labels[:400], {"bits": [8, 16, 24, 32]}, folds=2)
    assert result.interrupted and result.settings == 4
    assert [t.params for t in result if t.error is None] == [{"bits": 8}]
    (partial,) = [t for t in result if t.error]
    assert partial.params == {"bits": 16} and partial.error == "interrupted after 1 of 2 folds"
    assert len(partial.fold_scores) == 1 and math.isnan(partial.mean)  # kept, never ranked above a full one
    assert result.best.params == {"bits": 8} and result.to_dict()["interrupted"] is True


def test_ctrl_c_before_any_setting_is_measured_is_an_ordinary_ctrl_c(digits, monkeypatch):
    images, labels = digits
    _interrupt_on_call(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        tune("lsh", images[:400], labels[:400], {"bits": [8, 16]}, folds=2)


def test_cli_prints_and_writes_what_was_measured_then_fails(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from semhash.cli.cmd_tune import tune as tune_command

    _interrupt_on_call(monkeypatch, 5)
    out = tmp_path / "best.json"
    argv = ["digits", "--model", "lsh", "--param", "bits=8,16,24", "--folds", "2", "--limit", "400", "-o", str(out),
            "--home", str(tmp_path / "ws")]
    result = CliRunner().invoke(tune_command, argv)
    assert result.exit_code == 1
    assert "rank" in result.stdout and "interrupted after" not in result.stdout  # setting 3 had no fold yet
    assert "interrupted: 2 of 3 settings measured" in result.stderr
    config = json.loads(out.read_text())
    assert config["interrupted"] == {"settings_measured": 2, "settings": 3}
    assert load_config(out)[0] == "lsh"


def test_a_real_ctrl_c_stops_semhash_tune_and_keeps_the_table(tmp_path):
    """SIGINT to a real `semhash tune` once its first setting is measured: the table of what
    was measured is printed, the best written, and the exit code says it did not finish."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "best.json"
    grid = ",".join(str(i) for i in range(400))  # far more than it can fit before the signal arrives
    argv = [sys.executable, "-m", "semhash", "tune", "digits", "--model", "itq", "--param", f"itq_iterations={grid}",
            "--folds", "2", "-o", str(out), "--home", str(tmp_path / "ws")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stderr:  # the event: setting 1 scored on every fold
            if line.startswith("[1/400]") and "+-" in line:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "interrupted:" in stderr and "of 400 settings measured" in stderr and "Traceback" not in stderr
    assert stdout.startswith("itq on digits") and "best: itq_iterations=" in stdout
    assert json.loads(out.read_text())["interrupted"]["settings"] == 400
