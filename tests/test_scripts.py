"""The benchmark scripts' argument handling (their runs are measured, not tested: docs/BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_quality_param_overrides_one_kind():
    bench = _script("benchmark_quality")
    args = bench.parse_args(
        ["--kinds", "classifier-hash,itq", "--param", "classifier-hash:filters=32x64x128", "--param", "classifier-hash:flip=true"]
    )
    assert args.overrides == {"classifier-hash": {"filters": (32, 64, 128), "flip": True}}
    from semhash.models import get_kind

    params = bench.kind_params(get_kind("classifier-hash"), (28, 28, 1), 30, 1.0, 0, args.overrides)
    assert params["filters"] == (32, 64, 128) and params["flip"] is True and params["bits"] == 30
    assert "filters" not in bench.kind_params(get_kind("itq"), (28, 28, 1), 30, 1.0, 0, args.overrides)


@pytest.mark.parametrize("item", ["filters=32x64", "nokind:filters=3", "classifier-hash:nonsense=1", "classifier-hash:noise=2,4"])
def test_benchmark_quality_refuses_bad_params(item, capsys):
    bench = _script("benchmark_quality")
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--param", item])
    assert exit_info.value.code == 2
    assert "--param" in capsys.readouterr().err


def _run_doc(command: str, rows: list[tuple[str, int, str, float]]) -> dict:
    keys = ["precision_r2", "precision_r2_hits", "hit_rate_r2", "bucket_purity", "bucket_coverage"]
    return {
        "benchmark": "quality",
        "created_at": "2026-01-01T00:00:00+00:00",
        "command": command,
        "environment": {"machine": "test"},
        "settings": {"datasets": sorted({r[0] for r in rows}), "epochs_scale": 1.0},
        "results": [
            {"dataset": d, "bits": b, "kind": k, "map": m, "baseline": False, "n_database": 10, "n_queries": 2,
             "train_seconds": 1.0, "encode_images_per_s": 1.0, **{key: 0.5 for key in keys}}
            for d, b, k, m in rows
        ],
        "skipped": [],
        "seconds": 1.0,
    }


def test_benchmark_quality_merge_replaces_rows_measured_again(tmp_path, capsys):
    import json

    bench = _script("benchmark_quality")
    old = tmp_path / "old.json"
    new = tmp_path / "new.json"
    old.write_text(json.dumps(_run_doc("old", [("mnist-5k", 30, "itq", 0.4), ("mnist-5k", 30, "classifier-hash", 0.97)])))
    new.write_text(json.dumps(_run_doc("new", [("mnist-5k", 30, "classifier-hash", 0.99)])))
    out = tmp_path / "merged.json"
    assert bench.merge_runs([str(old), str(new)], out, None) == 0
    merged = json.loads(out.read_text())
    assert sorted((r["kind"], r["map"]) for r in merged["results"]) == [("classifier-hash", 0.99), ("itq", 0.4)]
    assert merged["command"] == "old ; new"
    assert "| 30 | classifier-hash | 0.9900 |" in capsys.readouterr().out


def test_suite_under_load_runs_pytest_beside_busy_processes_and_reports(capsys):
    """scripts/suite_under_load.py on one small test file (the committed JSON comes from the
    whole suite): the run's counts are parsed and the busy processes end with it."""
    script = _script("suite_under_load")
    before = script.OUT.read_text() if script.OUT.exists() else None
    assert script.main(["--runs", "1", "--hogs", "1", "--max-hours", "0.05", "tests/test_packaging.py"]) == 0
    out = capsys.readouterr().out
    assert "run 1/1:" in out and " passed" in out
    assert (script.OUT.read_text() if script.OUT.exists() else None) == before, "a partial run never overwrites the record"
